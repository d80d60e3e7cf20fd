"""The command line, run as users run it: ``python -m starmodel_asgi`` in a real subprocess, from
the directory of a project whose app it names as ``module:attribute``."""

from __future__ import annotations

import importlib
import json
import os
import pty
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON

APP = """
from starmodel_asgi import Entity, StarModel, event


class Counter(Entity):
    count: int = 0

    @event
    def increment(self, by: int = 1) -> None:
        self.count += by


class Note(Entity):
    model_config = {"scope": "record", "store": "sql"}
    text: str = ""


class Tally(Entity):
    model_config = {"scope": "global", "store": "sql"}
    count: int = 0


sm = StarModel([Counter, Note, Tally], secret_key="cli", database_url="sqlite+aiosqlite:///source.db")
"""


class Note(Entity):  # the project's Note and Tally, as another process sees them
    model_config = {"scope": "record", "store": "sql"}
    text: str = ""


class Tally(Entity):
    model_config = {"scope": "global", "store": "sql"}
    count: int = 0


def starmodel(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starmodel_asgi", *args], cwd=project, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "shop.py").write_text(APP)
    return tmp_path


def test_help_names_every_command(project: Path) -> None:
    done = starmodel(project, "--help")
    assert done.returncode == 0
    for command in ("routes", "openapi", "copy"):
        assert command in done.stdout
    copy_help = starmodel(project, "copy", "--help")
    assert "--to URL" in copy_help.stdout and "--dry-run" in copy_help.stdout and "--entity NAME" in copy_help.stdout


def test_routes_prints_the_route_table_with_health_and_openapi(project: Path) -> None:
    done = starmodel(project, "routes", "shop:sm")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == ["METHOD", "PATH", "ENTITY", "ANSWERS"]
    assert ["POST", "/sm/counter/increment", "counter", "event", "increment"] in lines
    assert ["POST", "/sm/note", "note", "create", "a", "record"] in lines
    assert ["DELETE", "/sm/note/{id}", "note", "delete", "the", "record"] in lines
    assert ["GET", "/sm/health", "the", "stores'", "and", "broadcast's", "health"] in lines
    assert ["GET", "/sm/openapi.json", "the", "OpenAPI", "document"] in lines


def test_openapi_prints_the_document(project: Path) -> None:
    done = starmodel(project, "openapi", "shop:sm")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["openapi"].startswith("3.")
    assert "by" in json.dumps(document["paths"]["/counter/increment"])


def test_a_wrong_app_is_named_with_the_fix(project: Path) -> None:
    for target, said in [
        ("shop", "give the app as module:attribute"),
        ("nowhere:sm", "no module 'nowhere'"),
        ("shop:app", "module 'shop' has no attribute 'app'"),
        ("shop:Counter", "shop:Counter is the class Counter, not a StarModel"),
    ]:
        done = starmodel(project, "routes", target)
        assert done.returncode == 2 and said in done.stderr, (target, done.stderr)


@pytest.mark.anyio
async def test_copy_moves_the_data_counts_it_and_a_second_run_or_a_dry_run_writes_nothing(project: Path) -> None:
    source = StarModel([Note, Tally], secret_key="cli", database_url=f"sqlite+aiosqlite:///{project / 'source.db'}")
    for text in ("one", "two"):
        await source.create(Note, id=f"n-{text}", text=text)
    async with source.edit(Tally) as tally:
        tally.count = 5
    await source.aclose()
    target = f"sqlite+aiosqlite:///{project / 'target.db'}"

    dry = starmodel(project, "copy", "shop:sm", "--to", target, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout
    assert ["note", "2", "2", "?"] in [line.split() for line in dry.stdout.splitlines()]
    assert not (project / "target.db").exists()

    first = starmodel(project, "copy", "shop:sm", "--to", target)
    assert first.returncode == 0, first.stderr
    rows = [line.split() for line in first.stdout.splitlines()]
    assert rows[0] == ["ENTITY", "FOUND", "COPIED", "ALREADY", "THERE"]
    assert ["note", "2", "2", "0"] in rows and ["tally", "1", "1", "0"] in rows
    assert ["counter", "0", "0", "0"] in rows  # in memory: nothing in another process
    assert "\r" not in first.stderr  # no progress line when stderr is not a terminal

    again = starmodel(project, "copy", "shop:sm", "--to", target, "--entity", "note")
    assert again.returncode == 0, again.stderr
    assert [line.split() for line in again.stdout.splitlines()][1:] == [["note", "2", "0", "2"]]

    moved = StarModel([Note, Tally], secret_key="cli", base_path="", database_url=target)
    async with httpx.AsyncClient(transport=StreamingTransport(moved), base_url="http://t") as c:
        assert [n["id"] for n in (await c.get("/note", headers=JSON)).json()] == ["n-one", "n-two"]
        assert (await c.get("/tally", headers=JSON)).json() == {"count": 5}
    await moved.aclose()

    refused = starmodel(project, "copy", "shop:sm", "--to", "mysql://h/db")
    assert refused.returncode == 2 and "cannot copy to 'mysql://h/db'" in refused.stderr
    unknown = starmodel(project, "copy", "shop:sm", "--to", target, "--entity", "basket")
    assert unknown.returncode == 2 and "no entity 'basket'" in unknown.stderr


@pytest.mark.anyio
async def test_copy_shows_its_progress_on_a_terminal(project: Path) -> None:
    source = StarModel([Note], secret_key="cli", database_url=f"sqlite+aiosqlite:///{project / 'source.db'}")
    await source.create(Note, id="n-1", text="one")
    await source.aclose()
    controller, terminal = pty.openpty()  # stderr is a terminal, as when run by hand
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "starmodel_asgi",
                "copy",
                "shop:sm",
                "--to",
                f"sqlite+aiosqlite:///{project / 't.db'}",
            ],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    assert b"copying note: 1 read" in shown
    assert ["note", "1", "1", "0"] in [line.split() for line in done.stdout.splitlines()]


def test_the_starmodel_script_runs_the_same_command_line() -> None:
    with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    module, _, function = scripts["starmodel"].partition(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0

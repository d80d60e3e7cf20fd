"""Each example in examples/ serves its page and answers clicks the way the browser sends them.

Every example runs in a child process: Django's settings and Litestar's logging setup are
process-wide, so importing them here would leak into other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.sse import merged_signals, parse_sse

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HOSTS = ["starlette", "fastapi", "fasthtml", "litestar", "django"]

#: imports the example's ``app`` and sends it requests through ``starmodel_asgi.testing.StreamingTransport``, in order,
#: with one cookie jar (one browser); prints each answer as JSON
DRIVER = """
import asyncio, importlib.util, json, sys
import httpx
from starmodel_asgi.testing import StreamingTransport

spec = importlib.util.spec_from_file_location("example", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["example"] = module
spec.loader.exec_module(module)

async def main():
    answers = []
    transport = StreamingTransport(module.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        for method, path, headers, body in json.loads(sys.argv[2]):
            r = await client.request(method, path, headers=headers, json=body)
            answers.append({"status": r.status_code, "type": r.headers.get("content-type", ""), "text": r.text})
    print(json.dumps(answers))

asyncio.run(main())
"""

DATASTAR = {"Datastar-Request": "true"}


def signals(count: int, amount: str = "1", name: str = "") -> dict[str, Any]:
    """The body Datastar posts: every signal on the page (the ones the example declares)."""
    return {"counter": {"count": count}, "amount": amount, "name": name, "msg": ""}


def run_example(
    host: str, requests: list[tuple[str, str, dict[str, str], Any]], cwd: Path = EXAMPLES.parent
) -> list[dict[str, Any]]:
    script = EXAMPLES / ("demo.py" if host == "demo" else f"{host}_app.py")
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(script), json.dumps(requests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    answers: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return answers


@pytest.mark.parametrize("host", HOSTS)
def test_example_page_counts_greets_and_reports_bad_input(host: str) -> None:
    page, initial, add, add_again, greet, bad, after = run_example(
        host,
        [
            ("GET", "/", {}, None),
            ("GET", "/sm/counter", DATASTAR, None),  # the page's data-init
            ("POST", "/sm/counter/increment", DATASTAR, signals(0, amount="2")),
            ("POST", "/sm/counter/increment", DATASTAR, signals(2, amount="3")),
            ("POST", "/sm/counter/greet", DATASTAR, signals(5, name="<Ada>")),
            ("POST", "/sm/counter/increment", DATASTAR, signals(5, amount="abc")),
            ("GET", "/sm/counter", {"Accept": "application/json"}, None),
        ],
    )
    assert page["status"] == 200 and page["type"].startswith("text/html")
    for needed in (
        '<script type="module" src=',
        'data-text="$counter.count"',
        "data-on:click=\"$msg = ''; @post('/sm/counter/increment')\"",
        "data-on:click=\"@post('/sm/counter/greet')\"",
        "data-on:datastar-fetch=",
        'id="greeting"',
    ):
        assert needed in page["text"], needed

    assert merged_signals(parse_sse(initial["text"])) == {"counter": {"count": 0}}
    assert add["status"] == 200 and parse_sse(add["text"])[0].signals == {"counter": {"count": 2}}
    assert parse_sse(add_again["text"])[0].signals == {"counter": {"count": 5}}  # same session

    (patch,) = parse_sse(greet["text"])
    assert patch.event == "datastar-patch-elements" and patch.get("selector") == "#greeting"
    assert "Hello, &lt;Ada&gt;!" in patch.elements and "The count is 5." in patch.elements

    assert bad["status"] == 422  # the page shows it through its datastar-fetch listener
    assert "amount" in parse_sse(bad["text"])[0].signals["counter"]["_errors"]
    assert json.loads(after["text"]) == {"count": 5}


def test_quick_start_demo_counts_and_keeps_the_shared_count_in_sqlite(tmp_path: Path) -> None:
    script = [
        ("GET", "/", {}, None),
        ("POST", "/sm/counter/increment?amount=5", DATASTAR, {"counter": {"count": 0}}),
        ("POST", "/sm/shared_counter/increment", DATASTAR, {"shared_counter": {"count": 0}}),
    ]
    page, mine, shared = run_example("demo", script, cwd=tmp_path)
    assert page["status"] == 200 and "@post('/sm/counter/increment?amount=1')" in page["text"]
    assert parse_sse(mine["text"])[0].signals == {"counter": {"count": 5}}
    assert parse_sse(shared["text"])[0].signals == {"shared_counter": {"count": 1}}
    assert (tmp_path / "starmodel.db").exists()
    # a restart (a new process) still has the shared count: it lives in the SQLite file
    (again,) = run_example("demo", [("GET", "/sm/shared_counter", {"Accept": "application/json"}, None)], cwd=tmp_path)
    assert json.loads(again["text"]) == {"count": 1}

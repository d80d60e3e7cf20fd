"""``GET /openapi.json``: a valid OpenAPI 3.1 description of every route and event, that outside
tools can drive: schemathesis fuzzes every operation against a real uvicorn and finds no 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import Field
from starlette.applications import Starlette
from starlette.routing import Mount

from starmodel_asgi import ClientWritable, Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.servers import run_server

pytestmark = pytest.mark.anyio


class Counter(Entity):
    """A session counter."""

    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        """Add ``amount``."""
        self.count += amount

    @event(method="GET")
    def peek(self, times: int = 1) -> str:
        return f'<b id="peek">{self.count * times}</b>'


class Profile(Entity):
    """Many kinds of fields and parameters, as hostile input meets them."""

    model_config = {"scope": "global"}
    name: Annotated[str, ClientWritable, Field(max_length=50)] = ""
    ratio: float = 0.5
    tags: list[str] = []
    extra: dict[str, Any] = {}
    active: bool = False
    score: int | None = None

    @event
    def update(
        self, name: str, ratio: float = 0.5, tags: list[str] | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        self.name, self.ratio = name[:50], ratio
        self.tags, self.extra = tags or [], extra or {}

    @event
    def toggle(self, active: bool) -> None:
        self.active = active


class Note(Entity):
    model_config = {"scope": "record"}
    text: Annotated[str, ClientWritable, Field(max_length=200)] = ""

    @event
    def edit(self, text: Annotated[str, Field(min_length=1, max_length=200)]) -> None:
        self.text = text

    def render(self) -> str:
        return f'<li id="{self.dom_id}">{self.text}</li>'


def build() -> StarModel:
    return StarModel([Counter, Profile, Note], base_path="/sm", secret_key="openapi")


async def test_the_document_is_valid_openapi_and_names_every_route_and_parameter() -> None:
    host = Starlette(routes=[Mount("/sm", build())])
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t") as client:
        response = await client.get("/sm/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = response.json()
    validate(doc)
    paths = doc["paths"]
    for path in ["/counter", "/counter/live", "/counter/increment", "/counter/peek", "/profile/update", "/note",
                 "/note/live", "/note/{id}", "/note/{id}/live", "/note/{id}/edit"]:  # fmt: skip
        assert path in paths, path
    increment = paths["/counter/increment"]["post"]
    assert increment["summary"] == "Add ``amount``."
    body = increment["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert doc["components"]["schemas"][body]["properties"]["amount"]["type"] == "integer"
    assert [p["name"] for p in paths["/counter/peek"]["get"]["parameters"]] == ["times"]
    assert {"200", "403", "422", "500"} <= set(increment["responses"])
    assert paths["/note"]["post"]["responses"]["201"]
    assert doc["servers"] == [{"url": "/sm"}]  # a client of the document calls the mounted app


async def test_each_mount_is_the_server_of_its_own_document() -> None:
    sm = build()
    host = Starlette(routes=[Mount("/sm", sm), Mount("/apps/other", sm)])
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t") as client:
        here, there = (
            (await client.get("/sm/openapi.json")).json(),
            (await client.get("/apps/other/openapi.json")).json(),
        )
    assert here["servers"] == [{"url": "/sm"}] and there["servers"] == [{"url": "/apps/other"}]
    assert here["paths"] == there["paths"]


def test_schemathesis_finds_no_server_error() -> None:
    # the one installed beside this Python first (a virtualenv need not be on PATH)
    beside = Path(sys.executable).parent / "schemathesis"
    schemathesis = str(beside) if beside.exists() else shutil.which("schemathesis") or shutil.which("st")
    assert schemathesis, "schemathesis is part of the test extra"
    with run_server(Starlette(routes=[Mount("/sm", build())])) as url:
        command = [
            schemathesis, "run", f"{url}/sm/openapi.json", "--url", f"{url}/sm",
            "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "1",
            "--exclude-path-regex", "/live$", "--request-timeout", "10", "--no-color",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

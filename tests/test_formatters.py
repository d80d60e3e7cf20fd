"""Formatters are pluggable: a user adds one (plain HTML for htmx) without touching the core."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from starmodel_asgi import EventError, EventRequest, StarModel, Update
from starmodel_asgi.formatters import default_formatters
from starmodel_asgi.testing import StreamingTransport
from tests.support.entities import ENTITIES
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import parse_sse

pytestmark = pytest.mark.anyio


class HtmxFormatter:
    """What an htmx page wants: the HTML fragments, nothing else."""

    media_type = "text/html"
    streams = False
    headers: dict[str, str] = {}

    def matches(self, request: EventRequest) -> bool:
        return request.headers.get("hx-request") == "true"

    def format(self, updates: Sequence[Update]) -> str:
        return "".join(el.html for u in updates for el in u.elements)

    def format_error(self, error: EventError) -> str:
        return f'<p class="error">{error.message}</p>'


@pytest.fixture
async def client():
    sm = StarModel(entities=ENTITIES, secret_key="k", formatters=[HtmxFormatter(), *default_formatters()])
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        yield c


async def test_custom_formatter_answers_its_requests(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/greet?name=htmx", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == "<b>hello htmx</b>"


async def test_custom_formatter_formats_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/add?amount=x", headers={"HX-Request": "true"})
    assert r.status_code == 422
    assert r.text.startswith('<p class="error">') and "amount" in r.text


async def test_builtin_formatters_still_answer_theirs(client: httpx.AsyncClient) -> None:
    r = await client.post("/counter/greet?name=ds", headers=DATASTAR)
    assert parse_sse(r.text)[0].elements == "<b>hello ds</b>"
    assert (await client.get("/counter", headers=JSON)).json()["count"] == 0


async def test_without_a_matching_formatter_the_answer_is_406() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k", formatters=[HtmxFormatter()])
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        r = await c.post("/counter/increment", headers=JSON)
        assert r.status_code == 406

"""Small 500s and open doors an outside attack found: huge offsets, malformed Origin and Referer
headers, redirects that leave the site or carry control characters, unreadable state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import computed_field

from starmodel_asgi import Entity, Redirect, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests import test_unit
from tests.test_unit import Backend

pytestmark = pytest.mark.anyio

b = test_unit.b  # the same store-per-kind fixture


@pytest.mark.parametrize("offset", [str(2**63), str(2**64 + 5), "9" * 40, "-1"])
async def test_an_offset_no_store_can_count_to_is_a_422(b: Backend, offset: str) -> None:
    await b.card(title="one")
    async with b.client() as c:
        response = await c.get(f"/card?offset={offset}", headers={"Accept": "application/json"})
    assert response.status_code == 422
    assert "offset" in response.text


class Note(Entity):
    text: str = ""

    @event
    def write(self, text: str) -> None:
        self.text = text

    @event
    def go(self, to: str) -> Redirect:
        self.text = "went"
        return Redirect(to)


@pytest.fixture
async def sm() -> AsyncIterator[StarModel]:
    app = StarModel([Note], secret_key="doors")
    yield app
    await app.aclose()


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://[::1"},
        {"origin": "http://[zz]:80"},
        {"referer": "http://[::1/form"},
        {"referer": "https://[bad"},
    ],
)
async def test_a_malformed_origin_or_referer_is_refused_not_a_500(sm: StarModel, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        response = await c.post("/note/write", data={"text": "x"}, headers=headers)
        assert response.status_code == 403
        assert (await c.get("/note", headers={"Accept": "application/json"})).json() == {"text": ""}


@pytest.mark.parametrize("to", ["//evil.example", "/\\evil.example", "\\\\evil.example", "/a\x7fb", "https:///x"])
async def test_a_redirect_off_the_site_or_with_control_characters_saves_nothing(sm: StarModel, to: str) -> None:
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        response = await c.post("/note/go", json={"to": to}, headers={"Accept": "application/json"})
        assert response.status_code == 422  # built from the client's input: refused as bad input
        assert (await c.get("/note", headers={"Accept": "application/json"})).json() == {"text": ""}
        ok = await c.post("/note/go", json={"to": "/notes/1"}, headers={"Accept": "application/json"})
        assert (ok.status_code, ok.headers["location"]) == (303, "/notes/1")


class Square(Entity):
    model_config = {"scope": "global"}
    side: int = 2

    @computed_field  # type: ignore[prop-decorator]
    @property
    def area(self) -> int:
        return self.side**2

    @event
    def grow(self, digits: int) -> None:
        self.side = 10**digits


async def test_a_computed_field_no_page_could_read_is_refused_before_it_is_saved() -> None:
    """A side of 2,201 digits is fine; its area of 4,401 digits would save, then fail every answer
    and live stream of the instance: it is a 422 naming the field, and the state stays as it was."""
    sm = StarModel([Square], secret_key="doors")
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        response = await c.post("/square/grow?digits=2200", headers={"Accept": "application/json"})
        assert response.status_code == 422
        assert "area" in response.json()["errors"]
        assert (await c.get("/square", headers={"Accept": "application/json"})).json() == {"side": 2, "area": 4}
        assert (await c.post("/square/grow?digits=3", headers={"Accept": "application/json"})).status_code == 200
    await sm.aclose()

"""``store="client"``: the browser holds the state; each request rebuilds it from the signals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest

from starmodel_asgi import Entity, ServerOnly, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


class Wizard(Entity):
    model_config = {"store": "client"}
    step: int = 1
    name: str = ""
    token: Annotated[str, ServerOnly] = "server"

    @event
    def next(self, by: int = 1) -> str:
        self.step += by
        return f'<p id="where">step {self.step} for {self.name or "nobody"}, token {self.token}</p>'


@pytest.fixture
def sm() -> StarModel:
    return StarModel(entities=[Wizard], secret_key="k")


@pytest.fixture
async def c(sm: StarModel) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver") as client:
        yield client


async def test_each_request_starts_from_the_signals_it_sends(c: httpx.AsyncClient, sm: StarModel) -> None:
    response = await c.post("/wizard/next", json={"wizard": {"step": 4, "name": "ada"}}, headers=DATASTAR)
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert merged_signals(events) == {"wizard": {"step": 5}}
    assert "step 5 for ada" in "".join(e.elements for e in events)
    # nothing was kept: the same call without signals starts from the defaults
    response = await c.post("/wizard/next", json={"by": 2}, headers=JSON)
    assert response.json() == {"step": 3, "name": ""}
    assert sm._stores == {}  # no store was ever opened


async def test_server_only_fields_are_not_taken_from_the_client(c: httpx.AsyncClient) -> None:
    signals = {"wizard": {"step": 1, "token": "forged"}}
    response = await c.post("/wizard/next", json=signals, headers=DATASTAR)
    assert "token server" in response.text and "forged" not in response.text


async def test_a_bad_value_is_a_422_naming_the_field(c: httpx.AsyncClient) -> None:
    response = await c.post("/wizard/next", json={"wizard": {"step": "three"}}, headers=JSON)
    assert response.status_code == 422
    assert "step" in response.text
    response = await c.post("/wizard/next", json={"wizard": {"step": "three"}}, headers=DATASTAR)
    assert response.status_code == 422 and "step" in response.text


async def test_reading_reflects_the_signals_and_there_is_no_stream(c: httpx.AsyncClient) -> None:
    signals = json.dumps({"wizard": {"step": 7, "name": "bo"}})
    response = await c.get("/wizard", params={"datastar": signals}, headers=JSON)
    assert response.json() == {"step": 7, "name": "bo"}
    assert (await c.get("/wizard", headers=JSON)).json() == {"step": 1, "name": ""}
    assert (await c.get("/wizard/live", headers=DATASTAR)).status_code == 404


def test_record_entities_cannot_live_in_the_client() -> None:
    class Note(Entity):
        model_config = {"scope": "record", "store": "client"}

    with pytest.raises(ValueError, match="server store"):
        StarModel(entities=[Note], secret_key="k")

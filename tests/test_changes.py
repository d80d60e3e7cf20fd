"""Domain events say who changed what, and when: ``Change.id``, ``at`` (aware UTC), ``user_id`` and
``session_id`` of the caller (``None`` from scripts), and ``@sm.on()`` hears every entity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from starlette.requests import Request

from starmodel_asgi import Change, Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON

pytestmark = pytest.mark.anyio


class Basket(Entity):
    items: int = 0

    @event
    def add(self) -> None:
        self.items += 1


class Shelf(Entity):
    model_config = {"scope": "record"}
    name: str = ""

    @event(background=True)
    async def relabel(self, name: str) -> None:
        async with self:
            self.name = name


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


async def test_an_audit_log_hears_who_changed_what_and_when() -> None:
    sm = StarModel([Basket, Shelf], base_path="", secret_key="audit", get_user=user_from_header)
    log: list[Change] = []
    sm.on()(log.append)
    baskets: list[Change] = []
    sm.on(Basket)(baskets.append)
    started = datetime.now(UTC)
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        assert (await client.post("/basket/add", json={}, headers={**JSON, "x-user": "ada"})).status_code == 200
        session_id = sm.sessions.signer.unsign(client.cookies["sm_session"])
        created = await client.post("/shelf", json={"name": "a"}, headers={**JSON, "x-user": "bob"})
        shelf = created.json()["id"]
        relabel = await client.post(f"/shelf/{shelf}/relabel", json={"name": "b"}, headers={**JSON, "x-user": "cy"})
        assert relabel.status_code == 200
        assert (await client.delete(f"/shelf/{shelf}", headers={"x-user": "dee"})).status_code == 204
    async with sm.edit(Basket, session_id) as basket:  # a script: nobody
        basket.items = 10
    await anyio.sleep(0)
    seen: list[tuple[Any, ...]] = [(c.entity.__name__, c.event, c.user_id) for c in log]
    assert seen == [
        ("Basket", "add", "ada"),
        ("Shelf", None, "bob"),
        ("Shelf", "relabel", "cy"),
        ("Shelf", None, "dee"),
        ("Basket", None, None),
    ]
    assert log[0].session_id == session_id and log[-1].session_id is None
    assert all(started <= c.at <= datetime.now(UTC) + timedelta(seconds=1) and c.at.tzinfo is UTC for c in log)
    assert len({c.id for c in log}) == 5
    assert [c.after for c in baskets] == [{"items": 1}, {"items": 10}]  # the entity's own still hear only it


def test_an_event_without_its_entity_is_refused() -> None:
    sm = StarModel([Basket], secret_key="audit")
    with pytest.raises(ValueError, match=r"sm.on\(event='add'\) needs the entity"):
        sm.on(event="add")

"""Services for events (``Depends``): providers of every kind, nested, once per call, cleaned up after
the unit of work, overridden in tests (``testing.Page`` too), never bound from the request nor in
``/openapi.json``; a provider that raises is a 500 naming it; subscribers get services too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import pytest

from starmodel_asgi import Change, Depends, Entity, EventError, EventRequest, StarModel, event
from starmodel_asgi.testing import Page, StreamingTransport
from tests.support.headers import JSON

pytestmark = pytest.mark.anyio

LOG: list[str] = []


class Mailer:
    def __init__(self, name: str) -> None:
        self.name, self.sent = name, []  # type: list[str]


def settings() -> dict[str, str]:
    LOG.append("settings")
    return {"from": "shop@example.com"}


async def get_mailer(request: EventRequest, config: Annotated[dict[str, str], Depends(settings)]) -> Mailer:
    LOG.append(f"mailer for {request.user_id}")
    return Mailer(config["from"])


def db_session() -> Iterator[str]:
    LOG.append("open")
    try:
        yield "session"
    except Exception as exc:
        LOG.append(f"rolled back: {exc}")
        raise
    finally:
        LOG.append("closed")


async def audit_sink() -> AsyncIterator[list[str]]:
    sink: list[str] = []
    yield sink
    LOG.append(f"flushed {sink}")


def broken() -> str:
    raise RuntimeError("no connection")


class Order(Entity):
    model_config = {"scope": "global"}
    paid: int = 0
    note: str = ""

    @event
    async def pay(
        self,
        amount: int,
        mailer: Annotated[Mailer, Depends(get_mailer)],
        again: Annotated[Mailer, Depends(get_mailer)],
        config: Annotated[dict[str, str], Depends(settings)],
        db: str = Depends(db_session),  # type: ignore[assignment]
    ) -> None:
        assert mailer is again  # one provider call per event call
        self.paid += amount
        self.note = f"{mailer.name} {config['from']} {db}"

    @event
    def fail(self, db: Annotated[str, Depends(db_session)]) -> None:
        raise EventError(409, "refused")

    @event
    def needs_broken(self, thing: Annotated[str, Depends(broken)]) -> None:
        self.note = thing

    @event(background=True)
    async def later(self, sink: Annotated[list[str], Depends(audit_sink)]) -> None:
        sink.append("done")
        async with self:
            self.note = "later"


def build() -> StarModel:
    LOG.clear()
    return StarModel([Order], base_path="", secret_key="deps", get_user=lambda r: r.headers.get("x-user"))


async def test_providers_fill_parameters_once_per_call_and_clean_up_after_the_unit() -> None:
    sm = build()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        answer = await client.post("/order/pay?amount=3", json={}, headers={**JSON, "x-user": "ada"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["note"] == "shop@example.com shop@example.com session"
    assert LOG == ["settings", "mailer for ada", "open", "closed"]

    LOG.clear()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        assert (await client.post("/order/fail", json={}, headers=JSON)).status_code == 409
    assert LOG == ["open", "rolled back: 409 refused", "closed"]  # told of the failure


async def test_a_service_parameter_is_never_bound_from_the_request_nor_documented() -> None:
    sm = build()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        answer = await client.post("/order/pay?amount=1", json={"mailer": "evil", "db": "x"}, headers=JSON)
        assert answer.json()["note"] == "shop@example.com shop@example.com session"
        smuggled = await client.post("/order/pay?amount=1&db=x", json={}, headers=JSON)
        assert smuggled.status_code == 422  # not a parameter the request gives
        schema = (await client.get("/openapi.json")).text
    assert "mailer" not in schema and '"db"' not in schema and "amount" in schema


async def test_a_provider_that_raises_is_a_500_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    sm = build()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        answer = await client.post("/order/needs_broken", json={}, headers=JSON)
    assert answer.status_code == 500
    assert answer.json()["error"] == "Internal error in the provider broken"
    assert "no connection" not in answer.text and "the provider broken failed" in caplog.text


async def test_overrides_replace_a_provider_also_under_testing_page() -> None:
    sm = build()
    sm.dependency_overrides[settings] = lambda: {"from": "test@example.com"}
    async with Page(sm) as page:
        answer = await page.run(Order.pay(amount=2))
        assert answer.status == 200, answer.text
        assert page.signals["order"]["note"] == "test@example.com test@example.com session"


async def test_background_events_and_subscribers_get_services() -> None:
    sm = build()
    heard: list[Any] = []

    @sm.on(Order)
    def notify(change: Change, mailer: Annotated[Mailer, Depends(get_mailer)]) -> None:
        heard.append((change.event, mailer.name))

    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        assert (await client.post("/order/later", json={}, headers=JSON)).status_code == 200
        assert (await client.post("/order/pay?amount=1", json={}, headers=JSON)).status_code == 200
    assert "flushed ['done']" in LOG
    assert heard == [("later", "shop@example.com"), ("pay", "shop@example.com")]
    assert "mailer for None" in LOG  # a subscriber's providers see who made the change (nobody here)

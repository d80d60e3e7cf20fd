"""The memory store: per-instance serialisation and lazily swept TTLs."""

from __future__ import annotations

import httpx
import pytest

from starmodel_asgi import StarModel
from starmodel_asgi.spec import spec_of
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.entities import ENTITIES, Counter, Shared
from tests.support.headers import JSON

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_idle_session_instances_expire_and_are_swept() -> None:
    clock = Clock()
    store = MemoryStore(default_ttl=60, sweep_interval=10, clock=clock)
    sm = StarModel(entities=ENTITIES, secret_key="k", stores={"memory": store})
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        await c.post("/counter/increment?amount=4", headers=JSON)
        await c.post("/shared/bump", headers=JSON)
        clock.now += 50
        assert (await c.get("/counter", headers=JSON)).json()["count"] == 4  # reading keeps it alive
        clock.now += 50
        assert (await c.get("/counter", headers=JSON)).json()["count"] == 4
        clock.now += 61
        assert (await c.get("/counter", headers=JSON)).json()["count"] == 0  # expired
        assert (await c.get("/shared", headers=JSON)).json()["total"] == 1  # global never expires


async def test_expired_instances_are_dropped_by_a_later_sweep_without_being_read() -> None:
    clock = Clock()
    store = MemoryStore(default_ttl=5, sweep_interval=1, clock=clock)
    async with store.hold(spec_of(Counter), "a") as slot:
        await slot.save(Counter(count=1).stored_state())
    async with store.hold(spec_of(Shared), "global") as slot:
        await slot.save(Shared(total=1).stored_state())
    assert len(store) == 2
    clock.now += 6
    await store.get(spec_of(Shared), "global")
    assert len(store) == 1


async def test_entity_ttl_overrides_the_default() -> None:
    class Short(Counter):
        model_config = {"ttl": 1, "name": "short"}

    clock = Clock()
    store = MemoryStore(default_ttl=3600, clock=clock)
    async with store.hold(spec_of(Short), "a") as slot:
        await slot.save(Short(count=1).stored_state())
    clock.now += 2
    assert await store.get(spec_of(Short), "a") is None


async def test_locks_are_released_after_use() -> None:
    store = MemoryStore()
    async with store.hold(spec_of(Counter), "a"):
        assert len(store._locks) == 1
    assert len(store._locks) == 0


async def test_listing_skips_expired_records_before_any_sweep() -> None:
    class Note(Counter):
        model_config = {"scope": "record", "ttl": 5, "name": "note"}

    clock = Clock()
    store = MemoryStore(sweep_interval=3600, clock=clock)
    for key in ("a", "b"):
        async with store.hold(spec_of(Note), key) as slot:
            await slot.save(Note(id=key).stored_state())
        clock.now += 2
    assert [s["id"] for s in await store.list(spec_of(Note), 10, 0)] == ["a", "b"]
    clock.now += 2  # "a" was written 6 s ago, "b" 4 s ago
    assert [s["id"] for s in await store.list(spec_of(Note), 10, 0)] == ["b"]

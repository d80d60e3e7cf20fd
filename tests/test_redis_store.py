"""RedisStore on a real Redis: JSON per instance, native TTLs, locks, prefixes. Every test uses a
key prefix of its own and deletes only its own keys (the server is shared: never flushed)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import LockNotOwnedError

from starmodel_asgi import Entity, ServerOnly, StarModel, event
from starmodel_asgi.stores.redis import RedisStore
from tests.conftest import JSON, require

pytestmark = pytest.mark.anyio


class Tally(Entity):
    model_config = {"scope": "global", "store": "redis"}
    count: int = 0
    secret: Annotated[str, ServerOnly] = "s"

    @event
    def increment(self) -> None:
        self.count += 1

    @event
    def explode(self) -> None:
        self.count = 99
        raise RuntimeError("boom")


class Visits(Entity):
    model_config = {"store": "redis", "ttl": 1}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1


class Backend:
    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"smtest:{uuid.uuid4().hex}:"
        self.raw = Redis.from_url(url, decode_responses=True)
        self.stores: list[RedisStore] = []

    def store(self, **options: Any) -> RedisStore:
        store = RedisStore(self.url, prefix=self.prefix, **options)
        self.stores.append(store)
        return store

    def app(self, store: RedisStore | None = None) -> StarModel:
        return StarModel(entities=[Tally, Visits], secret_key="test-secret", stores={"redis": store or self.store()})

    async def keys(self) -> list[str]:
        return sorted([k async for k in self.raw.scan_iter(match=f"{self.prefix}*")])

    async def cleanup(self) -> None:
        keys = await self.keys()
        if keys:
            await self.raw.delete(*keys)
        for store in self.stores:
            await store.aclose()
        await self.raw.aclose()


@pytest.fixture
async def rb() -> AsyncIterator[Backend]:
    backend = Backend(require("STARMODEL_TEST_REDIS_URL", "Redis"))
    try:
        yield backend
    finally:
        await backend.cleanup()


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sm), base_url="http://testserver")


async def test_each_instance_is_one_json_value(rb: Backend) -> None:
    sm = rb.app()
    async with client(sm) as c:
        assert (await c.post("/tally/increment", headers=JSON)).json() == {"count": 1}
    assert await rb.keys() == [f"{rb.prefix}state:tally:global"]  # the lock is gone once released
    raw = await rb.raw.get(f"{rb.prefix}state:tally:global")
    assert raw is not None and json.loads(raw) == {"id": "global", "count": 1, "secret": "s"}
    assert await rb.raw.pttl(f"{rb.prefix}state:tally:global") == -1  # global: no TTL
    await sm.aclose()


async def test_an_exception_in_an_event_leaves_the_value_unchanged(rb: Backend) -> None:
    sm = rb.app()
    async with client(sm) as c:
        await c.post("/tally/increment", headers=JSON)
        before = await rb.raw.get(f"{rb.prefix}state:tally:global")
        assert (await c.post("/tally/explode", headers=JSON)).status_code == 500
        assert (await c.get("/tally", headers=JSON)).json() == {"count": 1}
    assert await rb.raw.get(f"{rb.prefix}state:tally:global") == before
    await sm.aclose()


async def test_idle_sessions_expire_natively_and_access_refreshes(rb: Backend) -> None:
    sm = rb.app()
    async with client(sm) as c:
        await c.post("/visits/increment", headers=JSON)
        (key,) = [k for k in await rb.keys() if ":state:visits:" in k]
        assert 0 < await rb.raw.pttl(key) <= 1000
        await anyio.sleep(0.6)
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 1}
        assert await rb.raw.pttl(key) > 700  # the read pushed the expiry back
        await anyio.sleep(0.6)
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 1}  # 1.2 s after the write
        await anyio.sleep(1.2)
        assert await rb.raw.exists(key) == 0
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 0}
    await sm.aclose()


async def test_a_session_survives_an_app_restart(rb: Backend) -> None:
    class Cart(Entity):
        model_config = {"store": "redis"}
        items: list[str] = []

        @event
        def add(self, item: str) -> None:
            self.items = [*self.items, item]

    first = StarModel(entities=[Cart], secret_key="same-secret", stores={"redis": rb.store()})
    async with client(first) as c:
        response = await c.post("/cart/add", json={"item": "tea"}, headers=JSON)
        cookie = response.cookies["sm_session"]
    await first.aclose()
    second = StarModel(entities=[Cart], secret_key="same-secret", stores={"redis": rb.store()})
    async with client(second) as c:
        c.cookies.set("sm_session", cookie)
        assert (await c.post("/cart/add", json={"item": "jam"}, headers=JSON)).json() == {"items": ["tea", "jam"]}
    await second.aclose()


async def test_concurrent_events_in_one_process_are_serialised(rb: Backend) -> None:
    sm = rb.app()
    async with client(sm) as c:
        limit = anyio.Semaphore(50)

        async def one() -> None:
            async with limit:
                assert (await c.post("/tally/increment", headers=JSON)).status_code == 200

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
    raw = await rb.raw.get(f"{rb.prefix}state:tally:global")
    assert raw is not None and json.loads(raw)["count"] == 200
    await sm.aclose()


async def test_a_holder_whose_lock_expired_cannot_write(rb: Backend) -> None:
    """Past ``lock_timeout`` another process may hold the instance: the late save is refused
    rather than overwriting what that process wrote."""
    slow, other = rb.store(lock_timeout=0.2), rb.store()
    async with slow.hold(Tally, "global") as slot:
        await anyio.sleep(0.4)
        async with other.hold(Tally, "global") as theirs:
            await theirs.save({"id": "global", "count": 7, "secret": "s"})
        with pytest.raises(LockNotOwnedError):
            await slot.save({"id": "global", "count": 1, "secret": "s"})
    assert await other.get(Tally, "global") == {"id": "global", "count": 7, "secret": "s"}


async def test_prefixes_keep_apps_apart(rb: Backend) -> None:
    mine = rb.store()
    theirs = RedisStore(rb.url, prefix=rb.prefix + "other:")
    rb.stores.append(theirs)
    async with mine.hold(Tally, "global") as slot:
        await slot.save({"id": "global", "count": 3, "secret": "s"})
    assert await theirs.get(Tally, "global") is None
    assert await mine.get(Tally, "global") == {"id": "global", "count": 3, "secret": "s"}

"""RedisStore on a real Redis: JSON per instance, native TTLs, locks, prefixes. Every test uses a
key prefix of its own and deletes only its own keys (the server is shared: never flushed)."""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import LockNotOwnedError

from starmodel_asgi import Entity, ServerOnly, StarModel, event
from starmodel_asgi.spec import spec_of
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON
from tests.support.services import require

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


class Slow(Entity):
    model_config = {"scope": "global", "store": "redis"}
    count: int = 0

    @event
    async def crawl(self) -> AsyncIterator[None]:
        """Runs about 2.5 s: longer than twice a 1 s lock lease."""
        for _ in range(5):
            await anyio.sleep(0.5)
            self.count += 1
            yield None


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
        return StarModel(
            entities=[Tally, Slow, Visits], secret_key="test-secret", stores={"redis": store or self.store()}
        )

    async def keys(self) -> list[str]:
        return sorted([k async for k in self.raw.scan_iter(match=f"{self.prefix}*")])

    async def lock_keys(self) -> list[str]:
        return sorted([k async for k in self.raw.scan_iter(match=f"{self.prefix}lock:*")])

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
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver")


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


async def test_a_holder_whose_lock_expired_cannot_write(rb: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """If the lease runs out anyway (say Redis was unreachable for a whole ``lock_timeout``),
    another process may hold the instance: the late save is refused rather than overwriting
    what that process wrote, and the renewal that found the lock gone says so."""
    slow, other = rb.store(lock_timeout=0.3), rb.store()
    # writes are applied when the hold commits: that is where the lost lock is found
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"), pytest.raises(LockNotOwnedError):
        async with slow.hold(spec_of(Tally), "global") as slot:
            await rb.raw.delete(f"{rb.prefix}lock:tally:global")  # as if the lease had run out
            async with other.hold(spec_of(Tally), "global") as theirs:
                await theirs.save({"id": "global", "count": 7, "secret": "s"})
                await anyio.sleep(0.25)  # the holder's renewal finds the lock someone else's
            await slot.save({"id": "global", "count": 1, "secret": "s"})
    assert await other.get(spec_of(Tally), "global") == {"id": "global", "count": 7, "secret": "s"}
    assert any("lost the lock on" in rec.getMessage() for rec in caplog.records)


async def test_the_lease_is_renewed_while_an_event_runs(rb: Backend) -> None:
    """An event may run longer than ``lock_timeout``: the lease is renewed while it is held."""
    store = rb.store(lock_timeout=1)
    sm = rb.app(store)
    async with client(sm) as c:
        response = await c.post("/slow/crawl", headers=JSON)
        assert response.status_code == 200, response.text
        assert response.json() == {"count": 5}
    assert await store.get(spec_of(Slow), "global") == {"id": "global", "count": 5}
    assert await rb.lock_keys() == []  # released, and no renewal left running
    await anyio.sleep(0.5)
    assert await rb.lock_keys() == []
    await sm.aclose()


async def test_a_renewal_racing_a_release_keeps_renewing_the_next_holder(
    rb: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal round works from a snapshot of the locks held. An instance released and held again
    (a new token) while the round runs is the new holder's: the round's stale token must neither
    stop the new hold's renewals nor be reported as a lost lock."""
    store = rb.store(lock_timeout=0.6)
    first, second = f"{rb.prefix}lock:tally:first", f"{rb.prefix}lock:tally:second"
    renew = store._renew
    reached, swapped = anyio.Event(), anyio.Event()

    async def renew_once_slowly(keys: list[str], args: list[Any]) -> Any:
        if keys[0] == first and not swapped.is_set():  # the round is renewing "first"...
            reached.set()
            await swapped.wait()  # ... while "second" is released and held again
        return await renew(keys=keys, args=args)

    store._renew = renew_once_slowly  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
        async with store.hold(spec_of(Tally), "first"):
            async with store.hold(spec_of(Tally), "second"):
                with anyio.fail_after(5):
                    await reached.wait()
            async with store.hold(spec_of(Tally), "second") as slot:
                swapped.set()
                await anyio.sleep(1.2)  # two leases: alive only if its renewals went on
                assert await rb.raw.get(second) is not None
                await slot.save({"id": "second", "count": 1, "secret": "s"})
    assert await store.get(spec_of(Tally), "second") == {"id": "second", "count": 1, "secret": "s"}
    assert not any("lost the lock" in rec.getMessage() for rec in caplog.records)
    assert await rb.lock_keys() == []


async def test_a_renewal_that_finds_the_lock_dropped_by_a_save_reports_nothing(
    rb: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The save script drops the lock: a renewal round that runs after it ran, but before the
    saving task has heard its reply, finds the lock gone. Nothing was lost: no error is logged."""
    store = rb.store(lock_timeout=0.3)  # a renewal round every 0.1 s
    run = store._lane.run

    async def save_heard_late(script: Any, keys: list[str], args: list[Any]) -> Any:
        reply = await run(script, keys, args)
        if script is store._save:
            await anyio.sleep(0.25)  # the reply is slow to come: renewal rounds run meanwhile
        return reply

    store._lane.run = save_heard_late  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
        async with store.hold(spec_of(Tally), "global") as slot:
            await slot.save({"id": "global", "count": 1, "secret": "s"})
    assert await store.get(spec_of(Tally), "global") == {"id": "global", "count": 1, "secret": "s"}
    assert not any("lost the lock" in rec.getMessage() for rec in caplog.records)
    assert await rb.lock_keys() == []


async def test_cancelled_acquires_leave_no_lock_behind(rb: Backend) -> None:
    """A task cancelled while taking the lock (say, after ``SET NX`` ran but before its reply
    came) deletes the lock if it is its own, instead of leaving it for ``lock_timeout``."""
    rng = random.Random(1234)
    stores = [rb.store(lock_timeout=30, lock_poll=0.001) for _ in range(8)]
    start = anyio.current_time()
    for store in stores:  # connect first, and time a hold, to aim the cancellations at its requests
        async with store.hold(spec_of(Tally), "warm-up"):
            pass
    span = 2 * (anyio.current_time() - start) / len(stores)
    done = cancelled = 0

    async def attempt(store: RedisStore, key: str, longest: float) -> None:
        nonlocal done, cancelled
        with anyio.move_on_after(rng.uniform(0, longest)) as scope:
            async with store.hold(spec_of(Tally), key):
                done += 1
        cancelled += scope.cancelled_caught

    # uncontended: every task on an instance of its own, cancelled at random points of the acquire
    for wave in range(5):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(attempt, stores[i % len(stores)], f"solo{wave}-{i}", span * (wave + 1))
    assert await rb.lock_keys() == []

    # contended: a holder in another store takes and releases the instance over and over
    holder = rb.store(lock_timeout=30, lock_poll=0.001)
    stop = anyio.Event()

    async def hold_repeatedly() -> None:
        while not stop.is_set():
            with anyio.fail_after(5):  # an orphaned lock would block it for lock_timeout
                async with holder.hold(spec_of(Tally), "shared"):
                    await anyio.sleep(rng.uniform(0, 0.002))
            await anyio.sleep(rng.uniform(0, 0.002))

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_repeatedly)
        for round_ in range(4):
            async with anyio.create_task_group() as waiters:
                for i in range(50):
                    waiters.start_soon(attempt, stores[(i + round_) % len(stores)], "shared", 10 * span)
        stop.set()
    assert await rb.lock_keys() == []
    assert done and cancelled  # both outcomes happened


async def test_prefixes_keep_apps_apart(rb: Backend) -> None:
    mine = rb.store()
    theirs = RedisStore(rb.url, prefix=rb.prefix + "other:")
    rb.stores.append(theirs)
    async with mine.hold(spec_of(Tally), "global") as slot:
        await slot.save({"id": "global", "count": 3, "secret": "s"})
    assert await theirs.get(spec_of(Tally), "global") is None
    assert await mine.get(spec_of(Tally), "global") == {"id": "global", "count": 3, "secret": "s"}


async def test_a_prefix_in_the_url_namespaces_the_keys_as_a_broadcast_url_does(rb: Backend) -> None:
    separator = "&" if "?" in rb.url else "?"
    named = RedisStore(f"{rb.url}{separator}prefix={rb.prefix}url:")
    rb.stores.append(named)
    async with named.hold(spec_of(Tally), "global") as slot:
        await slot.save({"id": "global", "count": 4, "secret": "s"})
    assert await rb.keys() == [f"{rb.prefix}url:state:tally:global"]
    sm = StarModel([Tally], secret_key="k", redis_url=f"{rb.url}{separator}prefix={rb.prefix}url:")
    assert (await sm.get(Tally)).count == 4
    await sm.aclose()


class Visitor(Entity):
    model_config = {"store": "redis"}
    count: int = 0

    @event
    def visit(self) -> None:
        self.count += 1


async def test_a_thousand_concurrent_requests_wait_for_a_connection_instead_of_failing(rb: Backend) -> None:
    """1,000 requests at once, each a new visitor (1,000 instances, so nothing queues on an
    instance's lock): more than the pool's 100 connections are wanted at once, and each request
    waits for a free one (a bounded wait) instead of answering 500."""
    sm = StarModel(entities=[Visitor], secret_key="test-secret", stores={"redis": rb.store()})
    statuses: list[int] = []

    async def one() -> None:
        async with client(sm) as own:  # no cookie: a new visitor each time
            statuses.append((await own.post("/visitor/visit", headers=JSON)).status_code)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(one)
    assert {s: statuses.count(s) for s in set(statuses)} == {200: 1000}
    assert len([k for k in await rb.keys() if ":state:visitor:" in k]) == 1000
    await sm.aclose()


def counting_client(url: str) -> tuple[Redis, list[str]]:
    """A real client, and the commands its connections send (each one a round trip here),
    whichever path sends them (the store runs its per-event scripts on connections it keeps)."""
    sent: list[str] = []

    class Counting(Connection):
        async def send_command(self, *args: Any, **kwargs: Any) -> None:
            sent.append(str(args[0]))
            await super().send_command(*args, **kwargs)

    return Redis.from_url(url, decode_responses=True, connection_class=Counting), sent


async def test_an_event_costs_two_round_trips_to_the_store(rb: Backend) -> None:
    """Lock and read in one script; save and unlock in another (it was three: the unlock alone)."""
    counting, sent = counting_client(rb.url)
    store = RedisStore(rb.url, prefix=rb.prefix, client=counting)
    rb.stores.append(store)
    sm = rb.app(store)
    async with client(sm) as c:
        # the first also loads the scripts, if the server does not know them yet
        assert (await c.post("/tally/increment", headers=JSON)).json() == {"count": 1}
        sent.clear()
        assert (await c.post("/tally/increment", headers=JSON)).json() == {"count": 2}
        assert sent == ["EVALSHA", "EVALSHA"]
        assert (await c.get("/tally", headers=JSON)).json() == {"count": 2}
    assert await rb.lock_keys() == []  # nothing left locked
    await sm.aclose()


async def test_with_the_broadcast_on_its_server_a_save_publishes_its_change_in_the_same_round_trip(
    rb: Backend,
) -> None:
    """Lock+read, then save+unlock+publish: two round trips in all, and one message per change
    (the app's outbox does not publish it again)."""
    counting, sent = counting_client(rb.url)
    store = RedisStore(rb.url, prefix=rb.prefix, client=counting)
    rb.stores.append(store)
    channels = f"{rb.prefix}bc:"
    sm = StarModel(
        entities=[Tally], secret_key="k", stores={"redis": store}, broadcast_url=f"{rb.url}?prefix={channels}"
    )
    assert store.channel_prefix == channels
    listener = rb.raw.pubsub()
    await listener.subscribe(f"{channels}sm:tally:global")
    await listener.get_message(timeout=1)  # the subscription's confirmation
    async with client(sm) as c:
        assert (await c.post("/tally/increment", headers=JSON)).json() == {"count": 1}
        sent.clear()
        assert (await c.post("/tally/increment", headers=JSON)).json() == {"count": 2}
        assert sent == ["EVALSHA", "EVALSHA"]
    heard = []
    with anyio.move_on_after(1):
        while len(heard) < 3:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                heard.append(json.loads(message["data"])["count"])
    assert heard == [1, 2]  # each change once, in order
    await listener.aclose()
    await sm.aclose()


async def test_a_broadcast_on_another_server_leaves_publishing_to_the_app(rb: Backend) -> None:
    store = rb.store()
    StarModel(entities=[Tally], secret_key="k", stores={"redis": store}, broadcast_url="redis://127.0.0.1:6390/0")
    assert store.channel_prefix is None
    StarModel(entities=[Tally], secret_key="k", stores={"redis": store})  # memory broadcast
    assert store.channel_prefix is None

"""Broadcast backends: coalescing, choice by URL, custom backends, Redis pub/sub and its outages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.broadcast import Payload, broadcast_from_url
from starmodel_asgi.broadcast.memory import MemoryBroadcast
from tests.support.headers import DATASTAR
from tests.support.servers import ROOT, RedisServer, read_live, run_server
from tests.support.services import require

pytestmark = pytest.mark.anyio


class Tally(Entity):
    model_config = {"scope": "global"}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1


def tally_is(n: int) -> Any:
    return lambda live: live.signals.get("tally", {}).get("count") == n


async def next_message(messages: AsyncIterator[Payload]) -> str:
    """The next published message, skipping ``None`` (the "re-read" signal after subscribing)."""
    with anyio.fail_after(10):
        while (message := await anext(messages)) is None:
            pass
    return message


# -- memory ----------------------------------------------------------------------------------


async def test_memory_subscriber_keeps_only_the_latest_message() -> None:
    broadcast = MemoryBroadcast()
    async with broadcast.subscribe("a") as slow, broadcast.subscribe("a") as fast, broadcast.subscribe("b") as other:
        assert broadcast.subscriber_count("a") == 2
        for i in range(1000):
            await broadcast.publish("a", str(i))
            if i == 500:
                assert await anext(fast) == "500"
        assert await anext(slow) == "999"  # 999 messages skipped, none queued
        assert await anext(fast) == "999"
        await broadcast.publish("b", "for b")
        assert await anext(other) == "for b"
        await broadcast.publish("a", "again")
        assert await anext(slow) == "again"
    assert broadcast.subscriber_count() == 0


async def test_memory_aclose_ends_every_subscription() -> None:
    broadcast = MemoryBroadcast()
    received: list[Payload] = []

    async def listen() -> None:
        async with broadcast.subscribe("a") as messages:
            async for message in messages:
                received.append(message)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            while broadcast.subscriber_count("a") == 0:
                await anyio.sleep(0.01)
            await broadcast.publish("a", "last")
            await broadcast.aclose()  # the task group can only exit if the iteration ended
    assert received == ["last"]


# -- choosing a backend ----------------------------------------------------------------------


def test_url_scheme_picks_the_backend() -> None:
    assert isinstance(broadcast_from_url("memory://"), MemoryBroadcast)
    redis = broadcast_from_url("redis://127.0.0.1:1/2?prefix=app1:")
    from starmodel_asgi.broadcast.redis import RedisBroadcast

    assert isinstance(redis, RedisBroadcast)
    assert (redis.url, redis.prefix) == ("redis://127.0.0.1:1/2", "app1:")
    assert isinstance(StarModel([Tally], broadcast_url="redis://127.0.0.1:1/0").broadcast, RedisBroadcast)
    assert isinstance(StarModel([Tally]).broadcast, MemoryBroadcast)
    with pytest.raises(ValueError, match="kafka"):
        broadcast_from_url("kafka://somewhere")


def test_the_core_does_not_import_redis() -> None:
    code = "import sys, starmodel_asgi; starmodel_asgi.StarModel([]); print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class RecordingBroadcast:
    """A user's own backend: anything with publish/subscribe/aclose."""

    def __init__(self) -> None:
        self.inner = MemoryBroadcast()
        self.published: list[tuple[str, str]] = []

    async def publish(self, channel: str, message: str) -> None:
        self.published.append((channel, message))
        await self.inner.publish(channel, message)

    def subscribe(self, channel: str) -> Any:
        return self.inner.subscribe(channel)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_custom_backend_object_carries_live_updates() -> None:
    custom = RecordingBroadcast()
    sm = StarModel([Tally], base_path="", secret_key="k", broadcast=custom)
    assert sm.broadcast is custom
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url) as c, read_live(c, "/tally/live") as live:
            await live.wait(tally_is(0))
            await c.post("/tally/increment", headers=DATASTAR)
            await live.wait(tally_is(1))
    assert [channel for channel, _ in custom.published] == ["sm:tally:global"]


# -- Redis -----------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    return require("STARMODEL_TEST_REDIS_URL", "Redis")


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, on its own port: the one the test may stop."""
    if shutil.which("redis-server") is None:
        if os.environ.get("STARMODEL_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


def prefix() -> str:
    return f"test-broadcast-{uuid.uuid4().hex}:"


async def test_redis_delivers_across_instances_within_a_prefix_only(redis_url: str) -> None:
    from starmodel_asgi.broadcast.redis import RedisBroadcast

    shared, other_app = prefix(), prefix()
    one, two, stranger = (
        RedisBroadcast(redis_url, prefix=shared),
        RedisBroadcast(redis_url, prefix=shared),
        RedisBroadcast(redis_url, prefix=other_app),
    )
    try:
        async with (
            one.subscribe("room") as on_one,
            two.subscribe("room") as on_two,
            two.subscribe("elsewhere") as elsewhere,
            stranger.subscribe("room") as on_stranger,
        ):
            # each first yields None once its SUBSCRIBE is confirmed: from then on nothing is missed
            for messages in (on_one, on_two, elsewhere, on_stranger):
                with anyio.fail_after(10):
                    assert await anext(messages) is None
            await one.publish("room", "hello")
            assert await next_message(on_one) == "hello"
            assert await next_message(on_two) == "hello"  # another process, same prefix
            await stranger.publish("room", "marker")
            assert await next_message(on_stranger) == "marker"  # not "hello"
            await two.publish("elsewhere", "marker")
            assert await next_message(elsewhere) == "marker"
    finally:
        for broadcast in (one, two, stranger):
            await broadcast.aclose()


async def test_redis_stuck_subscriber_keeps_only_the_latest_and_blocks_nobody(redis_url: str) -> None:
    from starmodel_asgi.broadcast.redis import RedisBroadcast

    channel_prefix = prefix()
    listener, publisher = (
        RedisBroadcast(redis_url, prefix=channel_prefix),
        RedisBroadcast(redis_url, prefix=channel_prefix),
    )
    try:
        async with listener.subscribe("c") as stuck, listener.subscribe("c") as reader:
            with anyio.fail_after(10):
                assert await anext(reader) is None
            for i in range(1000):
                await publisher.publish("c", str(i))
            with anyio.fail_after(10):
                while await next_message(reader) != "999":
                    pass
            assert await next_message(stuck) == "999"  # whatever it missed, it holds just the newest
            await publisher.publish("c", "next")
            assert await next_message(stuck) == "next"
    finally:
        await listener.aclose()
        await publisher.aclose()


async def _pubsub_clients(admin: Any) -> int:
    return len(await admin.client_list(_type="pubsub"))


async def _eventually(check: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def test_redis_listener_is_lazy_uses_one_connection_and_stops_on_aclose(private_redis: RedisServer) -> None:
    from redis.asyncio import Redis

    from starmodel_asgi.broadcast.redis import RedisBroadcast

    admin = Redis.from_url(private_redis.url, decode_responses=True)
    broadcast = RedisBroadcast(private_redis.url)
    channels = [f"room-{i}" for i in range(50)]
    try:
        assert await _pubsub_clients(admin) == 0 and not broadcast.listening
        async with AsyncExitStack() as stack:
            subscriptions = [await stack.enter_async_context(broadcast.subscribe(c)) for c in channels]
            for messages in subscriptions:
                with anyio.fail_after(10):
                    assert await anext(messages) is None
            assert await _pubsub_clients(admin) == 1  # 50 channels, one connection
            counts = dict(await admin.pubsub_numsub(*channels))
            assert set(counts.values()) == {1}
        # every page left: the channels are unsubscribed on the server too (the UNSUBSCRIBE is sent
        # as the subscriptions close; on a loaded machine the server may see it a moment later)
        with anyio.move_on_after(5):
            while dict(await admin.pubsub_numsub(*channels)) != dict.fromkeys(channels, 0):
                await anyio.sleep(0.05)
        assert dict(await admin.pubsub_numsub(*channels)) == dict.fromkeys(channels, 0)
        assert broadcast.subscriber_count() == 0
        await broadcast.aclose()

        async def closed() -> bool:
            return await _pubsub_clients(admin) == 0

        await _eventually(closed)
        assert not broadcast.listening
    finally:
        await broadcast.aclose()
        await admin.aclose()


@asynccontextmanager
async def browser(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        yield c


async def test_live_pages_resume_with_the_missed_state_when_redis_comes_back(private_redis: RedisServer) -> None:
    from starmodel_asgi.broadcast.redis import RedisBroadcast

    broadcast = RedisBroadcast(private_redis.url, max_reconnect_delay=0.5)
    app = StarModel([Tally], base_path="", secret_key="k", broadcast=broadcast)
    with run_server(app) as url:
        async with browser(url) as page, browser(url) as writer, read_live(page, "/tally/live") as live:
            await live.wait(tally_is(0))
            await _eventually(lambda: _true(url.call(lambda: broadcast.listening)))
            await writer.post("/tally/increment", headers=DATASTAR)
            await live.wait(tally_is(1))

            private_redis.stop()
            await _eventually(lambda: _true(not url.call(lambda: broadcast.listening)))
            for _ in range(2):  # saved while nobody can be told
                assert (await writer.post("/tally/increment", headers=DATASTAR)).status_code == 200
            # a page opened during the outage still starts from the current state
            async with read_live(page, "/tally/live") as late:
                await late.wait(tally_is(3))
                assert live.signals["tally"]["count"] == 1

                private_redis.start()
                await live.wait(tally_is(3), timeout=20)  # the missed state, re-sent on reconnect
                await writer.post("/tally/increment", headers=DATASTAR)
                await live.wait(tally_is(4))  # and live again
                await late.wait(tally_is(4))


async def _true(value: bool) -> bool:
    return value

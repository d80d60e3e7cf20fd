"""A Redis that goes away and comes back, 20 times, under load: every outage ends with the app usable
again within 2 seconds of Redis answering, and nothing is left locked."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.stores.redis import RedisStore
from tests.support.servers import RedisServer

pytestmark = pytest.mark.anyio
JSON = {"Accept": "application/json"}


class Tally(Entity):
    model_config = {"scope": "global", "store": "redis"}
    count: int = 0

    @event
    async def add(self) -> None:
        self.count += 1


async def test_twenty_outages_under_load_each_recovered_within_two_seconds() -> None:
    with RedisServer() as redis:
        store = RedisStore(redis.url, prefix="outage:", timeout=1.0)
        sm = StarModel([Tally], base_path="", secret_key="outage", stores={"redis": store})
        recoveries: list[float] = []
        statuses: list[int] = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(sm), base_url="http://t", headers=JSON) as client:

            async def load() -> None:
                while True:
                    try:
                        statuses.append((await client.post("/tally/add")).status_code)
                    except Exception as exc:  # the app must answer, never raise through ASGI
                        statuses.append(-1)
                        raise AssertionError(f"the app raised: {exc!r}") from exc
                    await anyio.sleep(0.005)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(load)
                for _ in range(20):
                    await anyio.sleep(0.3)
                    await anyio.to_thread.run_sync(redis.stop)
                    await anyio.sleep(0.5)  # requests fail meanwhile: 5xx, not a hang
                    await anyio.to_thread.run_sync(redis.start)
                    back = time.monotonic()
                    while (await client.post("/tally/add")).status_code != 200:
                        assert time.monotonic() - back < 2, "not usable 2 s after Redis came back"
                        await anyio.sleep(0.02)
                    recoveries.append(time.monotonic() - back)
                tg.cancel_scope.cancel()
        assert max(recoveries) < 2, recoveries
        assert -1 not in statuses and set(statuses) <= {200, 500, 503}, set(statuses)
        assert 200 in statuses and any(s != 200 for s in statuses)  # the outages were felt, and survived
        await sm.aclose()


class Counter(Entity):
    model_config = {"scope": "global", "name": "hung_counter"}
    count: int = 0

    @event
    async def add(self) -> None:
        self.count += 1


async def test_a_hung_broadcast_costs_live_freshness_not_events() -> None:
    """The broadcast's Redis stops answering (SIGSTOP): events still answer at once (nothing waits
    for a publish while holding the instance); once it answers again, live pages get the newest
    state."""
    with RedisServer() as bus:
        sm = StarModel([Counter], base_path="", secret_key="hung", broadcast_url=f"{bus.url}?prefix=hung:")
        channel = "sm:hung_counter:global"
        seen: list[int] = []
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(sm), base_url="http://t", headers=JSON) as client,
            sm.broadcast.subscribe(channel) as messages,
        ):

            async def listen() -> None:
                async for message in messages:
                    if message is not None:
                        seen.append(json.loads(message)["count"])

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                with anyio.fail_after(10):  # until the subscription hears (it starts listening lazily)
                    while not seen:
                        assert (await client.post("/hung_counter/add")).status_code == 200
                        await anyio.sleep(0.1)
                before = (await client.get("/hung_counter")).json()["count"]
                await anyio.to_thread.run_sync(bus.pause)
                try:
                    started = time.monotonic()
                    for _ in range(20):
                        assert (await client.post("/hung_counter/add")).status_code == 200
                    elapsed = time.monotonic() - started
                finally:
                    await anyio.to_thread.run_sync(bus.resume)
                with anyio.fail_after(20):  # the newest state arrives once Redis answers
                    while before + 20 not in seen:
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        await sm.aclose()
    assert elapsed < 2, f"20 events took {elapsed:.1f} s while the broadcast hung"

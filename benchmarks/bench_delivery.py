"""Cross-worker live delivery over Redis: how long from an event posted to one app until a live
stream on another app (its own Redis connections, as another worker process has) shows it.

    STARMODEL_TEST_REDIS_URL=redis://127.0.0.1:6379/0 python benchmarks/bench_delivery.py [--changes 200]

The floor is redis-py alone: a PUBLISH on one connection until a subscriber on another gets it.
Both apps share one event loop here, so the figure includes both sides' work, not the network
between machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import anyio
from bench_live import LiveDriver, Stream, Tracker
from redis.asyncio import Redis

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.stores.redis import RedisStore


class Counter(Entity):
    model_config = {"scope": "global", "store": "redis"}
    count: int = 0

    @event
    async def increment(self, amount: int = 1) -> None:
        self.count += amount


def worker(url: str, prefix: str) -> StarModel:
    return StarModel(
        entities=[Counter],
        base_path="",
        secret_key="bench",
        broadcast_url=f"{url}?prefix={prefix}",
        stores={"redis": RedisStore(url, prefix=prefix)},
    )


async def starmodel_delays(url: str, changes: int) -> list[float]:
    prefix = f"bench-delivery-{uuid.uuid4().hex[:8]}:"
    a, b = worker(url, prefix), worker(url, prefix)
    poster, watcher = LiveDriver(a), LiveDriver(b)
    tracker = Tracker()
    stream = Stream(tracker)
    delays = []
    async with anyio.create_task_group() as tg:
        tracker.expect(0, [stream])
        tg.start_soon(watcher.live, stream)
        await tracker.done.wait()
        await anyio.sleep(0.2)  # the listener has subscribed
        for _ in range(changes):
            tracker.expect(stream.seen + 1, [stream])
            start = time.perf_counter()
            await poster.post()
            await tracker.done.wait()
            delays.append(time.perf_counter() - start)
        stream.close()
    client = Redis.from_url(url)
    await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")])
    await client.aclose()
    await a.aclose()
    await b.aclose()
    return delays


async def floor_delays(url: str, changes: int) -> list[float]:
    publisher, listener = Redis.from_url(url), Redis.from_url(url)
    channel = f"bench-floor-{uuid.uuid4().hex[:8]}"
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    delays = []
    for n in range(changes):
        start = time.perf_counter()
        await publisher.publish(channel, str(n))
        while (await pubsub.get_message(timeout=1)) is None:
            pass
        delays.append(time.perf_counter() - start)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await publisher.aclose()
    await listener.aclose()
    return delays


async def measure(url: str, changes: int) -> tuple[float, float, float]:
    """(floor p50, StarModel p50, StarModel p90), in milliseconds."""
    floor = await floor_delays(url, changes)
    ours = await starmodel_delays(url, changes)
    return statistics.median(floor) * 1e3, statistics.median(ours) * 1e3, statistics.quantiles(ours, n=10)[-1] * 1e3


async def main(changes: int) -> None:
    floor, p50, p90 = await measure(os.environ["STARMODEL_TEST_REDIS_URL"], changes)
    print(f"{changes} changes: redis-py floor p50 {floor:.2f} ms; StarModel p50 {p50:.2f} ms, p90 {p90:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=200)
    anyio.run(main, parser.parse_args().changes)

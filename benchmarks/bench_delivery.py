"""Cross-worker live delivery over Redis: how long from an event posted to one app until a live
stream on another app (its own Redis connections, as another worker process has) shows it.

    STARMODEL_TEST_REDIS_URL=redis://127.0.0.1:6379/0 python benchmarks/bench_delivery.py [--changes 200]

The baseline is what a developer would write by hand: one app answers the event with Redis
``INCRBY`` then ``PUBLISH``, another streams what its ``SUBSCRIBE`` hears as Datastar SSE. Both
sides share one event loop here, so the figure includes both workers' work, not the network
between machines: the delay is mostly CPU, so the CPU this process spends per delivery (both
workers, Redis itself not counted) is given beside it, the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import NamedTuple

import anyio
from bench_live import LiveDriver, Stream, Tracker
from datastar_py.sse import ServerSentEventGenerator as SSE
from datastar_py.starlette import DatastarResponse, read_signals
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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


Delays = list[tuple[float, float]]  # per change: seconds until delivered, CPU seconds spent meanwhile


async def delays_between(poster: LiveDriver, watcher: LiveDriver, changes: int) -> Delays:
    """Seconds from each event posted through ``poster`` until the stream of ``watcher`` has it,
    and the CPU seconds this process spent meanwhile."""
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
            start, cpu = time.perf_counter(), time.process_time()
            await poster.post()
            await tracker.done.wait()
            delays.append((time.perf_counter() - start, time.process_time() - cpu))
        stream.close()
    return delays


async def starmodel_delays(url: str, changes: int) -> Delays:
    prefix = f"bench-delivery-{uuid.uuid4().hex[:8]}:"
    a, b = worker(url, prefix), worker(url, prefix)
    delays = await delays_between(LiveDriver(a), LiveDriver(b), changes)
    client = Redis.from_url(url)
    await client.delete(*[k async for k in client.scan_iter(f"{prefix}*")])
    await client.aclose()
    await a.aclose()
    await b.aclose()
    return delays


def baseline_workers(url: str, prefix: str) -> tuple[Starlette, Starlette, list[Redis]]:
    """The event's worker (``INCRBY`` + ``PUBLISH``) and the live stream's (``SUBSCRIBE``), each
    with its own connections."""
    key, channel = f"{prefix}count", f"{prefix}counter"
    writer, reader = Redis.from_url(url), Redis.from_url(url)

    async def increment(request: Request) -> Response:
        signals = await read_signals(request) or {}
        amount = int(request.query_params.get("amount", signals.get("amount", 1)))
        count = await writer.incrby(key, amount)
        await writer.publish(channel, count)
        return Response(SSE.patch_signals({"counter": {"count": count}}), media_type="text/event-stream")

    async def live(request: Request) -> DatastarResponse:
        pubsub = reader.pubsub()
        await pubsub.subscribe(channel)  # before the first read: no change is lost between

        async def stream() -> AsyncIterator[str]:
            try:
                yield SSE.patch_signals({"counter": {"count": int(await reader.get(key) or 0)}})
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        yield SSE.patch_signals({"counter": {"count": int(message["data"])}})
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

        return DatastarResponse(stream())

    routes = [Route("/counter/increment", increment, methods=["POST"]), Route("/counter/live", live)]
    return Starlette(routes=routes), Starlette(routes=routes), [writer, reader]


async def baseline_delays(url: str, changes: int) -> Delays:
    prefix = f"bench-delivery-base-{uuid.uuid4().hex[:8]}:"
    a, b, clients = baseline_workers(url, prefix)
    delays = await delays_between(LiveDriver(a), LiveDriver(b), changes)
    await clients[0].delete(f"{prefix}count")
    for client in clients:
        await client.aclose()
    return delays


class Figures(NamedTuple):
    """Medians over the changes: the delay (ms) by hand and StarModel's (with its p90), and the
    CPU per delivery (us) of each."""

    base_p50: float
    p50: float
    p90: float
    base_cpu: float
    cpu: float


async def measure(url: str, changes: int) -> Figures:
    """Both sides' figures; the two alternate in rounds so a busy moment of the machine hits both."""
    base: Delays = []
    ours: Delays = []
    rounds = 4 if changes >= 40 else 1
    for _ in range(rounds):
        base += await baseline_delays(url, changes // rounds)
        ours += await starmodel_delays(url, changes // rounds)
    ms = [d * 1e3 for d, _ in ours]
    return Figures(
        statistics.median(d * 1e3 for d, _ in base),
        statistics.median(ms),
        statistics.quantiles(ms, n=10)[-1],
        statistics.median(c * 1e6 for _, c in base),
        statistics.median(c * 1e6 for _, c in ours),
    )


async def main(changes: int) -> None:
    f = await measure(os.environ["STARMODEL_TEST_REDIS_URL"], changes)
    print(
        f"{changes} changes: by hand p50 {f.base_p50:.2f} ms, CPU {f.base_cpu:.0f} us per delivery; "
        f"StarModel p50 {f.p50:.2f} ms (p90 {f.p90:.2f}), CPU {f.cpu:.0f} us per delivery; "
        f"ratio p50 {f.p50 / f.base_p50:.2f}, CPU {f.cpu / f.base_cpu:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=200)
    anyio.run(main, parser.parse_args().changes)

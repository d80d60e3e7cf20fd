"""The idle cost of presence: the CPU a process spends while its workers watch many channels and
nothing happens (no viewer joins or leaves).

    python benchmarks/bench_presence.py [--channels 2000] [--workers 1] [--seconds 10]
    STARMODEL_BENCH_REDIS_URL=redis://127.0.0.1:6379/8 python benchmarks/bench_presence.py --redis

Each worker is a ``Presence`` (its own broadcast connections over Redis, one shared in-process
broadcast otherwise) with one viewer of every channel, all in this one process; the figure is
the process's CPU seconds per wall-clock second once every count has settled, so with several
workers it is the work of all of them.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from contextlib import AsyncExitStack

import anyio

from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.broadcast.memory import MemoryBroadcast
from starmodel_asgi.presence import Presence


async def measure(channels: int, workers: int = 1, seconds: float = 10.0, redis_url: str | None = None) -> float:
    """CPU seconds per wall second while ``workers`` presences each watch ``channels`` idle channels."""
    prefix = f"bench-presence-{uuid.uuid4().hex[:8]}:"
    names = [f"sm:room:{uuid.uuid4().hex}" for _ in range(channels)]
    shared = MemoryBroadcast()
    broadcasts: list[Broadcast] = []
    for _ in range(workers):
        if redis_url is None:
            broadcasts.append(shared)
        else:
            from starmodel_asgi.broadcast.redis import RedisBroadcast

            broadcasts.append(RedisBroadcast(redis_url, prefix=prefix))
    presences = [Presence(broadcast) for broadcast in broadcasts]
    try:
        async with AsyncExitStack() as stack:
            for presence in presences:
                for name in names:
                    await stack.enter_async_context(presence.join(name))
            with anyio.fail_after(60):
                while any(presence.count(name) != workers for presence in presences for name in names):
                    await anyio.sleep(0.1)
            await anyio.sleep(2 * presences[0].interval)  # past the joins' hellos and answers
            cpu, wall = time.process_time(), time.monotonic()
            await anyio.sleep(seconds)
            used = (time.process_time() - cpu) / (time.monotonic() - wall)
            assert all(presence.count(name) == workers for presence in presences for name in names)
            return used
    finally:
        for presence in presences:
            await presence.aclose()
        for broadcast in {id(b): b for b in broadcasts}.values():
            await broadcast.aclose()


async def main(channels: int, workers: int, seconds: float, redis: bool) -> None:
    redis_url = None
    if redis:
        redis_url = os.environ.get("STARMODEL_BENCH_REDIS_URL")
        if not redis_url:
            raise SystemExit("--redis needs STARMODEL_BENCH_REDIS_URL (e.g. redis://127.0.0.1:6379/8)")
    used = await measure(channels, workers, seconds, redis_url)
    where = "Redis" if redis else "in-process"
    print(f"{channels} idle channels x {workers} worker(s), {where} broadcast: {used:.3f} CPU s per s ({used:.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--redis", action="store_true", help="over Redis (STARMODEL_BENCH_REDIS_URL)")
    args = parser.parse_args()
    anyio.run(main, args.channels, args.workers, args.seconds, args.redis)

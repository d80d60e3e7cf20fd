"""Memory per idle live stream: StarModel's ``GET /{entity}/live`` against a bare Starlette
``StreamingResponse`` that sends one SSE event and waits (the least a live endpoint holds).

    python benchmarks/bench_memory.py [--streams 2000]

Both are opened through the same in-process ASGI driver; the figure is the Python heap
(tracemalloc) added per open stream once every stream has sent its first event.
"""

from __future__ import annotations

import argparse
import gc
import os
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import anyio
from asgi_driver import Driver
from bench_live import Counter, Stream, Tracker
from datastar_py.sse import ServerSentEventGenerator as SSE
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from starmodel_asgi import StarModel


def bare_app() -> Starlette:
    async def live(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            yield SSE.patch_signals({"counter": {"count": 0}})
            await anyio.sleep_forever()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/counter/live", live)])


async def per_stream(app: Any, n: int) -> float:
    """Heap bytes held per open idle stream."""
    driver = Driver(app)
    headers = [(b"datastar-request", b"true"), (b"accept", b"text/event-stream")]
    tracker = Tracker()
    streams = [Stream(tracker) for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    async with anyio.create_task_group() as tg:
        tracker.expect(0, streams)
        for stream in streams:
            tg.start_soon(driver.stream, "/counter/live", headers, stream.receive, stream.send)
        await tracker.done.wait()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        for stream in streams:
            stream.close()
        tg.cancel_scope.cancel()  # the bare stream never ends by itself
    return held / n


def rss() -> int:
    """The process's resident memory, in bytes (compressors allocate outside Python's heap)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Opened:
    """A live client that only waits for its stream's first bytes (compressed or not)."""

    def __init__(self, waiting: list[int], done: anyio.Event) -> None:
        self.waiting, self.done = waiting, done
        self.closed = anyio.Event()
        self._requested = self._seen = False

    async def receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body") and not self._seen:
            self._seen = True
            self.waiting[0] -= 1
            if not self.waiting[0]:
                self.done.set()


async def rss_per_stream(app: Any, n: int, encoding: str | None) -> float:
    """Resident bytes held per open idle StarModel stream read with ``Accept-Encoding: encoding``."""
    driver = Driver(app)
    headers = [(b"datastar-request", b"true"), (b"accept", b"text/event-stream")]
    if encoding is not None:
        headers.append((b"accept-encoding", encoding.encode()))
    waiting, done = [n], anyio.Event()
    clients = [Opened(waiting, done) for _ in range(n)]
    gc.collect()
    before = rss()
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(driver.stream, "/counter/live", headers, client.receive, client.send)
        await done.wait()
        gc.collect()
        held = rss() - before
        for client in clients:
            client.closed.set()
    return held / n


async def compressed(n: int) -> dict[str, float]:
    """Resident bytes per idle stream, uncompressed (``identity``) and per encoding offered."""
    results = {}
    for encoding in ("identity", "zstd", "br"):
        starmodel = StarModel(entities=[Counter], base_path="", secret_key="bench")
        await rss_per_stream(starmodel, 10, None if encoding == "identity" else encoding)  # warm-up
        results[encoding] = await rss_per_stream(starmodel, n, None if encoding == "identity" else encoding)
        await starmodel.aclose()
    return results


async def measure(n: int) -> tuple[float, float]:
    """(bytes per bare stream, bytes per StarModel stream)."""
    starmodel = StarModel(entities=[Counter], base_path="", secret_key="bench")
    await per_stream(starmodel, 10)  # warm-up: imports, caches
    await per_stream(bare_app(), 10)
    bare = await per_stream(bare_app(), n)
    ours = await per_stream(starmodel, n)
    await starmodel.aclose()
    return bare, ours


async def main(n: int) -> None:
    bare, ours = await measure(n)
    print(f"{n} idle streams, heap bytes per stream: bare {bare:.0f}, starmodel {ours:.0f}, ratio {ours / bare:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=2000)
    anyio.run(main, parser.parse_args().streams)

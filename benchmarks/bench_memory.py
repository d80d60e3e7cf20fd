"""Memory per idle live stream: StarModel's ``GET /{entity}/live`` against a bare Starlette
``StreamingResponse`` that sends one SSE event and waits (the least a live endpoint holds).

    python benchmarks/bench_memory.py [--streams 2000]

Both are opened through the same in-process ASGI driver; the figure is the Python heap
(tracemalloc) added per open stream once every stream has sent its first event.
"""

from __future__ import annotations

import argparse
import gc
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


async def measure(n: int) -> tuple[float, float]:
    """(bytes per bare stream, bytes per StarModel stream)."""
    starmodel = StarModel(entities=[Counter], secret_key="bench")
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

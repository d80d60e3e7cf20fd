"""Memory per idle live stream: StarModel's ``GET /{entity}/live`` against a bare Starlette
``StreamingResponse`` that sends one SSE event and waits (the least a live endpoint holds).

    python benchmarks/bench_memory.py [--streams 2000]
    python benchmarks/bench_memory.py --resident CASE [--streams 1000]

Both are opened through the same in-process ASGI driver; the figure is the Python heap
(tracemalloc) added per open stream once every stream has sent its first event. ``--resident``
measures the process's resident memory per stream instead, for one case of ``RESIDENT`` (the
bare stream, or StarModel's plain or zstd), in the process it runs in.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import anyio
from asgi_driver import Driver, HeldOpen
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
    """The process's resident memory, in bytes (compressors allocate outside Python's heap),
    after handing what the C allocator keeps free back to the system (glibc's ``malloc_trim``):
    memory a stream freed is then not counted as held."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: free memory stays counted
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Opened(HeldOpen):
    """A live client that only waits for its stream's first bytes (compressed or not)."""

    def __init__(self, waiting: list[int], done: anyio.Event) -> None:
        super().__init__()
        self.waiting, self.done = waiting, done
        self._seen = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body") and not self._seen:
            self._seen = True
            self.waiting[0] -= 1
            if not self.waiting[0]:
                self.done.set()


async def rss_per_stream(app: Any, n: int, encoding: str | None, quiet: float = 0.0) -> float:
    """Resident bytes held per open stream of ``app`` read with ``Accept-Encoding: encoding``,
    once every stream has its first event and then ``quiet`` more seconds have passed."""
    driver = Driver(app)
    headers = [(b"datastar-request", b"true"), (b"accept", b"text/event-stream")]
    if encoding is not None:  # as a browser asks (its fetches say Sec-Fetch-Mode: a quiet stream may rest)
        headers += [(b"accept-encoding", encoding.encode()), (b"sec-fetch-mode", b"cors")]
    waiting, done = [n], anyio.Event()
    clients = [Opened(waiting, done) for _ in range(n)]
    gc.collect()
    before = rss()
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(driver.stream, "/counter/live", headers, client.receive, client.send)
        await done.wait()
        await anyio.sleep(quiet)
        gc.collect()
        held = rss() - before
        for client in clients:
            client.close()
    return held / n


#: The keep-alive period of the resident-memory runs: a stream quiet that long is idle (a quiet
#: compressed stream ends its frame and frees its compressor at its keep-alive).
KEEPALIVE = 0.5
#: What ``residents`` measures, each in a process of its own: (encoding, seconds quiet); ``bare``
#: is the bare Starlette stream, the others StarModel's.
RESIDENT = {
    "bare": (None, 2 * KEEPALIVE),
    "identity": (None, 2 * KEEPALIVE),
    "zstd busy": ("zstd", 0.0),
    "zstd idle": ("zstd", 2 * KEEPALIVE),
}


async def resident(case: str, n: int) -> float:
    """Resident bytes per stream of one ``RESIDENT`` case, in this process."""
    encoding, quiet = RESIDENT[case]
    app = bare_app() if case == "bare" else StarModel(Counter, base_path="", secret_key="bench", keepalive=KEEPALIVE)
    await rss_per_stream(app, 10, encoding, quiet)  # warm-up
    held = await rss_per_stream(app, n, encoding, quiet)
    if isinstance(app, StarModel):
        await app.aclose()
    return held


async def residents(n: int) -> dict[str, float]:
    """Resident bytes per stream: the bare stream and StarModel's uncompressed (``identity``),
    both idle; zstd just after its first event, and zstd idle; each measured in a fresh process
    (a process's free memory would hide what the next run allocates)."""
    results = {}
    for case in RESIDENT:
        command = [sys.executable, __file__, "--resident", case, "--streams", str(n)]
        out = await anyio.run_process(command, cwd=os.path.dirname(os.path.abspath(__file__)))
        results[case] = float(out.stdout.decode().split()[-1])
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


async def print_resident(case: str, n: int) -> None:
    print(f"{case}: resident bytes per stream {await resident(case, n):.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--resident", choices=RESIDENT, help="only resident memory per stream of one case")
    args = parser.parse_args()
    if args.resident:
        anyio.run(print_resident, args.resident, args.streams)
    else:
        anyio.run(main, args.streams)

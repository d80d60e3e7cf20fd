"""Live fan-out: StarModel's ``GET /{entity}/live`` against a hand-written Starlette + datastar-py app.

    python benchmarks/bench_live.py [--streams 100 1000] [--changes 100] [--rounds 5]

N live streams are open on one global counter; M changes are then posted one after another, each
only once every stream has received the previous one's ``datastar-patch-signals`` event, and the clock
stops when every stream has received the last. So every stream receives every change: N x M SSE events,
none coalesced. (Both apps keep one latest-message slot per subscriber, as StarModel's memory
broadcast does, but waiting for each change leaves nothing to coalesce. Posting in a burst instead
would measure the scheduler: a handler that never yields lets every stream skip to the last state.)

Both apps are called in this process through the same minimal ASGI driver (no server, no HTTP
client). The ratio is StarModel's changes per second over the baseline's: higher is better, 1.0 is
parity. ``us/event`` is the time per change per stream, the cost of one push to one client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

import anyio
from asgi_driver import Driver, HeldOpen
from datastar_py.sse import ServerSentEventGenerator as SSE
from datastar_py.starlette import DatastarResponse, read_signals
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from starmodel_asgi import Entity, StarModel, event


class Counter(Entity):
    model_config = {"scope": "global"}
    count: int = 0

    @event
    async def increment(self, amount: int = 1) -> None:
        self.count += amount


class Slot:
    """A subscriber of the baseline: the latest SSE text, and an event set when it changes."""

    __slots__ = ("latest", "ready")

    def __init__(self) -> None:
        self.latest = ""
        self.ready = anyio.Event()


def baseline_app() -> tuple[Starlette, dict[int, Slot]]:
    """The least a developer would write by hand: one global count under a lock, a dict of
    subscribers each holding only the latest message, the SSE text formatted once per change."""
    count = 0
    lock = anyio.Lock()
    subscribers: dict[int, Slot] = {}

    async def increment(request: Request) -> Response:
        nonlocal count
        signals = await read_signals(request) or {}
        amount = int(request.query_params.get("amount", signals.get("amount", 1)))
        async with lock:
            count += amount
            sse = SSE.patch_signals({"counter": {"count": count}})
            for slot in subscribers.values():
                slot.latest = sse
                slot.ready.set()
        return Response(sse, media_type="text/event-stream")

    async def live(request: Request) -> DatastarResponse:
        slot = Slot()
        subscribers[id(slot)] = slot  # subscribed before the first read: no change is lost between

        async def stream() -> AsyncIterator[str]:
            try:
                yield SSE.patch_signals({"counter": {"count": count}})
                while True:
                    await slot.ready.wait()
                    slot.ready = anyio.Event()
                    yield slot.latest
            finally:
                del subscribers[id(slot)]

        return DatastarResponse(stream())

    routes = [Route("/counter/increment", increment, methods=["POST"]), Route("/counter/live", live)]
    return Starlette(routes=routes), subscribers


class Tracker:
    """Counts the streams still short of a target count; ``done`` is set when none are."""

    def __init__(self) -> None:
        self.target = 0
        self.pending = 0
        self.done = anyio.Event()

    def expect(self, target: int, streams: list[Stream]) -> None:
        self.target = target
        self.pending = sum(1 for s in streams if s.seen < target)
        self.done = anyio.Event()
        if not self.pending:
            self.done.set()

    def saw(self, before: int, after: int) -> None:
        if before < self.target <= after:
            self.pending -= 1
            if not self.pending:
                self.done.set()


@dataclass
class Stream(HeldOpen):
    """One live client: its ``receive`` blocks until ``close()``, its ``send`` parses the SSE."""

    tracker: Tracker
    seen: int = -1  # the latest count received
    events: int = 0  # datastar-patch-signals events received
    status: int = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        for line in message.get("body", b"").splitlines():
            if line.startswith(b"data: signals "):
                count = json.loads(line[len(b"data: signals ") :])["counter"]["count"]
                before, self.seen = self.seen, count
                self.events += 1
                self.tracker.saw(before, count)


class LiveDriver(Driver):
    """One-shot POSTs, and live streams left open."""

    async def post(self) -> None:
        headers = [(b"datastar-request", b"true"), (b"content-type", b"application/json")]
        status = await self("POST", "/counter/increment", b"amount=1", b'{"counter":{"count":0}}', headers)
        assert status == 200, status

    async def live(self, stream: Stream) -> None:
        headers = [(b"datastar-request", b"true"), (b"accept", b"text/event-stream")]
        await self.stream("/counter/live", headers, stream.receive, stream.send)


async def run(driver: LiveDriver, n: int, m: int) -> tuple[float, float]:
    """Opens n streams, posts m changes, each once every stream has the one before, and returns
    the seconds until every stream has received every change, and the CPU seconds this process
    spent meanwhile. Closes the streams."""
    tracker = Tracker()
    streams = [Stream(tracker) for _ in range(n)]
    async with anyio.create_task_group() as tg:
        tracker.expect(0, streams)  # every stream has sent its first state
        for stream in streams:
            tg.start_soon(driver.live, stream)
        await tracker.done.wait()
        first = {s.seen for s in streams}
        assert len(first) == 1 and {s.status for s in streams} == {200}, (first, {s.status for s in streams})
        base = first.pop()

        start, cpu = time.perf_counter(), time.process_time()
        for i in range(1, m + 1):
            tracker.expect(base + i, streams)
            await driver.post()
            await tracker.done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu

        assert all(s.events == m + 1 and s.seen == base + m for s in streams)  # the first state + m changes
        for stream in streams:  # http.disconnect: each response ends and drops its subscription
            stream.close()
    return elapsed, cpu


class Figures(NamedTuple):
    """Medians of one side at one number of streams: changes per second (each reaching every
    stream), and the CPU spent per change per stream, in microseconds (steady on a shared machine)."""

    rate: float
    cpu_us: float


async def measure(sizes: list[int], changes: int, rounds: int) -> dict[int, tuple[Figures, Figures]]:
    """The baseline's figures and StarModel's, per number of streams."""
    starmodel = StarModel(entities=[Counter], base_path="", secret_key="bench")
    baseline, subscribers = baseline_app()
    drivers = {"baseline": LiveDriver(baseline), "starmodel": LiveDriver(starmodel)}
    for driver in drivers.values():  # warm-up: imports, caches, the session cookie
        await run(driver, 10, 50)
    figures = {}
    for n in sizes:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in drivers}
        for _ in range(rounds):  # interleaved so drift hits both alike
            for name, driver in drivers.items():
                elapsed, cpu = await run(driver, n, changes)
                runs[name].append((changes / elapsed, cpu / (changes * n) * 1e6))
        base, ours = (
            Figures(statistics.median(r for r, _ in runs[name]), statistics.median(c for _, c in runs[name]))
            for name in ("baseline", "starmodel")
        )
        figures[n] = base, ours
    # every stream ended with its client: no subscription or task is left behind
    assert not subscribers and starmodel.broadcast.subscriber_count() == 0  # type: ignore[attr-defined]
    await starmodel.aclose()
    return figures


async def main(sizes: list[int], changes: int, rounds: int) -> None:
    print(f"{changes} changes x {rounds} rounds, each change to every stream, medians, one process, direct ASGI calls")
    print(f"{'scenario':16} {'changes/s b':>11} {'changes/s s':>11} {'CPU us b':>9} {'CPU us s':>9} {'CPU ratio':>9}")
    for n, (base, ours) in (await measure(sizes, changes, rounds)).items():
        cpu = f"{base.cpu_us:9.1f} {ours.cpu_us:9.1f} {ours.cpu_us / base.cpu_us:9.2f}"
        print(f"{f'{n} streams':16} {base.rate:11.0f} {ours.rate:11.0f} {cpu}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.streams, args.changes, args.rounds)

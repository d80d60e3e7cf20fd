"""StarModel against a hand-written Starlette + datastar-py endpoint doing the same work.

    python benchmarks/bench_events.py [--requests 5000] [--rounds 5]

Both apps are called in this process through the same minimal ASGI driver (no server, no HTTP
client), so the ratio is the cost of the framework (routing, cookies, binding, validation, locking,
diffing, SSE) over the least a developer would write by hand. Higher is better; 1.0 is parity.
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from asgi_driver import Driver
from datastar_py.sse import ServerSentEventGenerator as SSE
from datastar_py.starlette import read_signals
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from starmodel_asgi import Entity, StarModel, event


class Counter(Entity):
    count: int = 0

    @event
    async def increment(self, amount: int = 1) -> None:
        self.count += amount


def baseline_app() -> Starlette:
    """The least a developer would write by hand: a dict of counts per cookie, a lock per count."""
    counts: dict[str, int] = {}
    locks: dict[str, anyio.Lock] = {}

    async def increment(request: Request) -> Response:
        sid = request.cookies.get("sid", "anon")
        signals = await read_signals(request) or {}
        amount = int(request.query_params.get("amount", signals.get("amount", 1)))
        async with locks.setdefault(sid, anyio.Lock()):
            counts[sid] = counts.get(sid, 0) + amount
            # a plain Response: datastar-py's DatastarResponse streams, which costs more per request
            return Response(SSE.patch_signals({"counter": {"count": counts[sid]}}), media_type="text/event-stream")

    async def read(request: Request) -> JSONResponse:
        return JSONResponse({"count": counts.get(request.cookies.get("sid", "anon"), 0)})

    return Starlette(routes=[Route("/counter/increment", increment, methods=["POST"]), Route("/counter", read)])


async def post_event(d: Driver) -> int:
    headers = [(b"datastar-request", b"true"), (b"content-type", b"application/json")]
    return await d("POST", "/counter/increment", b"amount=1", b'{"counter":{"count":0}}', headers)


async def get_state(d: Driver) -> int:
    return await d("GET", "/counter", b"", b"", [(b"accept", b"application/json")])


SCENARIOS = {"datastar event (POST, SSE answer)": post_event, "state read (GET, JSON)": get_state}


async def timed(driver: Driver, scenario, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        status = await scenario(driver)
        assert status == 200, status
    return n / (time.perf_counter() - start)


async def main(requests: int, rounds: int) -> None:
    drivers = {
        "starmodel": Driver(StarModel(entities=[Counter], secret_key="bench")),
        "baseline": Driver(baseline_app()),
    }
    print(f"{requests} requests x {rounds} rounds, median requests/s, one process, direct ASGI calls")
    print(f"{'scenario':36} {'baseline':>9} {'starmodel':>9} {'ratio':>6}")
    for label, scenario in SCENARIOS.items():
        results: dict[str, list[float]] = {name: [] for name in drivers}
        for driver in drivers.values():  # warm-up: first session, imports, caches
            await timed(driver, scenario, 200)
        for _ in range(rounds):  # interleaved so drift hits both alike
            for name, driver in drivers.items():
                results[name].append(await timed(driver, scenario, requests))
        base, ours = statistics.median(results["baseline"]), statistics.median(results["starmodel"])
        print(f"{label:36} {base:9.0f} {ours:9.0f} {ours / base:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.requests, args.rounds)

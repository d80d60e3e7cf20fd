"""StarModel against a hand-written Starlette + datastar-py endpoint doing the same work.

    python benchmarks/bench_events.py [--requests 2000] [--rounds 5]

Both apps run in this process behind the same httpx ASGITransport, so the ratio is the cost of
the framework (routing, cookies, binding, validation, locking, diffing, SSE) over the minimum.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx
from datastar_py.sse import ServerSentEventGenerator as SSE
from datastar_py.starlette import DatastarResponse, read_signals
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from starmodel_asgi import Entity, StarModel, event

DATASTAR = {"Datastar-Request": "true"}


class Counter(Entity):
    count: int = 0

    @event
    async def increment(self, amount: int = 1) -> None:
        self.count += amount


def baseline_app() -> Starlette:
    """The least a developer would write by hand: a dict of counts per cookie."""
    counts: dict[str, int] = {}
    locks: dict[str, anyio.Lock] = {}

    async def increment(request: Request) -> DatastarResponse:
        sid = request.cookies.get("sid", "anon")
        signals = await read_signals(request) or {}
        amount = int(request.query_params.get("amount", signals.get("amount", 1)))
        async with locks.setdefault(sid, anyio.Lock()):
            counts[sid] = counts.get(sid, 0) + amount
            return DatastarResponse(SSE.patch_signals({"counter": {"count": counts[sid]}}))

    async def read(request: Request) -> JSONResponse:
        return JSONResponse({"count": counts.get(request.cookies.get("sid", "anon"), 0)})

    return Starlette(routes=[Route("/counter/increment", increment, methods=["POST"]), Route("/counter", read)])


Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def timed(client: httpx.AsyncClient, call: Call, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        r = await call(client)
        assert r.status_code == 200, r.text
    return n / (time.perf_counter() - start)


async def post_event(c: httpx.AsyncClient) -> httpx.Response:
    return await c.post("/counter/increment?amount=1", headers=DATASTAR, json={"counter": {"count": 0}})


async def get_state(c: httpx.AsyncClient) -> httpx.Response:
    return await c.get("/counter", headers={"Accept": "application/json"})


SCENARIOS = {"datastar event (POST, SSE answer)": post_event, "state read (GET, JSON)": get_state}


async def main(requests: int, rounds: int) -> None:
    apps = {"starmodel": StarModel(entities=[Counter], secret_key="bench"), "baseline": baseline_app()}
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", cookies={"sid": "x"})
        for name, app in apps.items()
    }
    print(f"{requests} requests x {rounds} rounds, median requests/s, in-process ASGI")
    print(f"{'scenario':40} {'baseline':>10} {'starmodel':>10} {'ratio':>7}")
    for label, call in SCENARIOS.items():
        results: dict[str, list[float]] = {name: [] for name in apps}
        for client in clients.values():  # warm-up (first session cookie, imports)
            await timed(client, call, 50)
        for _ in range(rounds):  # interleaved so drift hits both alike
            for name, client in clients.items():
                results[name].append(await timed(client, call, requests))
        base, ours = statistics.median(results["baseline"]), statistics.median(results["starmodel"])
        print(f"{label:40} {base:10.0f} {ours:10.0f} {ours / base:7.2f}")
    for client in clients.values():
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.requests, args.rounds)

"""StarModel against a hand-written Starlette + datastar-py endpoint doing the same work.

    python benchmarks/bench_events.py [--requests 5000] [--rounds 5]

Both apps are called in this process through the same minimal ASGI driver (no server, no HTTP
client), so the ratio is the cost of the framework (routing, cookies, binding, validation, locking,
diffing, SSE) over the least a developer would write by hand. Higher is better; 1.0 is parity.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import secrets
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
    def increment(self, amount: int = 1) -> None:  # README's own style: a plain def
        self.count += amount


def baseline_app() -> Starlette:
    """The least a developer would write by hand with the same semantics: an HMAC-signed session
    cookie (verified on every request, renewed on every answer as StarModel's slides), a dict of
    counts per session, a lock per count."""
    counts: dict[str, int] = {}
    locks: dict[str, anyio.Lock] = {}

    def sign(sid: str) -> str:
        digest = hmac.new(b"bench", sid.encode(), hashlib.sha256).digest()
        return f"{sid}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"

    def session(request: Request) -> tuple[str, str]:
        cookie = request.cookies.get("sid", "")
        sid = cookie.rpartition(".")[0]
        if sid and hmac.compare_digest(cookie, sign(sid)):
            return sid, cookie
        sid = secrets.token_urlsafe(24)
        return sid, sign(sid)

    def renew(response: Response, cookie: str) -> Response:
        # written directly: Response.set_cookie goes through http.cookies, several times slower
        header = f"sid={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400"
        response.raw_headers.append((b"set-cookie", header.encode("latin-1")))
        return response

    async def increment(request: Request) -> Response:
        sid, cookie = session(request)
        signals = await read_signals(request) or {}
        amount = int(request.query_params.get("amount", signals.get("amount", 1)))
        async with locks.setdefault(sid, anyio.Lock()):
            counts[sid] = counts.get(sid, 0) + amount
            # a plain Response: datastar-py's DatastarResponse streams, which costs more per request
            sse = SSE.patch_signals({"counter": {"count": counts[sid]}})
        return renew(Response(sse, media_type="text/event-stream"), cookie)

    async def read(request: Request) -> JSONResponse:
        sid, cookie = session(request)
        return renew(JSONResponse({"count": counts.get(sid, 0)}), cookie)  # type: ignore[return-value]

    return Starlette(routes=[Route("/counter/increment", increment, methods=["POST"]), Route("/counter", read)])


def starmodel_app() -> StarModel:
    return StarModel(entities=[Counter], base_path="", secret_key="bench")


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


async def measure(requests: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median requests/s of the baseline and of StarModel, per scenario."""
    drivers = {
        "starmodel": Driver(starmodel_app()),
        "baseline": Driver(baseline_app()),
    }
    figures = {}
    for label, scenario in SCENARIOS.items():
        results: dict[str, list[float]] = {name: [] for name in drivers}
        for driver in drivers.values():  # warm-up: first session, imports, caches
            await timed(driver, scenario, 200)
        for _ in range(rounds):  # interleaved so drift hits both alike
            for name, driver in drivers.items():
                results[name].append(await timed(driver, scenario, requests))
        figures[label] = statistics.median(results["baseline"]), statistics.median(results["starmodel"])
    return figures


async def main(requests: int, rounds: int) -> None:
    print(f"{requests} requests x {rounds} rounds, median requests/s, one process, direct ASGI calls")
    print(f"{'scenario':36} {'baseline':>9} {'starmodel':>9} {'ratio':>6}")
    for label, (base, ours) in (await measure(requests, rounds)).items():
        print(f"{label:36} {base:9.0f} {ours:9.0f} {ours / base:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.requests, args.rounds)

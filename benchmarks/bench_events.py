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
from typing import NamedTuple

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


def sign(sid: str) -> str:
    """The session id with its HMAC, as the baselines' cookie carries it."""
    digest = hmac.new(b"bench", sid.encode(), hashlib.sha256).digest()
    return f"{sid}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def session(request: Request) -> tuple[str, str]:
    """The request's session id and cookie, verified (a new session when it does not verify)."""
    cookie = request.cookies.get("sid", "")
    sid = cookie.rpartition(".")[0]
    if sid and hmac.compare_digest(cookie, sign(sid)):
        return sid, cookie
    sid = secrets.token_urlsafe(24)
    return sid, sign(sid)


def renew(response: Response, cookie: str) -> Response:
    """The cookie renewed on the answer, as StarModel's slides."""
    # written directly: Response.set_cookie goes through http.cookies, several times slower
    header = f"sid={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400"
    response.raw_headers.append((b"set-cookie", header.encode("latin-1")))
    return response


def baseline_app() -> Starlette:
    """The least a developer would write by hand with the same semantics: an HMAC-signed session
    cookie (verified on every request, renewed on every answer as StarModel's slides), a dict of
    counts per session, a lock per count."""
    counts: dict[str, int] = {}
    locks: dict[str, anyio.Lock] = {}

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


class Figures(NamedTuple):
    """Medians of one side of a scenario: requests per second, and the CPU this process spent
    per request (steadier than the rate on a shared machine)."""

    rate: float
    cpu_us: float


async def timed(driver: Driver, scenario, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Requests per second and CPU microseconds per request over ``n`` requests."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        status = await scenario(driver)
        assert status == 200, status
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


async def measure(requests: int, rounds: int) -> dict[str, tuple[Figures, Figures]]:
    """Per scenario, the baseline's figures and StarModel's. Each round is cut in slices of
    ``SLICE`` requests, the two apps alternating, so a busy moment of the machine hits both."""
    drivers = {
        "starmodel": Driver(starmodel_app()),
        "baseline": Driver(baseline_app()),
    }
    figures = {}
    for label, scenario in SCENARIOS.items():
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in drivers}
        for driver in drivers.values():  # warm-up: first session, imports, caches
            await timed(driver, scenario, 200)
        for _ in range(rounds):
            spent = {name: [0.0, 0.0] for name in drivers}  # wall seconds, CPU us
            for _ in range(max(1, requests // SLICE)):
                for name, driver in drivers.items():
                    n = min(SLICE, requests)
                    rate, cpu_us = await timed(driver, scenario, n)
                    spent[name][0] += n / rate
                    spent[name][1] += cpu_us * n
            slices = max(1, requests // SLICE) * min(SLICE, requests)
            for name, (wall, cpu) in spent.items():
                results[name].append((slices / wall, cpu / slices))
        base, ours = (
            Figures(statistics.median(r for r, _ in results[n]), statistics.median(c for _, c in results[n]))
            for n in ("baseline", "starmodel")
        )
        figures[label] = base, ours
    return figures


#: Requests per slice of a round (the apps alternate slice by slice).
SLICE = 250


async def main(requests: int, rounds: int) -> None:
    print(f"{requests} requests x {rounds} rounds, medians, one process, direct ASGI calls")
    print(f"{'scenario':36} {'baseline':>9} {'starmodel':>9} {'ratio':>6}  CPU us per request (ratio)")
    for label, (base, ours) in (await measure(requests, rounds)).items():
        cpu = f"{base.cpu_us:.0f} / {ours.cpu_us:.0f} ({ours.cpu_us / base.cpu_us:.2f})"
        print(f"{label:36} {base.rate:9.0f} {ours.rate:9.0f} {ours.rate / base.rate:6.2f}  {cpu}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.requests, args.rounds)

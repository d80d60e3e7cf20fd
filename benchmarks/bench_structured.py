"""An event on a large state against one on a small state, and against a hand-written endpoint.

    python benchmarks/bench_structured.py [--requests 2000] [--rounds 5]

The large state is a session entity holding ``ROWS`` nested rows (about 100 KB of JSON, kept on
the server: ``ServerOnly``) and a public count of the rows done; its event ticks one row and moves
the count, so the answer is one small signal patch. Its cost should follow the change, not the
state: the first figure is its CPU per request over the README counter's (the small-state event),
both StarModel, in the same run; the second is the same event over a hand-written Starlette +
datastar-py endpoint (rows in a dict per signed session, a lock per session, the same SSE bytes).
The apps alternate in slices of ``SLICE`` requests, in this process, through the same ASGI driver.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Annotated, Any

import anyio
from asgi_driver import Driver, scope
from bench_events import SLICE, Figures, renew, session, timed
from bench_events import starmodel_app as counter_app
from datastar_py.sse import ServerSentEventGenerator as SSE
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from starmodel_asgi import Entity, ServerOnly, StarModel, event

#: Rows in the large state.
ROWS = 1000


class Row(BaseModel):
    id: int
    title: str
    done: bool = False
    note: str = ""
    tags: list[str] = Field(default_factory=list)


def rows() -> list[Row]:
    return [
        Row(id=i, title=f"task number {i} to do", note="a note of a few words", tags=["a", "bb"]) for i in range(ROWS)
    ]


class Board(Entity):
    rows: Annotated[list[Row], ServerOnly] = Field(default_factory=rows)
    done: int = 0

    @event
    def tick(self, index: int = 0) -> None:
        row = self.rows[index]
        row.done = not row.done
        self.done += 1 if row.done else -1


def starmodel_app() -> StarModel:
    return StarModel(entities=[Board], base_path="", secret_key="bench")


def baseline_app() -> Starlette:
    """The same work by hand: a signed session cookie (``bench_events``' scheme), the rows as dicts
    per session under a lock, one row ticked, the count sent as a signal patch."""
    boards: dict[str, dict[str, Any]] = {}
    locks: dict[str, anyio.Lock] = {}

    async def tick(request: Request) -> Response:
        sid, cookie = session(request)
        index = int(request.query_params.get("index", 0))
        async with locks.setdefault(sid, anyio.Lock()):
            board = boards.get(sid)
            if board is None:
                board = boards[sid] = {"rows": [row.model_dump() for row in rows()], "done": 0}
            row = board["rows"][index]
            row["done"] = not row["done"]
            board["done"] += 1 if row["done"] else -1
            sse = SSE.patch_signals({"board": {"done": board["done"]}})
        return renew(Response(sse, media_type="text/event-stream"), cookie)

    return Starlette(routes=[Route("/board/tick", tick, methods=["POST"])])


HEADERS = [(b"datastar-request", b"true"), (b"content-type", b"application/json")]


async def tick(d: Driver) -> int:
    return await d("POST", "/board/tick", b"index=5", b'{"board":{"done":0}}', HEADERS)


async def increment(d: Driver) -> int:
    return await d("POST", "/counter/increment", b"amount=1", b'{"counter":{"count":0}}', HEADERS)


async def answer(app: Any, path: str, query: bytes, body: bytes) -> bytes:
    """The body of one Datastar POST to a fresh session of ``app``."""
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope("POST", path, query, [*HEADERS, (b"content-length", str(len(body)).encode())]), receive, send)
    return b"".join(chunks)


async def check_same_bytes() -> None:
    """Both sides answer the tick with the same SSE bytes (the count's patch, nothing else)."""
    body = b'{"board":{"done":0}}'
    ours = await answer(starmodel_app(), "/board/tick", b"index=5", body)
    theirs = await answer(baseline_app(), "/board/tick", b"index=5", body)
    assert ours == theirs, (ours, theirs)


async def measure(requests: int, rounds: int) -> dict[str, Figures]:
    """Median figures of each side: the large-state event (StarModel and by hand) and the counter."""
    await check_same_bytes()
    sides = {
        "counter": (Driver(counter_app()), increment),
        "starmodel": (Driver(starmodel_app()), tick),
        "baseline": (Driver(baseline_app()), tick),
    }
    for driver, scenario in sides.values():  # warm-up: the session made, the state saved once
        await timed(driver, scenario, 100)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    slices = max(1, requests // SLICE)
    n = min(SLICE, requests)
    for _ in range(rounds):
        spent = {name: [0.0, 0.0] for name in sides}
        for _ in range(slices):
            for name, (driver, scenario) in sides.items():
                rate, cpu_us = await timed(driver, scenario, n)
                spent[name][0] += n / rate
                spent[name][1] += cpu_us * n
        for name, (wall, cpu) in spent.items():
            results[name].append((slices * n / wall, cpu / (slices * n)))
    return {
        name: Figures(statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in results.items()
    }


async def main(requests: int, rounds: int) -> None:
    figures = await measure(requests, rounds)
    counter, ours, base = figures["counter"], figures["starmodel"], figures["baseline"]
    print(f"{requests} requests x {rounds} rounds, medians, one process, direct ASGI calls; CPU us per request")
    print(f"{ROWS}-row event {ours.cpu_us:.0f}, counter event {counter.cpu_us:.0f}: {ours.cpu_us / counter.cpu_us:.2f}")
    print(f"{ROWS}-row event {ours.cpu_us:.0f}, by hand {base.cpu_us:.0f}: {ours.cpu_us / base.cpu_us:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.requests, args.rounds)

"""Per-viewer render: what ``render(self, viewer)`` costs against ``render(self)``.

    python benchmarks/bench_viewer.py [--streams 100 1000] [--changes 50] [--rounds 5]

N live streams (each of its own user) are open on one record; M changes are then posted one after
another, each once every stream has received the previous one (as in bench_live.py). The shared
app's ``render(self)`` runs once per change for every stream; the per-viewer app's
``render(self, viewer)`` (a delete button only for the record's owner) once per change per stream.
Both are StarModel, called in this process through the same ASGI driver. The ratio is per-viewer
changes per second over shared ones: 1.0 would be free.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

import anyio
from bench_live import LiveDriver, Stream, run
from starlette.requests import Request

from starmodel_asgi import Entity, EventRequest, StarModel, event


def card(entity: Entity, text: str, mine: bool) -> str:
    delete = f"<button data-on:click=\"@delete('/counter/{entity.id}')\">delete</button>" if mine else ""
    return f'<article id="{entity.dom_id}"><p>{text}</p>{delete}</article>'


class SharedCard(Entity):
    model_config = {"scope": "record", "name": "counter"}
    count: int = 0
    owner: str = "u1"

    @event
    async def increment(self, amount: int = 1) -> None:
        self.count += amount

    def render(self) -> str:
        return card(self, f"{self.count} likes", False)


class ViewerCard(Entity):
    model_config = {"scope": "record", "name": "counter"}
    count: int = 0
    owner: str = "u1"

    @event
    async def increment(self, amount: int = 1) -> None:
        self.count += amount

    def render(self, viewer: EventRequest) -> str:
        return card(self, f"{self.count} likes", viewer.user_id == self.owner)


def user(request: Request) -> str | None:
    return request.headers.get("x-user")


@dataclass
class CardDriver(LiveDriver):
    """Posts to one record and opens its live stream, each stream as another user."""

    key: str = "c1"

    async def post(self) -> None:
        headers = [(b"datastar-request", b"true"), (b"content-type", b"application/json")]
        status = await self("POST", f"/counter/{self.key}/increment", b"amount=1", b"{}", headers)
        assert status == 200, status

    async def live(self, stream: Stream) -> None:
        headers = [(b"datastar-request", b"true"), (b"x-user", f"u{id(stream) % 10}".encode())]
        await self.stream(f"/counter/{self.key}/live", headers, stream.receive, stream.send)


async def measure(sizes: list[int], changes: int, rounds: int) -> dict[int, tuple[float, float]]:
    """Median changes/s of the shared render and of the per-viewer one, per number of streams."""
    apps = {
        name: StarModel([entity], base_path="", secret_key="bench", get_user=user)
        for name, entity in (("shared", SharedCard), ("viewer", ViewerCard))
    }
    drivers = {}
    for name, sm in apps.items():
        entity = SharedCard if name == "shared" else ViewerCard
        await sm.create(entity, id="c1")
        drivers[name] = CardDriver(sm)
    for driver in drivers.values():  # warm-up
        await run(driver, 10, 20)
    figures = {}
    for n in sizes:
        rates: dict[str, list[float]] = {name: [] for name in drivers}
        for _ in range(rounds):  # interleaved so drift hits both alike
            for name, driver in drivers.items():
                rates[name].append(changes / (await run(driver, n, changes))[0])
        figures[n] = statistics.median(rates["shared"]), statistics.median(rates["viewer"])
    for sm in apps.values():
        await sm.aclose()
    return figures


async def main(sizes: list[int], changes: int, rounds: int) -> None:
    print(f"{changes} changes x {rounds} rounds to one record, each to every stream, median changes/s")
    print(f"{'streams':10} {'shared':>9} {'viewer':>9} {'ratio':>6} {'us/event s':>11} {'us/event v':>11}")
    for n, (shared, viewer) in (await measure(sizes, changes, rounds)).items():
        per_event = f"{1e6 / (shared * n):11.1f} {1e6 / (viewer * n):11.1f}"
        print(f"{n:<10} {shared:9.0f} {viewer:9.0f} {viewer / shared:6.2f} {per_event}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.streams, args.changes, args.rounds)

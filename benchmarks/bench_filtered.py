"""A filtered live list: what ``live_list(where={"room": ...})`` costs against the unfiltered list.

    python benchmarks/bench_filtered.py [--streams 1000] [--rooms 10] [--changes 50] [--rounds 5]

One app, one record entity (``Line``, indexed by ``room``), ``rooms`` rooms of 5 records each. N live
streams are opened either on the unfiltered list (``GET /line/live``: every stream follows every
record) or spread over the rooms (``GET /line/live?room=rK``: N / rooms streams per room, each
following only its room's records: the gallery's chat). M changes are then posted one after another,
to the rooms in turn, each once every stream that shows the record has received it; the clock stops
when this process has nothing left to do. The figure is this process's CPU per change per open
stream: on the filtered side it includes the streams of the other rooms, which are woken by every
change (the list's channel says only "something changed") and re-read their room's window, one read
per room shared by its streams. The ratio is filtered over unfiltered: below 1.0 the filter saves
more (renders and sends to streams that do not show the record) than it costs (a read per room).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import anyio
from asgi_driver import Driver, HeldOpen
from starlette.types import Message

from starmodel_asgi import Entity, StarModel, event


class Line(Entity):
    model_config = {"scope": "record", "indexes": ["room"]}
    room: str = ""
    text: str = ""
    edits: int = 0

    @event
    async def edit(self) -> None:
        self.edits += 1

    def render(self) -> str:
        return f'<li id="{self.dom_id}"><b>{self.room}</b> {self.text} <i>{self.edits}</i></li>'


@dataclass
class Stream(HeldOpen):
    """One live client: counts the element patches it receives; ``closed`` ends it."""

    room: str | None
    patches: int = 0
    reached: anyio.Event = field(default_factory=anyio.Event)
    target: int = 0

    def expect(self, target: int) -> None:
        self.target, self.reached = target, anyio.Event()
        if self.patches >= target:
            self.reached.set()

    async def send(self, message: Message) -> None:
        self.patches += message.get("body", b"").count(b"event: datastar-patch-elements")
        if self.patches >= self.target:
            self.reached.set()


async def run(sm: StarModel, ids: dict[str, list[str]], n: int, m: int, filtered: bool) -> float:
    """Opens n streams (spread over the rooms when ``filtered``), posts m changes to the rooms in
    turn, each once the streams showing it have it, and returns this process's CPU seconds."""
    driver, rooms = Driver(sm), list(ids)
    streams = [Stream(rooms[i % len(rooms)] if filtered else None) for i in range(n)]
    headers = [(b"datastar-request", b"true"), (b"accept", b"text/event-stream")]
    async with anyio.create_task_group() as tg:
        for s in streams:
            s.expect(1)  # the first window
            query = f"room={s.room}".encode() if s.room else b""
            tg.start_soon(driver.stream, "/line/live", headers, s.receive, s.send, query)
        for s in streams:
            await s.reached.wait()
        cpu = time.process_time()
        for i in range(m):
            room = rooms[i % len(rooms)]
            showing = [s for s in streams if s.room in (None, room)]
            for s in showing:
                s.expect(s.patches + 1)
            post = [(b"datastar-request", b"true"), (b"content-type", b"application/json")]
            status = await driver("POST", f"/line/{ids[room][i % 5]}/edit", b"", b"{}", post)
            assert status == 200, status
            for s in showing:
                await s.reached.wait()
        await anyio.wait_all_tasks_blocked()  # the other rooms' streams have re-read and found nothing
        cpu = time.process_time() - cpu
        per_room = {s.patches for s in streams}  # every stream got its first window and its own changes
        assert per_room == ({1 + m // len(rooms)} if filtered else {1 + m}), per_room
        for s in streams:
            s.close()
    return cpu


async def measure(n: int, rooms: int, changes: int, rounds: int) -> tuple[float, float]:
    """Median CPU us per change per stream: the unfiltered list's, then the filtered lists'."""
    sm = StarModel([Line], base_path="", secret_key="bench")
    ids = {
        f"r{r}": [(await sm.create(Line, room=f"r{r}", text=f"line {k}")).id for k in range(5)] for r in range(rooms)
    }
    if changes < rooms:
        raise ValueError(f"changes ({changes}) must be at least rooms ({rooms}): every room is changed as often")
    changes -= changes % rooms  # every room changed as often
    await run(sm, ids, rooms, rooms, True)  # warm-up
    figures: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):  # interleaved so drift hits both alike
        for filtered in (False, True):
            figures[filtered].append(await run(sm, ids, n, changes, filtered) / (changes * n) * 1e6)
    await sm.aclose()
    return statistics.median(figures[False]), statistics.median(figures[True])


async def main(n: int, rooms: int, changes: int, rounds: int) -> None:
    whole, filtered = await measure(n, rooms, changes, rounds)
    print(f"{n} streams, {rooms} rooms, {changes} changes x {rounds} rounds, median CPU us per change per stream")
    print(f"unfiltered {whole:8.1f}\nfiltered   {filtered:8.1f}\nratio      {filtered / whole:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.streams, args.rooms, args.changes, args.rounds)

"""Entities the contract tests drive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import anyio
from starlette.requests import Request

from starmodel_asgi import ClientWritable, Element, Entity, EventRequest, ServerOnly, Signals, event


class Html:
    """Anything with ``__html__`` (FastHTML elements, markupsafe) counts as HTML."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __html__(self) -> str:
        return self.text


class Counter(Entity):
    count: int = 0
    step: int = 1
    secret: Annotated[str, ServerOnly] = "s3cret"
    note: Annotated[str, ClientWritable] = ""
    tags: list[str] = []

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event
    async def add(self, amount: int) -> None:
        self.count += amount

    @event
    async def step_up(self) -> None:
        self.count += self.step

    @event(method="GET")
    def peek(self, amount: int = 0) -> str:
        return f'<span id="peek">{self.count + amount}</span>'

    @event(method="PUT", path="set-count")
    def set_count(self, value: int) -> None:
        self.count = value

    @event(selector="#out", mode="inner")
    def greet(self, name: str) -> str:
        return f"<b>hello {name}</b>"

    @event
    def fragment(self) -> Html:
        self.count += 1
        return Html('<div id="frag">fragment</div>')

    @event
    def two_elements(self) -> list[Element]:
        return [Element('<li id="a">a</li>', "#list", "append"), Element('<li id="b">b</li>', "#list", "append")]

    @event
    def tag(self, tags: list[str]) -> None:
        self.tags = tags

    @event
    def echo_note(self) -> str:
        return f'<p id="note">{self.note}</p>'

    @event
    def fail(self) -> None:
        self.count = 999
        raise RuntimeError("database melted")

    @event
    def bad_assign(self, value: str) -> None:
        self.count = value  # type: ignore[assignment]

    @event
    def scale(self, factor: float) -> None:
        self.count = int(self.count * factor)

    @event(method="GET")
    def sneaky(self) -> None:
        self.count += 1

    @event
    def not_html(self) -> int:
        return 42

    @event
    def info(self, request: EventRequest, signals: Signals, amount: int = 0) -> str:
        return f'<p id="info">{request.method} {sorted(signals)} {amount}</p>'

    @event
    def host_info(self, request: Request) -> str:
        return f'<p id="host">{request.headers.get("x-probe")} {type(request).__name__}</p>'

    @event
    async def progress(self) -> AsyncIterator[str]:
        for i in range(3):
            self.count += 1
            await anyio.sleep(0)
            yield f'<p id="progress">{i}</p>'

    @event
    def sync_progress(self) -> Iterator[None]:
        for _ in range(2):
            self.count += 10
            yield None

    @event
    async def half_done(self) -> AsyncIterator[None]:
        self.count += 1
        yield None
        self.count += 100
        raise ValueError("second step broke")


class Shared(Entity):
    model_config = {"scope": "global"}
    total: int = 0

    @event
    async def bump(self) -> None:
        value = self.total
        await anyio.sleep(0)  # a yield point inside the read-modify-write
        self.total = value + 1

    @event
    def bump_sync(self) -> None:
        self.total += 1


class Profile(Entity):
    model_config = {"scope": "user", "name": "profile"}
    visits: int = 0

    @event
    def visit(self) -> None:
        self.visits += 1


class TodoList(Entity):
    items: list[str] = []

    @event
    def add(self, text: str) -> None:
        self.items = [*self.items, text]


ENTITIES: list[type[Entity]] = [Counter, Shared, Profile, TodoList]


class Loader(Entity):
    """Generators that change state after their last yield, or never yield."""

    status: str = "idle"
    rows: int = 0

    @event
    async def load(self):  # type: ignore[no-untyped-def]
        self.status = "loading"
        yield '<p id="spinner">loading</p>'
        self.rows = 3
        self.status = "done"

    @event
    def silent(self):  # type: ignore[no-untyped-def]
        self.rows = 9
        if False:
            yield None


ENTITIES.append(Loader)

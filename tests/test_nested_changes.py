"""Changes made inside nested values (a list appended to, a row's attribute set, a dict key set) are
saved, published to live streams, patched to the page and told to subscribers on every store,
though the memory store keeps an event's instance for the next one instead of validating its JSON
again; an event that changes nothing sends and saves nothing; a failed event leaves the stored
state as it was, even after it changed the kept instance in place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, PrivateAttr

from starmodel_asgi import Change, Entity, StarModel, event
from starmodel_asgi.stores import Store
from starmodel_asgi.testing import StreamingTransport
from starmodel_asgi.wire import channel_name
from tests.support.headers import DATASTAR
from tests.support.sse import merged_signals, parse_sse
from tests.test_unit import KINDS, Backend, Heard

pytestmark = pytest.mark.anyio


class Row(BaseModel):
    title: str
    done: bool = False


def make_board(store: Literal["memory", "sql", "redis"]) -> type[Entity]:
    class Board(Entity):
        model_config = {"scope": "global", "store": store, "name": "board"}
        rows: list[Row] = []
        names: dict[str, str] = {}

        @event
        def add(self, title: str) -> None:
            self.rows.append(Row(title=title))

        @event
        def add_raw(self, title: str) -> None:
            self.rows.append({"title": title})  # type: ignore[arg-type]  # not a Row: saved as its JSON

        @event
        def tick(self, index: int) -> None:
            self.rows[index].done = not self.rows[index].done

        @event
        def name(self, key: str, value: str) -> None:
            self.names[key] = value

        @event
        def wreck(self) -> None:
            self.rows[0].done = True
            self.rows.append(Row(title="ghost"))
            self.names["ghost"] = "boo"
            raise RuntimeError("boom after changes in place")

        @event
        def look(self) -> None:
            assert self.rows is not None  # reads, changes nothing

    return Board


class Nested:
    """A ``Board`` served from one kind of store (``test_unit.Backend``'s, cleaned up with it)."""

    def __init__(self, kind: str, store: Store, board: type[Entity] | None = None) -> None:
        self.kind, self.store = kind, store
        where: Literal["memory", "sql", "redis"] = "sql" if kind in ("sqlite", "postgres") else kind  # type: ignore[assignment]
        self.Board = board or make_board(where)
        self.sm = StarModel([self.Board], secret_key="nested", stores={where: store})
        self.changes: list[Change] = []
        self.sm.on(self.Board)(self.changes.append)
        self.channel = channel_name(self.sm.spec(self.Board), "global")

    def worker(self) -> Nested:
        """Another app on the same store, as another worker process would be."""
        return Nested(self.kind, self.store, self.Board)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=StreamingTransport(self.sm), base_url="http://t")

    async def post(self, c: httpx.AsyncClient, path: str) -> tuple[int, dict[str, Any]]:
        """The status and the signals the page holds after the answer."""
        response = await c.post(path, headers=DATASTAR)
        return response.status_code, merged_signals(parse_sse(response.text))

    async def saved(self) -> tuple[list[tuple[str, bool]], dict[str, str]]:
        """The rows and names as a fresh read from the store gives them."""
        board = await self.sm.get(self.Board)
        return [(row.title, row.done) for row in board.rows], dict(board.names)


@pytest.fixture(params=KINDS)
async def n(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Nested]:
    backend = Backend(request.param, tmp_path)
    try:
        yield Nested(backend.kind, backend.store)
    finally:
        await backend.cleanup()


async def test_changes_inside_nested_values_are_saved_published_and_patched(n: Nested) -> None:
    async with n.client() as c, Heard(n.sm, [n.channel]) as heard:
        for title in ("a", "b", "c"):  # an append
            status, signals = await n.post(c, f"/board/add?title={title}")
            assert status == 200
        assert [row["title"] for row in signals["board"]["rows"]] == ["a", "b", "c"]
        status, signals = await n.post(c, "/board/tick?index=1")  # an item's attribute set
        assert (status, [row["done"] for row in signals["board"]["rows"]]) == (200, [False, True, False])
        status, signals = await n.post(c, "/board/name?key=k&value=v")  # a dict key set
        assert (status, signals["board"]) == (200, {"names": {"k": "v"}})
    assert await n.saved() == ([("a", False), ("b", True), ("c", False)], {"k": "v"})
    assert len(heard.messages) == 5  # one live message per change
    assert heard.messages[3][1] != heard.messages[2][1]  # the tick's message carries the new state
    ticked = n.changes[3]
    assert ticked.before is not None and ticked.after is not None
    assert (ticked.before["rows"][1]["done"], ticked.after["rows"][1]["done"]) == (False, True)


async def test_a_failed_event_leaves_the_state_it_changed_in_place_as_saved(n: Nested) -> None:
    async with n.client() as c:
        for path in ("/board/add?title=a", "/board/add?title=b", "/board/name?key=k&value=v"):
            assert (await c.post(path, headers=DATASTAR)).status_code == 200  # the instance is kept
        n.changes.clear()
        async with Heard(n.sm, [n.channel]) as heard:
            assert (await c.post("/board/wreck", headers=DATASTAR)).status_code == 500
            assert await n.saved() == ([("a", False), ("b", False)], {"k": "v"})
            # the next event starts from the saved state, not from the failed one's leftovers
            status, signals = await n.post(c, "/board/tick?index=1")
    assert status == 200
    assert [(row["title"], row["done"]) for row in signals["board"]["rows"]] == [("a", False), ("b", True)]
    assert await n.saved() == ([("a", False), ("b", True)], {"k": "v"})
    assert len(heard.messages) == 1 and [change.event for change in n.changes] == ["tick"]


async def test_an_event_that_changes_nothing_saves_publishes_and_patches_nothing(n: Nested) -> None:
    async with n.client() as c:
        assert (await c.post("/board/add?title=a", headers=DATASTAR)).status_code == 200
        n.changes.clear()
        async with Heard(n.sm, [n.channel]) as heard:
            for _ in range(2):  # the second starts from the instance the first left
                status, signals = await n.post(c, "/board/look")
                assert (status, signals.get("board", {}).keys() & {"rows", "names"}) == (200, set())
    assert heard.messages == [] and n.changes == []
    assert await n.saved() == ([("a", False)], {})


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the dict in a list of rows, as saved
async def test_a_value_of_the_wrong_type_left_in_place_is_read_back_validated(n: Nested) -> None:
    async with n.client() as c:
        assert (await c.post("/board/add_raw?title=raw", headers=DATASTAR)).status_code == 200
        status, signals = await n.post(c, "/board/tick?index=0")  # a Row again, not the dict left
    assert (status, signals["board"]["rows"]) == (200, [{"title": "raw", "done": True}])
    assert await n.saved() == ([("raw", True)], {})


async def test_an_instance_kept_by_one_worker_is_dropped_once_another_changes_the_state(n: Nested) -> None:
    other = n.worker()
    async with n.client() as c, other.client() as elsewhere:
        for title in ("a", "b"):
            assert (await c.post(f"/board/add?title={title}", headers=DATASTAR)).status_code == 200
        assert (await elsewhere.post("/board/tick?index=0", headers=DATASTAR)).status_code == 200
        status, signals = await n.post(c, "/board/add?title=c")  # starts from the other worker's save
    assert (status, [(r["title"], r["done"]) for r in signals["board"]["rows"]]) == (
        200,
        [("a", True), ("b", False), ("c", False)],
    )
    assert await n.saved() == ([("a", True), ("b", False), ("c", False)], {})


class Scratch(Entity):
    model_config = {"scope": "global", "name": "scratch"}
    _calls: int = PrivateAttr(0)  # per event: a kept instance would carry it over
    seen: int = 0

    @event
    def call(self) -> None:
        self._calls += 1
        self.seen = self._calls


async def test_private_attributes_start_afresh_in_every_event() -> None:
    sm = StarModel([Scratch], secret_key="nested")
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        answers = [merged_signals(parse_sse((await c.post("/scratch/call", headers=DATASTAR)).text)) for _ in range(3)]
    assert answers == [{"scratch": {"seen": 1}}, {}, {}]  # the later ones change nothing
    assert (await sm.get(Scratch)).seen == 1
    await sm.aclose()

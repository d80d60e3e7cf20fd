"""One unit of work per event (DESIGN 3c): writes an event makes through ``request.app`` join it, on
every store; all or nothing; an event may delete its own record; nothing is told before the commit;
no lock is left behind; no store hands an event a state it shares."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest

from starmodel_asgi import Change, Entity, EventRequest, StarModel, event
from starmodel_asgi.stores import Store
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.stores.sql import SQLStore
from starmodel_asgi.testing import StreamingTransport
from starmodel_asgi.wire import DELETED, channel_name, list_channel
from tests.support.headers import DATASTAR, JSON
from tests.support.services import drop_redis_keys, require
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio

KINDS = ["memory", "sqlite", "postgres", "redis"]


def make_entities(store: Literal["memory", "sql", "redis"]) -> tuple[type[Entity], type[Entity]]:
    class Tally(Entity):
        model_config = {"scope": "global", "store": store, "name": "tally"}
        count: int = 0

    class Card(Entity):
        model_config = {"scope": "record", "store": store, "name": "card"}
        title: str = ""
        done: bool = False
        count: int = 0
        tags: list[str] = []
        meta: dict[str, Any] = {}

        @event
        async def spawn(self, request: EventRequest, title: str) -> None:
            await request.app.create(Card, title=title)
            self.count += 1

        @event
        async def spawn_then_fail(self, request: EventRequest, title: str) -> None:
            await request.app.create(Card, title=title)
            async with request.app.edit(Tally) as tally:
                tally.count += 1
            self.count += 1
            raise RuntimeError("boom after the writes")

        @event
        async def bump(self, request: EventRequest) -> None:
            async with request.app.edit(Tally) as tally:
                tally.count += 1
            self.count += 1

        @event
        async def remove(self, request: EventRequest) -> None:
            await request.app.delete(Card, self.id)

        @event
        async def cross(self, request: EventRequest, other: str) -> None:
            self.count += 1
            await anyio.sleep(0.05)  # both events hold their own card before reaching the other
            async with request.app.edit(Card, other) as card:
                card.count += 1

        @event
        def tag(self, tag: str, fail: bool = False) -> None:
            self.tags.append(tag)  # in place: the stored state must not change with it
            self.meta.setdefault("seen", []).append(tag)
            if fail:
                raise RuntimeError("boom after an in-place change")

        @event
        async def steps(self, request: EventRequest, title: str, fail: bool = False) -> AsyncIterator[None]:
            """A generator: its writes join its unit across yields."""
            await request.app.create(Card, title=title)
            yield
            self.count += 1
            yield
            if fail:
                raise RuntimeError("boom after two steps")

        @event
        async def clear_done(self, request: EventRequest) -> None:
            for card in await request.app.list(Card, limit=1000):
                if card.done:
                    await request.app.delete(Card, card.id)

    return Tally, Card


class Backend:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        tag = uuid.uuid4().hex[:8]
        store: Literal["memory", "sql", "redis"] = "sql" if kind in ("sqlite", "postgres") else kind  # type: ignore[assignment]
        self.Tally, self.Card = make_entities(store)
        self.store: Store
        if kind == "memory":
            self.store = MemoryStore()
        elif kind == "redis":
            self.url = require("STARMODEL_TEST_REDIS_URL", "Redis")
            self.prefix = f"smunit:{tag}:"
            self.store = RedisStore(self.url, prefix=self.prefix, lock_timeout=5)
        else:
            self.url = (
                f"sqlite+aiosqlite:///{tmp_path / 'unit.db'}"
                if kind == "sqlite"
                else require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
            )
            self.prefix = f"u{tag}_"
            self.store = SQLStore(self.url, table_prefix=self.prefix)
        self.sm = StarModel([self.Tally, self.Card], secret_key="unit", stores={store: self.store})
        self.changes: list[Change] = []
        self.sm.on(self.Card)(self.changes.append)
        self.sm.on(self.Tally)(self.changes.append)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=StreamingTransport(self.sm), base_url="http://t")

    async def card(self, **fields: Any) -> str:
        card = await self.sm.create(self.Card, **fields)
        return card.id

    async def titles(self) -> list[str]:
        return sorted(c.title for c in await self.sm.list(self.Card, limit=1000))

    async def cleanup(self) -> None:
        if isinstance(self.store, SQLStore):
            async with self.store.engine.begin() as conn:
                for table in list(self.store.metadata.tables.values()):
                    await conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}"')
        elif self.kind == "redis":
            await drop_redis_keys(self.url, self.prefix)
        await self.sm.aclose()


@pytest.fixture(params=KINDS)
async def b(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = Backend(request.param, tmp_path)
    try:
        yield backend
    finally:
        await backend.cleanup()


class Heard:
    """Every message published on some channels of the app's broadcast, in order."""

    def __init__(self, sm: StarModel, channels: list[str]) -> None:
        self.sm, self.channels = sm, channels
        self.messages: list[tuple[str, str]] = []

    async def __aenter__(self) -> Heard:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for channel in self.channels:
            ready = anyio.Event()
            self._tg.start_soon(self._listen, channel, ready)
            await ready.wait()
        return self

    async def _listen(self, channel: str, ready: anyio.Event) -> None:
        async with self.sm.broadcast.subscribe(channel, every=True) as messages:
            ready.set()
            async for message in messages:
                self.messages.append((channel, message or ""))

    async def __aexit__(self, *exc: object) -> None:
        await anyio.sleep(0.05)
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)


async def test_an_event_creates_another_record(b: Backend) -> None:
    first = await b.card(title="first")
    b.changes.clear()
    async with b.client() as c, Heard(b.sm, [list_channel(b.sm.spec(b.Card))]) as heard:
        response = await c.post(f"/card/{first}/spawn?title=second", headers=JSON)
        assert response.status_code == 200, response.text
        assert response.json()["count"] == 1
    assert await b.titles() == ["first", "second"]
    assert [(ch.event, ch.before is None, ch.after is None) for ch in b.changes] == [
        ("spawn", False, False),
        (None, True, False),
    ]
    assert len(heard.messages) == 1  # one unit, one "re-read" for the live lists


async def test_an_event_edits_another_entity(b: Backend) -> None:
    card = await b.card(title="x")
    async with b.client() as c:
        for _ in range(3):
            assert (await c.post(f"/card/{card}/bump", headers=JSON)).status_code == 200
    assert (await b.sm.get(b.Tally)).count == 3
    assert (await b.sm.get(b.Card, card)).count == 3


async def test_an_event_that_raises_after_its_writes_leaves_none_of_them(b: Backend) -> None:
    card = await b.card(title="keep")
    b.changes.clear()
    channels = [list_channel(b.sm.spec(b.Card)), channel_name(b.sm.spec(b.Tally), "global")]
    async with b.client() as c, Heard(b.sm, channels) as heard:
        response = await c.post(f"/card/{card}/spawn_then_fail?title=ghost", headers=JSON)
        assert response.status_code == 500
        assert "boom" not in response.text
    assert await b.titles() == ["keep"]  # no row
    assert (await b.sm.get(b.Tally)).count == 0  # no state
    assert (await b.sm.get(b.Card, card)).count == 0
    assert heard.messages == []  # no live message
    assert b.changes == []  # no subscriber call
    async with b.client() as c:  # and no lock: the same instances are free at once
        with anyio.fail_after(5):
            assert (await c.post(f"/card/{card}/bump", headers=JSON)).status_code == 200
    assert (await b.sm.get(b.Tally)).count == 1


async def test_an_event_deletes_its_own_record(b: Backend) -> None:
    gone, kept = await b.card(title="gone"), await b.card(title="kept")
    b.changes.clear()
    spec = b.sm.spec(b.Card)
    async with b.client() as c, Heard(b.sm, [channel_name(spec, gone), list_channel(spec)]) as heard:
        with anyio.fail_after(10):
            response = await c.post(f"/card/{gone}/remove", headers=JSON)
        assert response.status_code == 204
        assert (await c.get(f"/card/{gone}", headers=JSON)).status_code == 404
        with anyio.fail_after(5):  # nothing left locked: the id answers 404 at once, not a hang
            assert (await c.post(f"/card/{gone}/bump", headers=JSON)).status_code == 404
        # a Datastar caller is told it is gone, as live pages are
        response = await c.post(f"/card/{kept}/remove", headers=DATASTAR)
        assert response.status_code == 200
        assert merged_signals(parse_sse(response.text))["card"]["_deleted"] is True
    assert await b.titles() == []
    assert (channel_name(spec, gone), DELETED) in heard.messages
    assert [(ch.key, ch.before is not None, ch.after) for ch in b.changes] == [(gone, True, None), (kept, True, None)]


async def test_concurrent_events_each_creating_records_lose_none(b: Backend) -> None:
    cards = [await b.card(title=f"parent{i}") for i in range(5)]
    async with b.client() as c:

        async def spawn(i: int) -> None:
            response = await c.post(f"/card/{cards[i % 5]}/spawn?title=child{i:02}", headers=JSON)
            assert response.status_code == 200, response.text

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(spawn, i)
    titles = await b.titles()
    assert [t for t in titles if t.startswith("child")] == [f"child{i:02}" for i in range(40)]
    assert sum([(await b.sm.get(b.Card, card)).count for card in cards]) == 40


async def test_crossing_events_neither_deadlock_nor_lose_a_change(b: Backend) -> None:
    """Event 1 holds A and edits B while event 2 holds B and edits A: one is rolled back and run
    again, both succeed, every increment is kept."""
    one, two = await b.card(title="one"), await b.card(title="two")
    async with b.client() as c:

        async def cross(mine: str, other: str) -> None:
            response = await c.post(f"/card/{mine}/cross?other={other}", headers=JSON)
            assert response.status_code == 200, response.text

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(cross, one, two)
                    tg.start_soon(cross, two, one)
    assert (await b.sm.get(b.Card, one)).count == 6
    assert (await b.sm.get(b.Card, two)).count == 6


async def test_a_failed_event_changes_nothing_in_nested_lists_and_dicts(b: Backend) -> None:
    card = await b.card(title="nested", tags=["a"], meta={"seen": ["a"]})
    b.changes.clear()
    async with b.client() as c:
        assert (await c.post(f"/card/{card}/tag?tag=b&fail=true", headers=JSON)).status_code == 500
        saved = await b.sm.get(b.Card, card)
        assert (saved.tags, saved.meta) == (["a"], {"seen": ["a"]})
        assert b.changes == []
        # a successful change inside a nested list is saved, and its Change shows before and after
        response = await c.post(f"/card/{card}/tag?tag=c", headers=JSON)
        assert response.json()["tags"] == ["a", "c"]
    saved = await b.sm.get(b.Card, card)
    assert (saved.tags, saved.meta) == (["a", "c"], {"seen": ["a", "c"]})
    (change,) = b.changes
    assert change.before is not None and change.after is not None
    assert (change.before["tags"], change.after["tags"]) == (["a"], ["a", "c"])
    assert change.before["meta"] == {"seen": ["a"]}


async def test_a_read_never_shares_the_stored_state(b: Backend) -> None:
    card = await b.card(title="mine", tags=["a"])
    first = await b.sm.get(b.Card, card)
    first.tags.append("changed outside any event")
    assert (await b.sm.get(b.Card, card)).tags == ["a"]


async def test_a_cancelled_unit_leaves_no_lock(b: Backend) -> None:
    card = await b.card(title="held")
    entered = anyio.Event()

    async def stuck() -> None:
        async with b.sm.edit(b.Card, card) as held:
            held.count = 99
            await b.sm.create(b.Card, title="never")
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stuck)
        await entered.wait()
        tg.cancel_scope.cancel()  # the caller went away mid-unit
    with anyio.fail_after(5):
        async with b.sm.edit(b.Card, card) as again:
            assert again.count == 0
            again.count = 1
    assert await b.titles() == ["held"]


async def test_clear_done_over_many_records_is_one_unit(b: Backend) -> None:
    keep = await b.card(title="keep")
    for i in range(60):
        await b.card(title=f"done{i}", done=True)
    b.changes.clear()
    async with b.client() as c, Heard(b.sm, [list_channel(b.sm.spec(b.Card))]) as heard:
        with anyio.fail_after(60):
            response = await c.post(f"/card/{keep}/clear_done", headers=JSON)
        assert response.status_code == 200, response.text
    assert await b.titles() == ["keep"]
    assert len(b.changes) == 60
    assert len(heard.messages) == 1  # the lists re-read once, after the one commit


async def test_edit_inside_an_event_of_its_own_instance_is_the_same_instance(b: Backend) -> None:
    card = await b.card(title="self")

    async with b.sm.edit(b.Card, card) as outer:
        async with b.sm.edit(b.Card, card) as inner:  # joins the open unit: no deadlock
            assert inner is outer
            inner.count += 1
        assert (await b.sm.get(b.Card, card)).count == 1  # the unit sees its own change
        await b.sm.delete(b.Card, card)
        assert await b.sm.list(b.Card) == []
        with pytest.raises(LookupError):
            await b.sm.get(b.Card, card)
    assert await b.titles() == []


async def test_a_block_that_raises_inside_a_unit_keeps_none_of_its_changes(b: Backend) -> None:
    card = await b.card(title="c")
    async with b.sm.edit(b.Card, card) as outer:
        outer.count = 1
        with pytest.raises(RuntimeError):
            async with b.sm.edit(b.Tally) as tally:
                tally.count = 50
                raise RuntimeError("the block fails; the unit goes on")
    assert (await b.sm.get(b.Tally)).count == 0
    assert (await b.sm.get(b.Card, card)).count == 1


async def test_unreadable_state_is_refused_before_it_is_saved(b: Backend) -> None:
    """A number too long to print is refused (422) before the commit: the instance stays usable."""
    card = await b.card(title="n")
    big = 10**4400
    with pytest.raises(ValueError):
        async with b.sm.edit(b.Card, card) as held:
            held.meta = {"n": big}
    assert (await b.sm.get(b.Card, card)).meta == {}
    async with b.client() as c:
        assert (await c.post(f"/card/{card}/bump", headers=JSON)).status_code == 200
        assert json.loads((await c.get(f"/card/{card}", headers=JSON)).text)["count"] == 1


async def test_a_nested_hold_that_stays_busy_rolls_the_unit_back_with_a_503() -> None:
    """A unit that holds its own instance and waits longer than ``nested_wait`` for another one
    (held by a long block elsewhere, not waiting for it) is rolled back: a plain event is run
    again, then answered 503; nothing of it is kept, and the other holder is undisturbed."""
    tally, card_class = make_entities("memory")
    sm = StarModel([tally, card_class], secret_key="unit", nested_wait=0.2)
    card = await sm.create(card_class, title="waits")
    released = anyio.Event()
    holding = anyio.Event()

    async def long_block() -> None:
        async with sm.edit(tally) as held:
            holding.set()
            await released.wait()
            held.count = 7

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_block)
        await holding.wait()
        async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
            with anyio.fail_after(10):
                response = await c.post(f"/card/{card.id}/bump", headers=JSON)
        released.set()
    assert response.status_code == 503
    assert "busy" in response.text
    assert (await sm.get(card_class, card.id)).count == 0
    assert (await sm.get(tally)).count == 7
    await sm.aclose()


async def test_a_generator_event_keeps_its_writes_only_if_it_finishes(b: Backend) -> None:
    card = await b.card(title="gen")
    async with b.client() as c:
        response = await c.post(f"/card/{card}/steps?title=kept", headers=DATASTAR)
        assert response.status_code == 200
        response = await c.post(f"/card/{card}/steps?title=dropped&fail=true", headers=DATASTAR)
        assert "datastar-patch-signals" in response.text  # steps were streamed, then the reset
    assert await b.titles() == ["gen", "kept"]
    assert (await b.sm.get(b.Card, card)).count == 1


async def test_requests_for_missing_records_leave_nothing_behind(b: Backend) -> None:
    """A hold that finds no record (a 404, a LookupError) is released with its unit and leaves no
    entry in the process's table of held instances: a stream of 404s cannot grow memory."""
    async with b.client() as c:
        for i in range(20):
            assert (await c.post(f"/card/missing{i}/bump", headers=JSON)).status_code == 404
            assert (await c.delete(f"/card/missing{i}", headers=JSON)).status_code == 404
    with pytest.raises(LookupError):
        await b.sm.delete(b.Card, "missing")
    assert b.sm.dispatcher.holders == {}
    with anyio.fail_after(5):  # and nothing stays locked
        async with b.sm.edit(b.Tally) as tally:
            tally.count = 1

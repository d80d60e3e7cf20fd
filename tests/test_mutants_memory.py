"""The memory store as its users see it: the behaviours mutation testing (issue 19 point 11) found
no test for in ``stores/memory.py``: counts and filtered lists by an indexed value as records
change, creation order kept through edits, TTLs to the second, sweeps once per interval, which
sessions the ``max_sessions`` bound drops, ``dump``/``restore`` (what ``sm.copy`` moves), and the
store's own units (writes seen by the unit, applied at commit, one holder per instance)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import anyio
import pytest

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.query import Query
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores.base import Stored
from starmodel_asgi.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Task(Entity):
    model_config = {"scope": "record", "name": "mtask", "indexes": ["done", "room"]}
    title: str = ""
    done: bool = False
    room: str = "main"


class Note(Entity):
    model_config = {"scope": "record", "name": "mnote", "ttl": 10, "indexes": ["room"]}
    room: str = "main"


class Visit(Entity):
    model_config = {"scope": "session", "name": "mvisit"}
    count: int = 0


class Blip(Entity):
    model_config = {"scope": "session", "name": "mblip", "ttl": 10}
    count: int = 0


def app(store: MemoryStore) -> StarModel:
    return StarModel([Task, Note, Visit, Blip], secret_key="k", stores={"memory": store})


def ids(items: list[Any]) -> list[str]:
    return [i.id for i in items]


async def write(store: MemoryStore, spec: EntitySpec, key: str, state: dict[str, Any]) -> None:
    async with store.hold(spec, key) as slot:
        await slot.save(state)


async def kept(store: MemoryStore, spec: EntitySpec) -> list[str]:
    """The keys the store still has, in the order first written (without touching any)."""
    return [s.key async for s in store.dump(spec)]


# -- value indexes (``indexes``): counts and filtered lists


async def test_a_count_by_an_indexed_value_follows_edits_and_deletes() -> None:
    """Catches an index not moved when a record's value changes or not emptied when it goes."""
    sm = app(MemoryStore())
    for key in "abc":
        await sm.create(Task, id=key, title=key)
    assert await sm.count(Task, where={"done": False}) == 3
    async with sm.edit(Task, "b") as task:
        task.done = True
    assert await sm.count(Task, where={"done": False}) == 2
    assert await sm.count(Task, where={"done": True}) == 1
    assert await sm.count(Task, where={"done": False, "title": "a"}) == 1  # an index, and a field without
    assert await sm.count(Task, where={"room": "main", "done": False}) == 2
    await sm.delete(Task, "c")
    assert await sm.count(Task, where={"done": False}) == 1
    assert ids(await sm.list(Task, where={"done": False})) == ["a"]
    assert ids(await sm.list(Task, where={"done": True})) == ["b"]
    assert await sm.count(Task, where={"done": True, "room": "main"}) == 1  # two filters
    assert await sm.count(Task, where={"done": True, "room": "else"}) == 0
    assert await sm.count(Task, where={"title": "a"}) == 1  # a field without an index
    assert await sm.count(Task, where={"room": "nowhere"}) == 0
    assert await sm.count(Task) == 2
    assert ids(await sm.list(Task, where={"done": True, "title": "a"})) == []


async def test_a_filtered_list_keeps_creation_order_through_edits() -> None:
    """Catches a filtered list in the order of a set of keys, or an edit moving a record last."""
    sm = app(MemoryStore())
    order = [f"k{(n * 7) % 30:02d}" for n in range(30)]
    for key in order:
        await sm.create(Task, id=key)
    async with sm.edit(Task, order[0]) as task:
        task.title = "edited"
    assert ids(await sm.list(Task, where={"room": "main"})) == order
    assert ids(await sm.list(Task, where={"room": "main"}, order="-created")) == order[::-1]
    assert ids(await sm.list(Task, limit=5, offset=10, where={"room": "main"})) == order[10:15]
    assert ids(await sm.list(Task, where={"room": "main", "title": "edited"})) == [order[0]]
    assert ids(await sm.list(Task)) == order


async def test_counts_and_lists_skip_records_at_their_ttl_before_any_sweep() -> None:
    """Catches an expired record counted or listed (by an indexed value or not) until a sweep."""
    clock = Clock()
    sm = app(MemoryStore(sweep_interval=3600, clock=clock))
    await sm.create(Note, id="n1")
    clock.now += 5
    await sm.create(Note, id="n2")
    await sm.create(Task, id="t1")  # another entity in the same store
    clock.now += 5  # n1 is exactly 10 s old: gone
    assert await sm.count(Note, where={"room": "main"}) == 1
    assert ids(await sm.list(Note, where={"room": "main"})) == ["n2"]
    assert await sm.count(Note) == 1
    assert ids(await sm.list(Note)) == ["n2"]
    assert ids(await sm.list(Task)) == ["t1"]


# -- TTLs and sweeps


async def test_an_instance_goes_exactly_at_its_ttl_and_each_read_extends_it() -> None:
    clock = Clock()
    store = MemoryStore(default_ttl=10, sweep_interval=3600, clock=clock)
    spec = app(store).spec(Visit)
    await write(store, spec, "s", {"count": 1})
    clock.now += 9.5
    assert await store.get_text(spec, "s") == '{"count": 1}'
    clock.now += 9.5  # 19 s after the write, 9.5 s after the read
    assert await store.get(spec, "s") == {"count": 1}
    clock.now += 10
    assert await store.get(spec, "s") is None
    assert len(store) == 0  # dropped when found expired


async def test_a_sweep_runs_once_per_interval() -> None:
    """Catches a sweep skipped at its interval, or run on every access (a scan of every instance)."""
    clock = Clock()
    store = MemoryStore(default_ttl=5, sweep_interval=10, clock=clock)
    sm = app(store)
    await write(store, sm.spec(Visit), "a", {"count": 1})
    await sm.create(Task, id="t")
    clock.now += 6  # "a" expired, not yet swept
    await sm.get(Task, "t")
    assert len(store) == 2
    clock.now += 4  # the interval since the store began
    await sm.get(Task, "t")
    assert len(store) == 1
    await write(store, sm.spec(Visit), "b", {"count": 1})
    clock.now += 6  # "b" expired; 6 s since the last sweep
    await sm.get(Task, "t")
    assert len(store) == 2
    clock.now += 4
    assert await sm.count(Task) == 1  # a list or count sweeps too
    assert len(store) == 1
    clock.now += 5
    await write(store, sm.spec(Visit), "c", {"count": 1})
    clock.now += 5  # "c" expires as the next sweep runs: swept
    await sm.get(Task, "t")
    assert len(store) == 1


async def test_the_documented_defaults() -> None:
    """20,000 sessions; a session is returning a minute after its first use; a sweep a minute."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    sm = app(store)
    spec = sm.spec(Visit)
    await write(store, spec, "back", {"count": 1})
    await write(store, sm.spec(Blip), "gone", {"count": 1})
    clock.now += 59.5
    await store.get(spec, "back")  # 59.5 s: still a visitor; "gone" expired, not yet swept
    assert len(store) == 2
    clock.now += 0.5
    await store.get(spec, "back")  # 60 s: a sweep, and now a returning session
    assert len(store) == 1
    for n in range(20_000):
        await write(store, spec, f"v{n}", {"count": 1})
    assert len(store) == 20_000
    assert "back" in await kept(store, spec)


# -- the max_sessions bound


async def test_past_the_bound_the_least_recently_used_visitor_goes() -> None:
    clock = Clock()
    store = MemoryStore(max_sessions=3, clock=clock)
    spec = app(store).spec(Visit)
    for key in "abc":
        await write(store, spec, key, {"count": 1})
    await write(store, spec, "d", {"count": 1})
    assert await kept(store, spec) == ["b", "c", "d"]
    assert await store.get(spec, "a") is None  # its state is gone, not only its place
    await store.get(spec, "b")  # used again (too soon to count as returning): the most recent
    await write(store, spec, "e", {"count": 1})
    assert await kept(store, spec) == ["b", "d", "e"]


async def test_a_session_used_again_after_returned_after_outlasts_a_flood_of_visitors() -> None:
    clock = Clock()
    store = MemoryStore(max_sessions=5, returned_after=60, clock=clock)
    spec = app(store).spec(Visit)
    await write(store, spec, "soon", {"count": 1})
    await write(store, spec, "back", {"count": 1})
    clock.now += 59
    await store.get(spec, "soon")  # 59 s later: still a visitor
    clock.now += 1
    await store.get(spec, "back")  # 60 s later: returning
    for n in range(10):
        await write(store, spec, f"v{n}", {"count": 1})
    assert await kept(store, spec) == ["back", "v6", "v7", "v8", "v9"]


async def test_returning_sessions_are_kept_up_to_80_percent_of_the_bound() -> None:
    """Past 80% of the bound the oldest returning session is a visitor again (and goes first)."""
    clock = Clock()
    store = MemoryStore(max_sessions=5, returned_after=60, clock=clock)
    spec = app(store).spec(Visit)
    regulars = [f"r{n}" for n in range(1, 6)]
    for key in regulars:
        await write(store, spec, key, {"count": 1})
    clock.now += 60
    for key in regulars:
        await store.get(spec, key)
    clock.now += 1
    assert await store.get(spec, "r1") == {"count": 1}  # a visitor again, and used as one
    for n in range(10):
        await write(store, spec, f"v{n}", {"count": 1})
    assert await kept(store, spec) == ["r2", "r3", "r4", "r5", "v9"]
    clock.now += 60
    await store.get(spec, "r2")  # used again: the most recent returning one
    await store.get(spec, "v9")  # back: r3 is now the oldest returning one, and a visitor again
    for n in range(10, 15):
        await write(store, spec, f"v{n}", {"count": 1})
    assert await kept(store, spec) == ["r2", "r4", "r5", "v9", "v14"]


async def test_an_expired_or_deleted_session_frees_its_place_in_the_bound() -> None:
    clock = Clock()
    store = MemoryStore(max_sessions=4, returned_after=60, sweep_interval=3600, clock=clock)
    sm = app(store)
    visit, blip = sm.spec(Visit), sm.spec(Blip)
    await write(store, visit, "v1", {"count": 1})
    await write(store, visit, "v2", {"count": 1})
    await write(store, blip, "x", {"count": 1})  # a visitor's short-lived instance
    await write(store, visit, "y", {"count": 1})
    clock.now += 60
    await store.get(visit, "y")  # returning
    async with store.hold(visit, "y") as slot:
        await slot.delete()
    clock.now += 1
    assert await store.get(blip, "x") is None  # expired: dropped
    await write(store, visit, "v3", {"count": 1})
    await write(store, visit, "v4", {"count": 1})
    assert await kept(store, visit) == ["v1", "v2", "v3", "v4"]


async def test_closing_the_store_keeps_every_instance_and_session() -> None:
    clock = Clock()
    store = MemoryStore(max_sessions=2, clock=clock)
    sm = app(store)
    spec = sm.spec(Visit)
    await write(store, spec, "a", {"count": 1})
    await write(store, spec, "b", {"count": 1})
    clock.now += 60
    await store.get(spec, "a")  # returning
    await sm.create(Task, id="t", done=True)
    await store.aclose()
    assert len(store) == 3
    assert await sm.count(Task, where={"done": True}) == 1
    assert [t.id for t in await sm.list(Task, where={"done": True})] == ["t"]
    await write(store, spec, "c", {"count": 1})  # the bound still holds: the one-time visitor b goes
    assert await kept(store, spec) == ["a", "c"]


# -- dump and restore (what sm.copy moves)


async def test_dump_gives_live_instances_in_creation_order_with_their_time_left() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    sm = app(store)
    await sm.create(Task, id="t1")
    await sm.create(Note, id="n1")
    clock.now += 4
    await sm.create(Note, id="n2")
    await sm.create(Task, id="t2")
    async with sm.edit(Task, "t1") as task:
        task.title = "edited"
    clock.now += 2
    notes = [s async for s in store.dump(sm.spec(Note))]
    assert [(s.key, s.expires_in) for s in notes] == [("n1", 4.0), ("n2", 8.0)]
    assert json.loads(notes[0].text)["id"] == "n1"
    tasks = [s async for s in store.dump(sm.spec(Task))]
    assert [(s.key, s.expires_in) for s in tasks] == [("t1", None), ("t2", None)]
    assert json.loads(tasks[0].text)["title"] == "edited"
    clock.now += 4  # n1 exactly 10 s old
    assert await kept(store, sm.spec(Note)) == ["n2"]


async def test_restore_keeps_live_instances_and_puts_a_replaced_expired_one_last() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    sm = app(store)
    spec = sm.spec(Note)
    first = [Stored("a", '{"id": "a", "room": "x"}', 5.0), Stored("b", '{"id": "b", "room": "x"}', None)]
    assert await store.restore(spec, first) == 2
    assert await store.restore(spec, [Stored("a", '{"id": "a", "room": "y"}', 5.0)]) == 0  # never overwrites
    assert await sm.count(Note, where={"room": "x"}) == 2
    assert await sm.count(Note, where={"room": "y"}) == 0
    clock.now = 1004.5
    assert await kept(store, spec) == ["a", "b"]  # 5 s to live, as restored
    clock.now = 1005.0
    assert await kept(store, spec) == ["b"]
    again = [Stored("a", '{"id": "a", "room": "y"}', 3.0)]
    assert await store.restore(spec, again) == 1  # the expired one is replaced
    assert await kept(store, spec) == ["b", "a"]
    assert await sm.count(Note, where={"room": "x"}) == 1
    assert await sm.count(Note, where={"room": "y"}) == 1
    assert ids(await sm.list(Note, where={"room": "y"})) == ["a"]
    assert [s.expires_in async for s in store.dump(spec)] == [None, 3.0]


async def test_restored_sessions_count_in_the_bound() -> None:
    store = MemoryStore(max_sessions=2)
    spec = app(store).spec(Visit)
    sessions = [Stored(key, '{"count": 1}', None) for key in ("s1", "s2", "s3")]
    assert await store.restore(spec, sessions) == 3
    assert await kept(store, spec) == ["s2", "s3"]
    assert await store.get(spec, "s3") == {"count": 1}  # used again, as any session


async def test_restored_records_follow_the_ones_there_in_creation_order() -> None:
    store = MemoryStore()
    sm = app(store)
    await sm.create(Task, id="first")
    order = [f"k{(n * 7) % 20:02d}" for n in range(20)]
    items = [Stored(key, json.dumps({"id": key, "room": "main"}), None) for key in order]
    assert await store.restore(sm.spec(Task), [Stored("first", '{"id": "first"}', None), *items]) == 20
    assert ids(await sm.list(Task, where={"room": "main"})) == ["first", *order]
    assert ids(await sm.list(Task, where={"room": "main"}, order="-created")) == [*order[::-1], "first"]


# -- the store's own units (what events and sm.edit run in)


async def test_a_unit_sees_its_own_writes_and_applies_them_only_at_commit() -> None:
    store = MemoryStore()
    spec = app(store).spec(Task)
    await write(store, spec, "b", {"id": "b", "title": "saved"})
    txn = store.begin()
    assert await txn.get(spec, "b") == {"id": "b", "title": "saved"}  # read, not held: the store's
    assert await txn.get(spec, "c") is None
    slot = await txn.hold(spec, "a")
    assert await slot.load() is None
    await slot.save({"id": "a", "title": "one"})
    assert await slot.load() == {"id": "a", "title": "one"}
    assert await txn.get(spec, "a") == {"id": "a", "title": "one"}
    assert await store.get(spec, "a") is None  # not before the commit
    await txn.commit()
    assert await store.get(spec, "a") == {"id": "a", "title": "one"}
    await slot.save(text='{"id": "a", "title": "two"}')
    assert await slot.load_text() == '{"id": "a", "title": "two"}'
    await txn.rollback()
    assert await slot.load() == {"id": "a", "title": "one"}
    await slot.delete()
    assert await slot.load() is None
    assert await txn.get(spec, "a") is None
    assert await store.get(spec, "a") == {"id": "a", "title": "one"}
    await txn.commit()
    assert await store.get(spec, "a") is None
    assert len(store) == 1
    await txn.release()
    assert len(store._locks) == 0


async def test_one_unit_at_a_time_holds_an_instance() -> None:
    store = MemoryStore()
    spec = app(store).spec(Task)
    seen: list[str] = []

    async def second() -> None:
        txn = store.begin()
        await txn.hold(spec, "a")
        seen.append("second holds")
        await txn.release()

    async with anyio.create_task_group() as tg:
        first = store.begin()
        await first.hold(spec, "a")
        await first.hold(spec, "b")
        tg.start_soon(second)
        await anyio.sleep(0.05)
        assert seen == []
        await first.release()
    assert seen == ["second holds"]
    assert len(store._locks) == 0


async def test_deleted_and_expired_records_leave_nothing_behind_in_the_indexes() -> None:
    """Catches index entries kept for records that are gone: memory growing with every delete."""
    clock = Clock()
    sm = app(MemoryStore(sweep_interval=1, clock=clock))

    async def churn(start: int, n: int) -> None:
        for k in range(start, start + n):
            await sm.create(Task, id=f"t{k}")
            await sm.delete(Task, f"t{k}")
            await sm.create(Note, id=f"n{k}")
            clock.now += 1  # each note lives 10 s: the reads sweep them as they go
        clock.now += 11
        assert await sm.count(Note, where={"room": "main"}) == await sm.count(Task) == 0

    await churn(0, 200)  # warm-up: caches, locks kept for reuse
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    await churn(200, 2_000)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    here = [tracemalloc.Filter(True, "*/" + MemoryStore.__module__.replace(".", "/") + ".py")]
    grown = sum(d.size_diff for d in after.filter_traces(here).compare_to(before.filter_traces(here), "filename"))
    assert grown < 20_000, f"{grown / 1e3:.0f} KB kept in the memory store for 4,000 records that are gone"


async def test_the_store_lists_oldest_first_unless_asked_for_the_newest() -> None:
    """The store's own ``list`` (what a newest-first live list asks, filtered or not)."""
    store = MemoryStore()
    sm = app(store)
    spec = sm.spec(Task)
    for key in ("a", "b", "c", "d"):
        await sm.create(Task, id=key, room="main" if key != "c" else "else")
    assert [s["id"] for s in await store.list(spec, 2, 0)] == ["a", "b"]
    assert [s["id"] for s in await store.list(spec, 2, 0, newest=True)] == ["c", "d"]
    main = Query(where=(("room", "main"),))
    assert [s["id"] for s in await store.list(spec, 2, 0, query=main)] == ["a", "b"]
    assert [s["id"] for s in await store.list(spec, 2, 0, newest=True, query=main)] == ["b", "d"]
    assert [s["id"] for s in await store.list(spec, 2, 1, newest=True, query=main)] == ["a", "b"]

"""The SQL store as its users see it: the behaviours mutation testing (issue 19 point 11) found no
test for in ``stores/sql.py``, on real SQLite files and the real PostgreSQL: the table a migration
tool sees (column types, NULLs, keys, indexes), values at the edges of what a column holds, expiry to
the second and sweeps once per interval, list order with ties and NULLs and from the newest end,
SQLite's WAL and its write lock shared with other processes, bulk deletes, ``dump``/``restore``
(what ``sm.copy`` moves) and reads beside a held row.

Equivalent mutants (no behaviour a user can see changes), one line each; 42 of the 560 the run of
2026-12-06 judged (it was stopped at 560 of 904):

- ``_insert_ignoring`` 2, 3, ``restore`` 6: SQLite compiles PostgreSQL's ``INSERT ... ON CONFLICT DO
  NOTHING`` exactly as its own.
- ``SQLTransaction.get`` 19, ``count`` 12, ``restore`` 7, ``list`` 19, ``get`` 15, 21, ``dump`` 40,
  ``_sqlite_begin`` 3, 5: ``None`` for a flag is falsy like ``False``.
- ``_conditions`` 9: SQLAlchemy writes ``column == None`` as ``IS NULL`` too.
- ``Statements.update`` 3, 4, 14: the statement cache never hits: the same statement is built each time.
- ``ping`` 3, ``_sqlite_begin`` 13, 15, ``_sqlite_connect`` 7, 8: SQL keywords and PRAGMAs are
  case-insensitive.
- ``restore`` 8, ``_touch`` 22, 23: the first statement writes, so SQLite's plain ``BEGIN`` takes the
  write lock at once, waiting as ``BEGIN IMMEDIATE`` would (PostgreSQL ignores the flag).
- ``restore`` 13: deleting every expired row, not only those of the restored keys, drops only rows no
  read returns (as the next sweep does).
- ``_lock_id`` 11: ``int.from_bytes`` reads big-endian by default.
- ``_sqlite_connect`` 1: SQLAlchemy begins every transaction itself, so the driver's implicit ``BEGIN``
  (``isolation_level=""``) never runs; 4: a 51st try, 20 ms after the warning; 9: the cursor left
  open (``return``) is closed by the garbage collector.
- ``SQLTransaction._connection`` 6: PostgreSQL's transactions on the engine marked for writes are the
  same (the mark only matters to SQLite's ``BEGIN``).
- ``SQLSlot.__init__`` 3-5: ``_found`` sets ``_exists`` and ``_state`` before any use.
- ``SQLTransaction.hold`` 2, 4, 6 (a wrong table name): the name only decides whether to call
  ``store.table()`` before the transaction starts, which checks again itself; 56 (the lock id without
  the table): creators of one id in two tables queue on one lock, waiting, not results.
- ``dump`` 25: a row at its expiry is still dropped by ``_state``; 44 (no page size): the same rows in
  the same order, in one page.
- ``SQLTransaction.rollback`` 3, 4 (rollback not shielded): a cancelled rollback is completed by
  ``release``, shielded, whose close of the connection rolls the transaction back.
- ``SQLSlot.delete`` 7: a slot is neither saved nor deleted again after its delete (a unit refuses to
  re-create an id it deleted).

Not reached by that run; equivalent by reading (those marked * also survived this module under
scripts/mutant_check.py): ``Statements.select`` 2*, 10* (the cache, as for ``update``);
``entity_table`` 33* (columns are nullable by default); ``SQLStore.__init__`` 35* (``setdefault`` with
one argument sets ``None`` too), 67-70 (the width of the in-process queue per row changes waiting, not
results); ``SQLTransaction.hold`` 13* (that queue taken on SQLite instead of PostgreSQL: the same);
``_ensure`` 10 (a table made in a transaction, not noted, is checked again with ``IF NOT EXISTS``);
``commit`` 17 (chunks of 501 overlapping by one delete the same rows).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import JSON, BigInteger, Boolean, Float, Text, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.errors import EventError
from starmodel_asgi.query import Query
from starmodel_asgi.stores.base import Stored
from starmodel_asgi.stores.sql import SQLStore, metadata_for
from tests.support.services import require
from tests.test_sql_store import Clock

pytestmark = pytest.mark.anyio


class Cell(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "cell", "indexes": ["room"]}
    count: int = 0
    ratio: float = 0.5
    title: str = ""
    done: bool = False
    maybe: int | None = 5
    either: int | str = 0
    anything: Any = 1
    many: int | str | None = None
    room: str = "main"
    rank: int | None = None


class Note(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "note", "ttl": 10, "indexes": ["room"]}
    room: str = "main"


class Stay(Entity):
    model_config = {"scope": "session", "store": "sql", "name": "stay"}  # the store's default_ttl
    count: int = 0


class Kept(Entity):
    model_config = {"scope": "record", "name": "kept"}  # the memory store's: no table
    title: str = ""


class Backend:
    """One database for a test, with a table prefix of its own; drops its tables afterwards."""

    def __init__(self, kind: str, url: str, path: Path | None = None) -> None:
        self.kind, self.url, self.path = kind, url, path
        self.prefix = f"m{uuid.uuid4().hex[:8]}_"
        self.stores: list[SQLStore] = []

    def store(self, **options: Any) -> SQLStore:
        store = SQLStore(self.url, table_prefix=self.prefix, **options)
        self.stores.append(store)
        return store

    def app(self, store: SQLStore) -> StarModel:
        return StarModel([Cell, Note, Stay, Kept], secret_key="k", stores={"sql": store})

    async def run(self, sql: str) -> list[tuple[Any, ...]]:
        """A statement on a connection of its own (not the store's), committed; rows it returns."""
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql.replace("{p}", self.prefix)))
                return [tuple(r) for r in result.all()] if result.returns_rows else []
        finally:
            await engine.dispose()

    async def table_names(self) -> list[str]:
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                names: list[str] = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
                return names
        finally:
            await engine.dispose()

    async def inspected(self, what: str, name: str) -> Any:
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: getattr(inspect(sync), what)(f"{self.prefix}{name}"))
        finally:
            await engine.dispose()

    async def drop(self) -> None:
        for store in self.stores:
            await store.aclose()
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
                for name in names:
                    if name.startswith(self.prefix):
                        await conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
        finally:
            await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "sm.db"
        backend = Backend("sqlite", f"sqlite+aiosqlite:///{path}", path)
    else:
        backend = Backend("postgres", require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL"))
    try:
        yield backend
    finally:
        await backend.drop()


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[Backend]:
    path = tmp_path / "sm.db"
    backend = Backend("sqlite", f"sqlite+aiosqlite:///{path}", path)
    try:
        yield backend
    finally:
        await backend.drop()


def ids(items: list[Any]) -> list[str]:
    return [i.id for i in items]


def kind(column_type: Any) -> str:
    for general in (BigInteger, Float, Text, Boolean, JSON):
        if isinstance(column_type, general):
            return general.__name__
    return type(column_type).__name__


# -- the table


async def test_the_table_a_migration_tool_sees(db: Backend) -> None:
    """Catches a column of the wrong type (an optional int as JSON, a union as a number), a field
    column refusing NULL, bookkeeping columns without their key, NOT NULL or index."""
    sm = db.app(db.store())
    await sm.create(Cell, id="c")
    columns = {c["name"]: c for c in await db.inspected("get_columns", "cell")}
    assert {name: kind(c["type"]) for name, c in columns.items()} == {
        "_key": "Text", "_created": "Float", "_expires": "Float", "id": "Text",
        "count": "BigInteger", "ratio": "Float", "title": "Text", "done": "Boolean", "maybe": "BigInteger",
        "either": "JSON", "anything": "JSON", "many": "JSON", "room": "Text", "rank": "BigInteger",
    }  # fmt: skip
    assert [name for name, c in columns.items() if not c["nullable"]] == ["_key", "_created"]
    assert (await db.inspected("get_pk_constraint", "cell"))["constrained_columns"] == ["_key"]
    indexes = await db.inspected("get_indexes", "cell")
    assert sorted(tuple(i["column_names"]) for i in indexes) == [("_expires",), ("room",)]
    tables = metadata_for([Cell, Note, Kept], table_prefix=db.prefix).tables
    assert sorted(tables) == [f"{db.prefix}cell", f"{db.prefix}note"]
    assert [c.name for c in tables[f"{db.prefix}cell"].columns] == list(columns)


async def test_none_and_each_member_of_a_union_come_back_as_saved(db: Backend) -> None:
    """Catches ``None`` in an optional field read back as the field's default, a union's value
    stored as the wrong type, and a NULL column (added after the row) not read as the default."""
    sm = db.app(db.store())
    await sm.create(Cell, id="c", maybe=None, either="x", anything=None, many=3)
    got = await sm.get(Cell, "c")
    assert (got.maybe, got.either, got.anything, got.many) == (None, "x", None, 3)
    async with sm.edit(Cell, "c") as cell:
        cell.maybe, cell.either, cell.anything, cell.many = 8, 7, {"a": [1]}, "y"
    got = await sm.get(Cell, "c")
    assert (got.maybe, got.either, got.anything, got.many) == (8, 7, {"a": [1]}, "y")
    await db.run('UPDATE "{p}cell" SET count = NULL, title = NULL, maybe = NULL')
    got = await sm.get(Cell, "c")
    assert (got.count, got.title, got.maybe) == (0, "", None)


async def test_integers_at_the_64_bit_edges_and_text_with_nul(db: Backend) -> None:
    """Catches an off-by-one at either end of a 64-bit column, a bound applied to JSON columns,
    and a refusal that does not name the entity, each field and what is wrong."""
    sm = db.app(db.store())
    await sm.create(Cell, id="top", count=2**63 - 1, rank=-(2**63))
    got = await sm.get(Cell, "top")
    assert (got.count, got.rank) == (2**63 - 1, -(2**63))
    await sm.create(Cell, id="json", many="a\x00b")  # a JSON column holds it
    assert (await sm.get(Cell, "json")).many == "a\x00b"
    for fields in ({"count": 2**63}, {"rank": -(2**63) - 1}):
        with pytest.raises(EventError) as refused:
            await sm.create(Cell, id="big", **fields)
        assert refused.value.status == 422 and refused.value.entity == "cell"
        assert refused.value.errors == {name: "Number too large to store (64-bit integers only)" for name in fields}
    with pytest.raises(EventError) as refused:
        await sm.create(Cell, id="both", count=2**64, title="a\x00b")
    assert refused.value.errors == {
        "count": "Number too large to store (64-bit integers only)",
        "title": "Text cannot contain NUL characters",
    }
    # a bare number in a JSON column is bounded too (SQLite would keep a float of it, which no
    # longer validates); inside a list or a dict it is JSON text and comes back whole
    with pytest.raises(EventError) as refused:
        await sm.create(Cell, id="wide", many=2**64)
    assert refused.value.errors == {"many": "Number too large to store (64-bit integers only)"}
    await sm.create(Cell, id="deep", anything={"a": [2**70]})
    assert (await sm.get(Cell, "deep")).anything == {"a": [2**70]}
    assert ids(await sm.list(Cell)) == ["top", "json", "deep"]


# -- expiry, sweeps and order


async def test_a_record_goes_exactly_at_its_ttl_from_lists_counts_and_reads(db: Backend) -> None:
    """Catches a row still listed, counted or read at the second it expires."""
    clock = Clock()
    sm = db.app(db.store(clock=clock, sweep_interval=3600))
    for key in ("n1", "n2"):
        await sm.create(Note, id=key)
    clock.now += 5
    await sm.create(Note, id="n3")
    await sm.create(Cell, id="c")  # no TTL: never expires
    clock.now += 5  # n1 and n2 are exactly 10 s old
    assert ids(await sm.list(Note)) == ["n3"]
    assert ids(await sm.list(Note, where={"room": "main"})) == ["n3"]
    assert await sm.count(Note) == 1
    with pytest.raises(LookupError):
        await sm.get(Note, "n1")
    assert (await sm.get(Note, "n3")).id == "n3"  # a read: 10 s more from now
    clock.now += 9.5
    assert await sm.count(Note) == 1
    clock.now += 0.5
    assert await sm.count(Note) == 0
    assert ids(await sm.list(Cell)) == ["c"]


async def test_a_sweep_runs_once_per_interval_and_drops_what_expired_by_then(
    db: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches a sweep skipped at its interval, run on every write, or keeping a row expiring as
    it runs; and its log line."""
    caplog.set_level(logging.DEBUG, logger="starmodel_asgi")
    clock = Clock()
    sm = db.app(db.store(clock=clock, sweep_interval=10))

    async def write(key: str) -> list[str]:
        await sm.create(Note, id=key)
        return [r[0] for r in await db.run('SELECT _key FROM "{p}note" ORDER BY _key')]

    await sm.create(Note, id="a")  # expires at 10 s
    clock.now += 6
    assert await write("b") == ["a", "b"]  # 6 s since the first sweep: none
    clock.now += 4
    assert await write("c") == ["b", "c"]  # "a" expires as this sweep runs: swept
    clock.now += 5
    assert await write("d") == ["b", "c", "d"]  # "b" expired a second ago: not swept yet
    clock.now += 5
    assert await write("e") == ["d", "e"]
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped")]
    assert dropped == [f"dropped 1 expired rows from {db.prefix}note", f"dropped 2 expired rows from {db.prefix}note"]


async def test_ties_sort_by_id_nulls_come_first_and_the_newest_end_reads_back_in_order(db: Backend) -> None:
    """Catches ties (same creation time) in another order, NULLs sorted at the wrong end, and a
    list from the newest end not reversed back."""
    clock = Clock()
    store = db.store(clock=clock)
    sm = db.app(store)
    spec = sm.spec(Cell)
    for key, rank in (("f", 1), ("b", 2), ("a", None), ("c", 1)):
        await sm.create(Cell, id=key, rank=rank)  # one creation time
    clock.now += 1
    for key, rank in (("e", 1), ("d", None)):
        await sm.create(Cell, id=key, rank=rank)
    assert ids(await sm.list(Cell)) == ["a", "b", "c", "f", "d", "e"]
    assert ids(await sm.list(Cell, order="-created")) == ["e", "d", "f", "c", "b", "a"]
    assert ids(await sm.list(Cell, order="rank")) == ["a", "d", "c", "f", "e", "b"]
    assert ids(await sm.list(Cell, order="-rank")) == ["b", "c", "f", "e", "a", "d"]

    async def listed(limit: int, offset: int, newest: bool | None = None, **query: Any) -> list[str]:
        if newest is None:  # the default
            return [s["id"] for s in await store.list(spec, limit, offset, query=Query(**query))]
        return [s["id"] for s in await store.list(spec, limit, offset, newest, Query(**query))]

    assert await listed(2, 0) == ["a", "b"]  # from the oldest end unless asked
    assert await listed(2, 0, True) == ["d", "e"]
    assert await listed(2, 1, True) == ["f", "d"]
    assert await listed(2, 0, True, descending=True) == ["b", "a"]
    assert await listed(3, 0, True, order="rank") == ["f", "e", "b"]
    assert await listed(2, 0, True, order="rank", descending=True) == ["a", "d"]
    assert await listed(9, 0, where=(("rank", None),)) == ["a", "d"]
    assert await store.count(spec, Query(where=(("rank", None),))) == 2
    assert await store.count(spec, Query(where=(("rank", 1),))) == 3


async def test_reading_a_session_pushes_its_expiry_back(db: Backend) -> None:
    """Catches a read or a hold that does not extend the TTL, or extends it by the wrong amount."""
    clock = Clock()
    store = db.store(default_ttl=10, clock=clock, sweep_interval=3600)
    spec = db.app(store).spec(Stay)
    async with store.hold(spec, "s") as slot:
        await slot.save({"count": 1})
    clock.now += 8
    async with store.hold(spec, "s") as slot:  # held and loaded, not saved: 10 s from now
        assert await slot.load() == {"count": 1}
    clock.now += 8
    assert await store.get(spec, "s") == {"count": 1}  # 10 s from now again
    clock.now += 9.5
    assert await store.get(spec, "s") == {"count": 1}
    clock.now += 10
    assert await store.get(spec, "s") is None  # at its expiry: not pushed back
    assert await store.get(spec, "s") is None
    async with store.hold(spec, "s") as slot:  # held, found expired, not saved: stays expired
        assert await slot.load() is None
    assert await store.get(spec, "s") is None
    assert [r[0] for r in await db.run('SELECT _key FROM "{p}stay"')] == ["s"]  # expired, not swept
    async with store.hold(spec, "s") as slot:  # an expired row is written again as new
        assert await slot.load() is None
        await slot.save({"count": 5})
        await slot.save(text='{"count": 6}')  # and again in the same hold, as JSON
        with pytest.raises(AssertionError, match=r"^save\(\) needs the state or its JSON$"):
            await slot.save()
    assert await store.get(spec, "s") == {"count": 6}
    txn = store.begin()
    try:
        await txn.hold(spec, "other")
        assert await txn.get(spec, "s") == {"count": 6}  # read inside a transaction
        clock.now += 10
        assert await txn.get(spec, "s") is None
        await txn.rollback()
    finally:
        await txn.release()


async def test_a_record_made_again_after_it_expired_is_the_newest(db: Backend) -> None:
    """Catches an expired row written again keeping its old creation time (or a stale UPDATE)."""
    clock = Clock()
    sm = db.app(db.store(clock=clock, sweep_interval=3600))
    await sm.create(Note, id="old", room="a")
    clock.now += 9.5
    await sm.create(Note, id="mid")
    clock.now += 1
    await sm.create(Note, id="old", room="b")  # expired half a second ago, not swept
    assert [(n.id, n.room) for n in await sm.list(Note)] == [("mid", "main"), ("old", "b")]


async def test_the_documented_default_sweep_interval_is_a_minute(db: Backend) -> None:
    clock = Clock()
    sm = db.app(db.store(clock=clock))
    await sm.create(Note, id="a")  # the first sweep; "a" expires at 10 s
    clock.now += 59.5
    await sm.create(Note, id="b")
    assert len(await db.run('SELECT _key FROM "{p}note"')) == 2
    clock.now += 0.5
    await sm.create(Note, id="c")
    assert sorted(r[0] for r in await db.run('SELECT _key FROM "{p}note"')) == ["b", "c"]


# -- transactions


async def test_one_transaction_deletes_more_rows_than_one_statement_takes(db: Backend) -> None:
    """Catches the bulk delete at commit skipping a row between its 500-key statements."""
    store = db.store()
    spec = db.app(store).spec(Note)
    keys = [f"k{n:04d}" for n in range(1002)]
    assert await store.restore(spec, [Stored(key, json.dumps({"id": key}), None) for key in keys]) == 1002
    txn = store.begin()
    try:
        for key in keys[:-1]:
            await (await txn.hold(spec, key)).delete()
        await (await txn.hold(spec, "never-made")).delete()
        await txn.commit()
    finally:
        await txn.release()
    assert [s.key async for s in store.dump(spec)] == [keys[-1]]


async def test_a_table_made_in_a_rolled_back_transaction_is_made_again(db: Backend) -> None:
    """Catches a table taken as made by a transaction that did not commit, and a transaction's
    reads not seeing its own writes or the rows already saved."""
    store = db.store()
    sm = db.app(store)
    cell, note = sm.spec(Cell), sm.spec(Note)
    await sm.create(Cell, id="saved", count=3)
    txn = store.begin()
    assert await txn.get(cell, "saved") == (await store.get(cell, "saved"))  # no connection yet
    try:
        slot = await txn.hold(cell, "new")
        await slot.save({"id": "new", "count": 4})
        assert (await txn.get(cell, "new") or {})["count"] == 4
        assert (await txn.get(cell, "saved") or {})["count"] == 3
        with anyio.fail_after(10):  # the table made by another transaction would wait for this one
            assert await txn.get(note, "n") is None  # its table made inside this transaction
            await (await txn.hold(note, "n")).save({"id": "n"})
        await txn.rollback()
    finally:
        await txn.release()
    assert ids(await sm.list(Cell)) == ["saved"]
    await sm.create(Note, id="n2")
    assert ids(await sm.list(Note)) == ["n2"]
    txn = store.begin()
    await txn.rollback()  # nothing held: nothing to do
    await txn.commit()
    await txn.release()


async def test_a_cancelled_holder_rolls_back_and_lets_the_row_go(db: Backend) -> None:
    """Catches a rollback or a release cut short by the cancellation (the row, or SQLite's
    write lock, kept by a connection nobody returns)."""
    store = db.store()
    sm = db.app(store)
    await sm.create(Cell, id="c", count=1)
    spec = sm.spec(Cell)
    held = anyio.Event()

    async def holder() -> None:
        async with store.hold(spec, "c") as slot:
            await slot.save({"id": "c", "count": 99})
            held.set()
            await anyio.sleep(60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await held.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(10):
        async with sm.edit(Cell, "c") as c:
            c.count += 1
    assert (await sm.get(Cell, "c")).count == 2


async def test_a_read_does_not_wait_for_a_held_row(db: Backend) -> None:
    """Catches a read (which pushes a session's expiry back) queueing behind the event that
    holds the row; the holder pushes it back itself."""
    clock = Clock()
    store = db.store(default_ttl=10, clock=clock)
    spec = db.app(store).spec(Stay)
    async with store.hold(spec, "s") as slot:
        await slot.save({"count": 1})
    clock.now += 5
    async with store.hold(spec, "s") as slot:
        with anyio.fail_after(5):
            assert await store.get(spec, "s") == {"count": 1}
        await slot.save({"count": 2})
    clock.now += 9.5
    assert await store.get(spec, "s") == {"count": 2}


async def test_creators_of_the_same_new_ids_in_two_processes_make_each_once(db: Backend) -> None:
    """Catches two creators of one new id both inserting (no row to lock yet: PostgreSQL's
    advisory lock on the key), and a lock id out of PostgreSQL's range for some keys."""
    apps = [db.app(db.store()), db.app(db.store())]
    await apps[0].create(Cell, id="warm")
    await apps[1].create(Cell, id="warm2")
    made: list[tuple[str, int]] = []
    refused: list[str] = []

    async def create(n: int, key: str) -> None:
        try:
            await apps[n].create(Cell, id=key, count=n)
            made.append((key, n))
        except EventError as exc:
            assert exc.status == 409
            refused.append(key)

    keys = [f"new-{n}" for n in range(16)]
    async with anyio.create_task_group() as tg:
        for key in keys:
            for n in (0, 1):
                tg.start_soon(create, n, key)
    assert sorted(key for key, _ in made) == sorted(keys) == sorted(refused)
    for key, n in made:
        assert (await apps[1 - n].get(Cell, key)).count == n


# -- SQLite: WAL, and one write lock shared with other processes


def raw_writer(path: Path | None) -> sqlite3.Connection:
    """Another process's connection to the file, holding its write lock until it commits."""
    assert path is not None
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def journal_mode(path: Path | None) -> str:
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return mode


async def test_sqlite_reads_do_not_wait_for_another_process_writing(lite: Backend) -> None:
    """Catches reads that take the write lock (``BEGIN IMMEDIATE``), or a file not in WAL mode
    (where a writer blocks readers)."""
    store = lite.store(lock_timeout=1)
    sm = lite.app(store)
    await sm.create(Cell, id="c", count=1)
    other = raw_writer(lite.path)
    try:
        other.execute(f'UPDATE "{lite.prefix}cell" SET count = 2')
        with anyio.fail_after(0.9):
            assert (await sm.get(Cell, "c")).count == 1  # the last committed state
            assert await sm.count(Cell) == 1
            assert ids(await sm.list(Cell)) == ["c"]
            assert [s.key async for s in store.dump(sm.spec(Cell))] == ["c"]
        other.execute("COMMIT")
    finally:
        other.close()
    assert (await sm.get(Cell, "c")).count == 2
    assert journal_mode(lite.path) == "wal"


async def test_sqlite_writes_queue_for_another_process_and_build_on_its_commit(lite: Backend) -> None:
    """Catches a write that begins without the write lock: it reads the old row, then cannot
    write once the other process commits (or overwrites its change)."""
    sm = lite.app(lite.store())
    await sm.create(Cell, id="c", count=1)
    other = raw_writer(lite.path)
    try:
        other.execute(f'UPDATE "{lite.prefix}cell" SET count = count + 10')

        async def increment() -> None:
            async with sm.edit(Cell, "c") as cell:
                cell.count += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(increment)
            await anyio.sleep(0.3)
            other.execute("COMMIT")
    finally:
        other.close()
    assert (await sm.get(Cell, "c")).count == 12


@pytest.mark.parametrize("option", ["lock_timeout", "engine_options"])
async def test_sqlite_writes_give_up_after_the_lock_timeout(lite: Backend, option: str) -> None:
    """Catches ``lock_timeout`` (or the engine's own ``connect_args``) not reaching the driver."""
    options: dict[str, Any] = (
        {"lock_timeout": 0.2} if option == "lock_timeout" else {"engine_options": {"connect_args": {"timeout": 0.2}}}
    )
    sm = lite.app(lite.store(**options))
    await sm.create(Cell, id="c")
    other = raw_writer(lite.path)
    try:
        with pytest.raises(Exception, match="locked"):
            with anyio.fail_after(1.5):
                await sm.create(Cell, id="d")
    finally:
        other.close()
    assert ids(await sm.list(Cell)) == ["c"]


async def test_a_new_sqlite_file_goes_to_wal_once_another_process_lets_go(
    lite: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches the switch to WAL failing at once on a file another process is writing (two
    workers starting on one new file), or a warning logged for a wait that ended."""
    assert lite.path is not None
    with closing(sqlite3.connect(lite.path)) as made:
        made.execute("CREATE TABLE other (x)")
    other = raw_writer(lite.path)  # in the old journal mode
    store = lite.store()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.ping)
            await anyio.sleep(0.2)
            other.execute("COMMIT")
    finally:
        other.close()
    assert journal_mode(lite.path) == "wal"
    assert not [r for r in caplog.records if "WAL" in r.getMessage()]


async def test_a_sqlite_file_kept_locked_is_used_without_wal_after_a_warning(
    lite: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches a connection that never stops retrying, or stops without saying so once."""
    assert lite.path is not None
    with closing(sqlite3.connect(lite.path)) as made:
        made.execute("CREATE TABLE other (x)")
    other = raw_writer(lite.path)
    store = lite.store()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.ping)
            await anyio.sleep(3)  # 50 tries, 20 ms apart: given up
            other.execute("COMMIT")
    finally:
        other.close()
    warned = [r for r in caplog.records if "WAL" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in warned] == [
        (logging.WARNING, "could not switch SQLite to WAL yet: database is locked")
    ]
    sm = lite.app(store)
    await sm.create(Cell, id="c")
    assert ids(await sm.list(Cell)) == ["c"]


# -- PostgreSQL: deadlocks and lost connections


@pytest.fixture
async def pg() -> AsyncIterator[Backend]:
    backend = Backend("postgres", require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL"))
    try:
        yield backend
    finally:
        await backend.drop()


async def test_a_postgres_deadlock_is_contention_naming_the_row(pg: Backend) -> None:
    """Catches a deadlock passed on as a database error instead of the store's ``Contention``
    (which the dispatcher answers with a 503 to retry)."""
    stores = [pg.store(), pg.store()]
    sm = pg.app(stores[0])
    spec = sm.spec(Cell)
    await sm.create(Cell, id="a")
    await sm.create(Cell, id="b")
    txns = [stores[0].begin(), stores[1].begin()]
    failures: list[BaseException] = []
    both = anyio.Event()
    first: list[int] = []

    async def cross(n: int, mine: str, theirs: str) -> None:
        try:
            await txns[n].hold(spec, mine)
            first.append(n)
            if len(first) == 2:
                both.set()
            await both.wait()
            await txns[n].hold(spec, theirs)
            await txns[n].commit()
        except Exception as exc:
            failures.append(exc)
            await txns[n].rollback()
        finally:
            await txns[n].release()

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cross, 0, "a", "b")
            tg.start_soon(cross, 1, "b", "a")
    assert len(failures) == 1 and type(failures[0]).__name__ == "Contention"
    assert str(failures[0]) in (
        f"deadlock detected holding {pg.prefix}cell 'a'",
        f"deadlock detected holding {pg.prefix}cell 'b'",
    )


async def test_a_lost_postgres_connection_is_logged_and_the_next_holder_gets_a_new_one(
    pg: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches a failed rollback (the connection gone) passed on or not logged."""
    name = f"sm{pg.prefix}"
    store = pg.store(engine_options={"connect_args": {"server_settings": {"application_name": name}}})
    sm = pg.app(store)
    await sm.create(Cell, id="c", count=1)
    with pytest.raises(RuntimeError, match="after the connection went"):
        async with sm.edit(Cell, "c") as cell:
            cell.count = 5
            await pg.run(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'")
            raise RuntimeError("after the connection went")
    warned = [r for r in caplog.records if r.getMessage() == "rolling back a SQL transaction failed"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING and warned[0].exc_info
    assert (await sm.get(Cell, "c")).count == 1


# -- dump and restore (what sm.copy moves)


async def test_dump_reads_every_live_row_a_page_at_a_time_with_its_times(db: Backend) -> None:
    """Catches a page boundary losing or repeating rows (ties on creation time go by key), a
    table made just to be dumped, and wrong creation times or time left."""
    clock = Clock()
    store = db.store(clock=clock, sweep_interval=3600)
    spec = db.app(store).spec(Cell)
    assert [s async for s in store.dump(spec)] == []
    assert f"{db.prefix}cell" not in await db.table_names()  # not made for this
    keys = [f"k{n:04d}" for n in range(1001)]
    items = [
        Stored(key, json.dumps({"id": key, "count": n}), None, 6.0 if n % 2 else 5.0) for n, key in enumerate(keys)
    ]
    assert await store.restore(spec, items[::-1]) == 1001
    dumped = [s async for s in store.dump(spec)]
    assert [s.key for s in dumped] == keys[::2] + keys[1::2]
    assert [s.created for s in dumped] == [5.0] * 501 + [6.0] * 500
    assert {s.expires_in for s in dumped} == {None}
    assert json.loads(dumped[-1].text)["count"] == 999
    assert (await store.get(spec, "k0007") or {})["count"] == 7


async def test_restore_keeps_live_rows_replaces_expired_ones_and_orders_new_ones_as_given(db: Backend) -> None:
    """Catches restore overwriting a live row, keeping an expired one, new rows in another order
    than given, and a TTL not counted from now; all or nothing when a value cannot be stored."""
    clock = Clock()
    store = db.store(clock=clock, sweep_interval=3600)
    spec = db.app(store).spec(Cell)

    def item(key: str, count: int, expires_in: float | None) -> Stored:
        return Stored(key, json.dumps({"id": key, "count": count}), expires_in)

    assert await store.restore(spec, [item("x", 1, 30), item("y", 2, None), item("w", 3, 5)]) == 3
    clock.now += 5  # "w" expires now
    dumped = [(s.key, json.loads(s.text)["count"], s.expires_in) async for s in store.dump(spec)]
    assert dumped == [("x", 1, 25), ("y", 2, None)]
    made = [s.created async for s in store.dump(spec)]  # a microsecond apart, from then
    assert made == [pytest.approx(1_000_000.0, abs=1e-9), pytest.approx(1_000_000.000001, abs=1e-9)]
    assert await store.restore(spec, [item("w", 4, None), item("x", 5, None)]) == 1  # "w" replaced
    dumped = [(s.key, json.loads(s.text)["count"], s.expires_in) async for s in store.dump(spec)]
    assert dumped == [("x", 1, 25), ("y", 2, None), ("w", 4, None)]
    with pytest.raises(EventError) as refused:
        await store.restore(spec, [item("v", 1, None), item("big", 2**63, None)])
    assert refused.value.status == 422 and refused.value.errors == {
        "count": "Number too large to store (64-bit integers only)"
    }
    assert [s.key async for s in store.dump(spec)] == ["x", "y", "w"]


async def test_processes_starting_together_make_each_table_once(db: Backend) -> None:
    """Catches two processes' CREATE TABLE racing (PostgreSQL refuses the second one's catalog
    row), and an index made a second time failing."""
    apps = [db.app(db.store()) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for n, sm in enumerate(apps):
            tg.start_soon(partial(sm.create, Cell, id=f"c{n}", room="r"))
    assert await apps[0].count(Cell, where={"room": "r"}) == 4
    later = db.app(db.store())  # the tables and indexes are there: made if missing
    assert await later.count(Cell) == 4
    await later.create(Note, id="n")


async def test_sql_rows_are_columns_not_json_text(db: Backend) -> None:
    """A custom caller asking a SQL store for JSON text is told to ask for the state instead."""
    store = db.store()
    spec = db.app(store).spec(Cell)
    assert store.keeps_json is False
    with pytest.raises(NotImplementedError, match=r"^SQL rows are columns: use get\(\)$"):
        await store.get_text(spec, "c")
    async with store.hold(spec, "c") as slot:
        assert slot.keeps_json is False
        with pytest.raises(NotImplementedError, match=r"^SQL rows are columns: use load\(\)$"):
            await slot.load_text()


async def test_sqlite_connections_wait_a_minute_for_the_write_lock_by_default(lite: Backend) -> None:
    async def busy_timeout(store: SQLStore) -> int:
        async with store.engine.connect() as conn:
            return int((await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one())

    assert await busy_timeout(lite.store()) == 60_000
    assert await busy_timeout(lite.store(lock_timeout=2.5)) == 2_500


async def test_a_read_inside_a_transaction_locks_nothing(pg: Backend) -> None:
    """Catches a unit's read of an instance it does not hold taking the row's lock (so another
    process's event on it would wait for this whole unit)."""
    stores = [pg.store(), pg.store()]
    sm = pg.app(stores[0])
    spec = sm.spec(Cell)
    await sm.create(Cell, id="held")
    await sm.create(Cell, id="read", count=1)
    txn = stores[0].begin()
    try:
        await txn.hold(spec, "held")
        assert (await txn.get(spec, "read") or {})["count"] == 1
        with anyio.fail_after(5):
            async with stores[1].hold(spec, "read") as slot:
                await slot.save({"id": "read", "count": 2})
        await txn.commit()
    finally:
        await txn.release()
    assert (await sm.get(Cell, "read")).count == 2


async def test_a_transaction_reading_a_table_without_a_new_fields_column_adds_it(
    db: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches the entity lost on the way to the schema check of a table first met inside a
    transaction (a read there, not a hold)."""
    sm = db.app(db.store())
    await sm.create(Cell, id="c", count=3)
    await sm.create(Note, id="n")
    await db.run('ALTER TABLE "{p}cell" DROP COLUMN rank')  # as made before the field was added
    store = db.store()
    txn = store.begin()
    try:
        await txn.hold(sm.spec(Note), "n")
        assert await txn.get(sm.spec(Cell), "c") == {
            "id": "c", "count": 3, "ratio": 0.5, "title": "", "done": False, "maybe": 5,
            "either": 0, "anything": 1, "many": None, "room": "main", "rank": None,
        }  # fmt: skip
        await txn.commit()
    finally:
        await txn.release()
    assert any(r.getMessage().startswith("Cell: added column rank") for r in caplog.records)
    assert (await db.app(store).get(Cell, "c")).rank is None
    await db.run('ALTER TABLE "{p}cell" DROP COLUMN rank')  # again, for a hold in a transaction
    store = db.store()
    txn = store.begin()
    try:
        await txn.hold(sm.spec(Note), "n")
        slot = await txn.hold(sm.spec(Cell), "c")
        assert (await slot.load() or {})["count"] == 3
        await slot.save({"id": "c", "count": 4, "rank": 7})
        await txn.commit()
    finally:
        await txn.release()
    assert [(c.count, c.rank) for c in await sm.list(Cell)] == [(4, 7)]


async def test_creators_of_different_new_ids_do_not_wait_for_each_other(pg: Backend) -> None:
    """Catches every new id of every table queueing on one lock (PostgreSQL's advisory lock for
    rows not made yet): a unit making one record would hold up every other unit making one."""
    stores = [pg.store(), pg.store()]
    sm = pg.app(stores[0])
    await sm.create(Cell, id="warm")
    await pg.app(stores[1]).create(Cell, id="warm2")
    spec = sm.spec(Cell)
    txn = stores[0].begin()
    try:
        await (await txn.hold(spec, "first")).save({"id": "first"})
        with anyio.fail_after(5):
            async with stores[1].hold(spec, "second") as slot:
                await slot.save({"id": "second"})
        await txn.commit()
    finally:
        await txn.release()
    assert ids(await sm.list(Cell)) == ["warm", "warm2", "first", "second"]


async def test_a_units_first_use_of_a_table_does_not_hold_up_other_processes_making_theirs(pg: Backend) -> None:
    """Catches a table made inside the unit's own transaction when it need not be: the lock that
    serialises CREATE TABLE between processes would then be held until the unit ends."""
    stores = [pg.store(), pg.store()]
    spec = pg.app(stores[0]).spec(Cell)
    txn = stores[0].begin()
    try:
        await (await txn.hold(spec, "c")).save({"id": "c"})
        with anyio.fail_after(5):
            await pg.app(stores[1]).create(Note, id="n")
        await txn.commit()
    finally:
        await txn.release()
    assert ids(await pg.app(stores[1]).list(Cell)) == ["c"]


async def test_a_creator_that_waited_for_another_holds_the_row_it_then_finds(pg: Backend) -> None:
    """Catches the row made by the first creator read, but not locked, by the one that queued
    behind it: a third holder would then get it at the same time."""
    stores = [pg.store(), pg.store(), pg.store()]
    spec = pg.app(stores[0]).spec(Cell)
    for n, store in enumerate(stores):  # each has made the table (and its connection) before
        await pg.app(store).create(Cell, id=f"warm{n}")
    first = stores[0].begin()
    await (await first.hold(spec, "k")).save({"id": "k", "count": 1})
    found = anyio.Event()
    release = anyio.Event()

    async def second() -> None:
        async with stores[1].hold(spec, "k") as slot:
            assert (await slot.load() or {})["count"] == 1
            found.set()
            await release.wait()
            await slot.save({"id": "k", "count": 2})

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.sleep(0.3)  # queued on the key's advisory lock
        await first.commit()
        await first.release()
        with anyio.fail_after(10):
            await found.wait()
        with anyio.move_on_after(2) as waited:
            async with stores[2].hold(spec, "k"):
                pass
        assert waited.cancelled_caught  # the second creator holds the row
        release.set()
    assert (await pg.app(stores[2]).get(Cell, "k")).count == 2

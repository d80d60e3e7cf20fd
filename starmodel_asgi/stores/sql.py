"""SQL store on SQLAlchemy's asyncio API: one table per entity, the row locked while held.

SQLite (aiosqlite) and PostgreSQL (asyncpg) are supported. Each ``hold`` is one transaction:
on PostgreSQL it locks the row (``SELECT ... FOR UPDATE``, plus a transaction-scoped advisory
lock on the key while the row does not exist yet); on SQLite it starts with ``BEGIN IMMEDIATE``,
which takes the database's write lock. Either lock is held until the block commits, so generator
events keep the instance across their yields and commit once at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    MetaData,
    Row,
    Table,
    Text,
    Update,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.types import TypeEngine

from starmodel_asgi.errors import invalid
from starmodel_asgi.logs import STORES, get_logger
from starmodel_asgi.query import EVERYTHING, Query
from starmodel_asgi.settings import SchemaMode, schema_mode
from starmodel_asgi.spec import EntitySpec, spec_of
from starmodel_asgi.stores.base import Alone, Contention, KeyedLocks, State, Stored, ttl_for
from starmodel_asgi.stores.schema import reconcile

logger = get_logger(STORES)

#: Bookkeeping columns. Pydantic fields cannot start with "_", so these never collide.
KEY, CREATED, EXPIRES = "_key", "_created", "_expires"
DEFAULT_PREFIX = "starmodel_"

_SCALARS: dict[Any, type[TypeEngine[Any]]] = {bool: Boolean, int: BigInteger, float: Float, str: Text}
_DDL_LOCK = 0x5374_6172_4D6F_646C  # advisory lock id serialising CREATE TABLE between processes
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected


def _column_type(annotation: Any) -> tuple[type[TypeEngine[Any]], bool]:
    """The column type for a field (scalars as themselves, anything else as JSON) and whether
    the field accepts ``None``."""
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        annotation = members[0] if len(members) == 1 else object
    return _SCALARS.get(annotation, JSON), nullable or annotation is Any


def _check_storable(spec: EntitySpec, table: Table, values: dict[str, Any]) -> None:
    """Values a valid entity may hold but a column cannot: a client's fault (422), found before
    the database refuses them mid-transaction."""
    errors: dict[str, str] = {}
    for name, value in values.items():
        column_type = type(table.c[name].type)
        # a JSON column holding a bare number too: SQLite reads its text as a number (numeric
        # affinity) and would keep a float of it, which no longer validates as the int it was
        whole = isinstance(value, int) and not isinstance(value, bool)
        if column_type in (BigInteger, JSON) and whole and not -(2**63) <= value < 2**63:
            errors[name] = "Number too large to store (64-bit integers only)"
        elif column_type is Text and isinstance(value, str) and "\x00" in value:
            errors[name] = "Text cannot contain NUL characters"
    if errors:
        raise invalid(spec.name, errors)


def _conditions(table: Table, query: Query, now: float) -> list[ColumnElement[bool]]:
    """Live rows matching the query's filters (``None`` is ``IS NULL``)."""
    conditions = [or_(table.c[EXPIRES].is_(None), table.c[EXPIRES] > now)]
    for name, value in query.where:
        column = table.c[name]
        conditions.append(column.is_(None) if value is None else column == value)
    return conditions


def _order(table: Table, query: Query, newest: bool) -> list[UnaryExpression[Any]]:
    """The query's order (``NULL`` first, ties by creation), reversed for the ``newest`` end."""
    keys: list[tuple[ColumnElement[Any], bool]] = [(table.c[CREATED], False), (table.c[KEY], False)]
    if query.order is not None:
        keys.insert(0, (table.c[query.order], query.descending))
    else:
        keys = [(column, query.descending) for column, _ in keys]
    order = []
    for column, descending in keys:
        descending ^= newest
        order.append(column.desc().nulls_last() if descending else column.asc().nulls_first())
    return order


def table_name(spec: EntitySpec, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}{spec.name}"


def entity_table(spec: EntitySpec, metadata: MetaData, prefix: str = DEFAULT_PREFIX) -> Table:
    """The table for one entity: its key, creation and expiry times, then one column per field."""
    columns = [
        Column(KEY, Text, primary_key=True),
        Column(CREATED, Float, nullable=False),
        Column(EXPIRES, Float, nullable=True, index=True),
    ]
    for name, field in spec.entity.model_fields.items():
        columns.append(Column(name, _column_type(field.annotation)[0], nullable=True, index=name in spec.indexes))
    return Table(table_name(spec, prefix), metadata, *columns)


def metadata_for(entities: Iterable[type[BaseModel]], table_prefix: str = DEFAULT_PREFIX) -> MetaData:
    """The tables ``SQLStore`` uses for the ``store="sql"`` entities among ``entities``, for
    Alembic: ``target_metadata = metadata_for(sm.entities.values())`` in ``env.py``."""
    metadata = MetaData()
    for entity in entities:
        spec = spec_of(entity)
        if spec.store == "sql":
            entity_table(spec, metadata, table_prefix)
    return metadata


#: Rows read or written per transaction when copying.
_PAGE = 500


def _insert_ignoring(dialect: str) -> Callable[[Table], Any]:
    """The dialect's ``INSERT`` that has ``on_conflict_do_nothing``."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    return postgresql_insert


def _lock_id(table: str, key: str) -> int:
    digest = hashlib.blake2b(f"{table}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin); WAL lets readers run beside the writer.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Switching a new file to WAL fails at once ("database is locked", no busy wait) while another
    # process writes to it in the old mode, as two workers starting on one new file do: retry a
    # little, then go on (the mode is the file's: the other process or a later connection sets it).
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:
            if "locked" not in str(exc):
                raise
            if attempt == 49:
                logger.warning("could not switch SQLite to WAL yet: %s", exc)
            time.sleep(0.02)
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get("starmodel_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


#: The bound parameter naming the instance's key in the statements built once per table.
KEY_PARAM = "starmodel_key"


class Statements:
    """The SELECT and UPDATE of each table, built once (SQLAlchemy then skips building and
    caching a statement on every event)."""

    def __init__(self) -> None:
        self._selects: dict[tuple[str, bool], Select[Any]] = {}
        self._updates: dict[tuple[str, frozenset[str]], Update] = {}

    def select(self, table: Table, lock: bool) -> Select[Any]:
        statement = self._selects.get((table.name, lock))
        if statement is None:
            statement = select(table).where(table.c[KEY] == bindparam(KEY_PARAM))
            if lock:
                statement = statement.with_for_update()
            self._selects[(table.name, lock)] = statement
        return statement

    def update(self, table: Table, columns: Iterable[str]) -> Update:
        names = frozenset(columns)
        statement = self._updates.get((table.name, names))
        if statement is None:
            values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in names}  # a column's own name is reserved
            statement = update(table).where(table.c[KEY] == bindparam(KEY_PARAM)).values(values)
            self._updates[(table.name, names)] = statement
        return statement


class SQLSlot:
    keeps_json = False  # rows are columns, not JSON
    published = False

    def __init__(
        self,
        store: SQLStore,
        conn: AsyncConnection,
        table: Table,
        spec: EntitySpec,
        key: str,
        deletes: dict[Table, list[str]],
    ) -> None:
        self._store, self._conn, self._table, self._spec, self._key = store, conn, table, spec, key
        self._deletes = deletes  # a transaction's deletes, run together at its commit
        self._exists = False
        self._state: State | None = None
        self._ttl = ttl_for(spec, store.default_ttl)

    def _found(self, row: Row[Any] | None, now: float) -> None:
        self._exists = row is not None
        self._state = None if row is None else self._store._state(self._spec, row, now)

    async def load(self) -> State | None:
        if self._state is not None and self._ttl is not None:
            await self._conn.execute(
                update(self._table).where(self._table.c[KEY] == self._key).values({EXPIRES: self._expiry()})
            )
        return self._state

    async def load_text(self) -> str | None:
        raise NotImplementedError("SQL rows are columns: use load()")

    async def save(self, state: State | None = None, text: str | None = None) -> None:
        if state is None:
            assert text is not None, "save() needs the state or its JSON"
            state = json.loads(text)
        values: dict[str, Any] = {k: state[k] for k in self._spec.fields if k in state}
        _check_storable(self._spec, self._table, values)
        values[EXPIRES] = self._expiry()
        if self._state is None:
            values[CREATED] = self._store._clock()
        table = self._table
        if self._exists:
            statement = self._store._statements.update(table, values.keys())
            await self._conn.execute(statement, {**{f"v_{k}": v for k, v in values.items()}, KEY_PARAM: self._key})
        else:
            await self._conn.execute(insert(table).values({KEY: self._key, **values}))
        self._exists, self._state = True, state

    async def delete(self) -> None:
        if self._exists:
            self._deletes.setdefault(self._table, []).append(self._key)
        self._exists, self._state = False, None

    def _expiry(self) -> float | None:
        return None if self._ttl is None else self._store._clock() + self._ttl


class SQLTransaction:
    """One database transaction on one connection for every instance held in it: each hold locks
    its row (PostgreSQL) or shares the database's write lock taken at the first hold (SQLite), and
    every save runs at once inside the transaction; ``commit`` makes all of them durable."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store
        self._stack = AsyncExitStack()
        self._conn: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None
        self._tables: set[str] = set()  # tables created inside this transaction
        self._deletes: dict[Table, list[str]] = {}

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            store = self._store
            if store._sqlite:  # one writer per process queues for the file's lock
                await self._stack.enter_async_context(store._writer)
            engine = store._write_engine if store._sqlite else store.engine
            conn = await self._stack.enter_async_context(engine.connect())
            self._transaction = await conn.begin()
            self._conn = conn
        return self._conn

    async def hold(self, spec: EntitySpec, key: str) -> SQLSlot:
        store = self._store
        name = table_name(spec, store.table_prefix)
        if name not in store._ready and self._conn is None:
            await store.table(spec)  # in a transaction of its own, before this one starts
        table = store._table(spec)
        if not store._sqlite:
            # a few waiters per row queue in the database, the others here
            await self._stack.enter_async_context(store._locks.hold((table.name, key)))
        conn = await self._connection()
        await self._ensure(conn, table, spec)
        try:
            await store._sweep(conn, table)
            slot = SQLSlot(store, conn, table, spec, key, self._deletes)
            row = await store._row(conn, table, key, lock=True)
            if row is None and not store._sqlite:
                # no row to lock yet: creators of the same key queue on an advisory lock instead
                await conn.execute(select(func.pg_advisory_xact_lock(_lock_id(table.name, key))))
                row = await store._row(conn, table, key, lock=True)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == DEADLOCK:
                raise Contention(f"deadlock detected holding {table.name} {key!r}") from exc
            raise
        slot._found(row, store._clock())
        return slot

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        if self._conn is None:
            return await self._store.get(spec, key)
        store = self._store
        table = store._table(spec)
        await self._ensure(self._conn, table, spec)
        row = await store._row(self._conn, table, key, lock=False)
        return None if row is None else store._state(spec, row, store._clock())

    async def _ensure(self, conn: AsyncConnection, table: Table, spec: EntitySpec) -> None:
        """The table, created inside this transaction if this process has not seen it yet (known
        ready for everyone once the transaction commits)."""
        if table.name not in self._store._ready and table.name not in self._tables:
            await self._store._create(conn, table, spec)
            self._tables.add(table.name)

    async def commit(self) -> None:
        if self._transaction is not None:
            assert self._conn is not None
            deletes, self._deletes = self._deletes, {}
            for table, keys in deletes.items():  # a bulk delete is one statement per 500 rows
                for start in range(0, len(keys), 500):
                    await self._conn.execute(delete(table).where(table.c[KEY].in_(keys[start : start + 500])))
            await self._transaction.commit()
            self._store._ready.update(self._tables)

    async def rollback(self) -> None:
        if self._transaction is not None and self._transaction.is_active:
            with anyio.CancelScope(shield=True):
                try:
                    await self._transaction.rollback()
                except Exception:  # the connection is gone: the pool must not hand it out again
                    logger.warning("rolling back a SQL transaction failed", exc_info=True)
                    if self._conn is not None:  # (older SQLAlchemy releases would)
                        await self._conn.invalidate()

    async def release(self) -> None:
        stack, self._stack = self._stack, AsyncExitStack()
        self._conn = self._transaction = None
        with anyio.CancelScope(shield=True):
            await stack.aclose()


class SQLStore:
    """Entity state in SQL tables, created on first use (or by Alembic from ``metadata_for``).

    ``url`` is a SQLAlchemy async URL: ``sqlite+aiosqlite:///file.db`` or
    ``postgresql+asyncpg://user@host/db``. SQLite needs a file (``:memory:`` is one connection,
    which cannot hold two transactions at once). Expired rows are skipped when read and deleted
    every ``sweep_interval`` seconds by a later write. A table missing the columns of fields
    added since gets them on first use (``schema="add"``) or is refused (``schema="check"``).
    """

    def __init__(
        self,
        url: str,
        default_ttl: float | None = None,
        *,
        table_prefix: str = DEFAULT_PREFIX,
        sweep_interval: float = 60.0,
        lock_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        engine_options: dict[str, Any] | None = None,
        schema: SchemaMode | None = None,
    ) -> None:
        self.default_ttl = default_ttl
        #: a table missing columns of new fields: ``"add"`` them, or ``"check"``: refuse (503);
        #: ``None``: as the app that serves the store says (``StarModel(schema=...)``), else add
        self.schema: SchemaMode | None = None if schema is None else schema_mode(schema)
        self._told: set[str] = set()  # tables refused for missing columns, logged once
        self.table_prefix = table_prefix
        self.sweep_interval = sweep_interval
        self._clock = clock
        options = dict(engine_options or {})
        self.dialect = make_url(url).get_backend_name()
        self._sqlite = self.dialect == "sqlite"
        if self._sqlite:
            # how long a writer waits for another process's write lock before failing
            options.setdefault("connect_args", {"timeout": lock_timeout})
        elif self.dialect != "postgresql":
            raise ValueError(f"SQLStore supports SQLite and PostgreSQL, not {self.dialect!r}")
        # every transaction here ends in a commit or a rollback: no reset round trip on check-in
        options.setdefault("pool_reset_on_return", None)
        self.engine = create_async_engine(url, **options)
        # the same pool; its transactions start with BEGIN IMMEDIATE on SQLite (see _sqlite_begin)
        self._write_engine = self.engine.execution_options(starmodel_write=True)
        if self._sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        #: the tables of the entities used so far (``metadata_for`` gives them up front)
        self.metadata = MetaData()
        self._ready: set[str] = set()
        self._ddl = anyio.Lock()
        self._writer = anyio.Lock()  # SQLite: one writer per process queues for the file lock
        # PostgreSQL's row lock is the real one: a few waiters per instance queue in the database, each
        # with its connection and transaction ready (fewer would leave the row idle between holders)
        self._locks = KeyedLocks(width=1 if self._sqlite else 4)
        self._statements = Statements()
        self._last_sweep: dict[str, float] = {}

    # -- the Store protocol -------------------------------------------------------------------

    keeps_json = False  # rows are columns

    async def get_text(self, spec: EntitySpec, key: str) -> str | None:
        raise NotImplementedError("SQL rows are columns: use get()")

    def begin(self) -> SQLTransaction:
        return SQLTransaction(self)

    def hold(self, spec: EntitySpec, key: str) -> Alone:
        return Alone(SQLTransaction(self), spec, key)

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        table = await self.table(spec)
        ttl = ttl_for(spec, self.default_ttl)
        if ttl is not None:
            await self._touch(table, key, ttl)
        async with self._transaction(write=False) as conn:
            row = await self._row(conn, table, key, lock=False)
        return None if row is None else self._state(spec, row, self._clock())

    async def list(
        self, spec: EntitySpec, limit: int, offset: int, newest: bool = False, query: Query = EVERYTHING
    ) -> list[State]:
        table = await self.table(spec)
        now = self._clock()
        statement = select(table).where(*_conditions(table, query, now)).order_by(*_order(table, query, newest))
        async with self._transaction(write=False) as conn:
            rows = (await conn.execute(statement.limit(limit).offset(offset))).all()
        states = [s for row in rows if (s := self._state(spec, row, now)) is not None]
        return states[::-1] if newest else states

    async def dump(self, spec: EntitySpec) -> AsyncIterator[Stored]:
        """Live rows, oldest first, a page per short transaction (keyset on creation time and key).
        A table not made yet holds nothing (and is not made for this)."""
        name = table_name(spec, self.table_prefix)
        if name not in self._ready:
            async with self.engine.connect() as conn:
                if not await conn.run_sync(lambda sync: inspect(sync).has_table(name)):
                    return
        table = await self.table(spec)
        created, key = table.c[CREATED], table.c[KEY]
        after: tuple[float, str] | None = None
        while True:
            now = self._clock()
            query = select(table).where(or_(table.c[EXPIRES].is_(None), table.c[EXPIRES] > now))
            if after is not None:
                query = query.where(or_(created > after[0], (created == after[0]) & (key > after[1])))
            async with self._transaction(write=False) as conn:
                rows = (await conn.execute(query.order_by(created, key).limit(_PAGE))).all()
            for row in rows:
                state = self._state(spec, row, now)
                if state is not None:
                    expires = row._mapping[EXPIRES]
                    left = None if expires is None else expires - now
                    yield Stored(row._mapping[KEY], json.dumps(state), left, row._mapping[CREATED])
            if len(rows) < _PAGE:
                return
            after = (rows[-1]._mapping[CREATED], rows[-1]._mapping[KEY])

    async def restore(self, spec: EntitySpec, items: Sequence[Stored]) -> int:
        """One transaction: expired rows with these keys dropped, then each inserted unless its
        key is taken (``ON CONFLICT DO NOTHING``)."""
        table = await self.table(spec)
        now, written = self._clock(), 0
        insert_ignoring = _insert_ignoring(self.dialect)
        async with self._transaction(write=True) as conn:
            keys = [item.key for item in items]
            await conn.execute(delete(table).where(table.c[KEY].in_(keys), table.c[EXPIRES] <= now))
            for n, item in enumerate(items):
                state = json.loads(item.text)
                values: dict[str, Any] = {k: state[k] for k in spec.fields if k in state}
                _check_storable(spec, table, values)
                values[KEY] = item.key
                values[CREATED] = now + n * 1e-6 if item.created is None else item.created
                values[EXPIRES] = None if item.expires_in is None else now + item.expires_in
                result = await conn.execute(insert_ignoring(table).values(values).on_conflict_do_nothing())
                written += result.rowcount
        return written

    async def count(self, spec: EntitySpec, query: Query = EVERYTHING) -> int:
        table = await self.table(spec)
        statement = select(func.count()).select_from(table).where(*_conditions(table, query, self._clock()))
        async with self._transaction(write=False) as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        """A round trip to the database (``GET /health``)."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    # -- tables -------------------------------------------------------------------------------

    async def table(self, spec: EntitySpec) -> Table:
        """The entity's table, created in the database if it is not there yet."""
        table = self._table(spec)
        if table.name not in self._ready:
            async with self._ddl:
                if table.name not in self._ready:
                    async with self._transaction(write=True) as conn:
                        await self._create(conn, table, spec)
                    self._ready.add(table.name)
        return table

    def _table(self, spec: EntitySpec) -> Table:
        name = table_name(spec, self.table_prefix)
        table = self.metadata.tables.get(name)
        return entity_table(spec, self.metadata, self.table_prefix) if table is None else table

    async def _create(self, conn: AsyncConnection, table: Table, spec: EntitySpec) -> None:
        """The table and its indexes if missing, then the columns of fields added since (``schema``)."""
        if not self._sqlite:
            await conn.execute(select(func.pg_advisory_xact_lock(_DDL_LOCK)))
        await conn.execute(CreateTable(table, if_not_exists=True))
        for index in table.indexes:
            await conn.execute(CreateIndex(index, if_not_exists=True))
        await reconcile(conn, table, spec, self.schema or "add", self._told)

    # -- internals ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block exits normally, rolled back otherwise."""
        async with AsyncExitStack() as stack:
            if write and self._sqlite:
                await stack.enter_async_context(self._writer)
            engine = self._write_engine if write and self._sqlite else self.engine
            conn = await stack.enter_async_context(engine.connect())
            transaction = await conn.begin()
            try:
                yield conn
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await transaction.rollback()
                raise
            await transaction.commit()

    async def _row(self, conn: AsyncConnection, table: Table, key: str, *, lock: bool) -> Row[Any] | None:
        row: Row[Any] | None = (await conn.execute(self._statements.select(table, lock), {KEY_PARAM: key})).first()
        return row

    def _state(self, spec: EntitySpec, row: Row[Any], now: float) -> State | None:
        mapping = row._mapping
        expires = mapping[EXPIRES]
        if expires is not None and expires <= now:
            return None
        state: State = {}
        for name, field in spec.entity.model_fields.items():
            if name not in mapping:
                continue
            value = mapping[name]
            if value is None and not _column_type(field.annotation)[1]:
                continue  # a column added after the row was written: the field's default applies
            state[name] = value
        return state

    async def _touch(self, table: Table, key: str, ttl: float) -> None:
        """Push back the expiry of a live row on a read, unless someone holds it (the holder
        refreshes it anyway): reads never wait for a running event."""
        now = self._clock()
        live = (table.c[KEY] == key) & (table.c[EXPIRES] > now)
        if self._sqlite:
            if self._writer.locked():
                return
            statement = update(table).where(live)
        else:
            free = select(table.c[KEY]).where(table.c[KEY] == key).with_for_update(skip_locked=True)
            statement = update(table).where(live, table.c[KEY].in_(free.scalar_subquery()))
        async with self._transaction(write=True) as conn:
            await conn.execute(statement.values({EXPIRES: now + ttl}))

    async def _sweep(self, conn: AsyncConnection, table: Table) -> None:
        now = self._clock()
        if now - self._last_sweep.get(table.name, float("-inf")) < self.sweep_interval:
            return
        self._last_sweep[table.name] = now
        result = await conn.execute(delete(table).where(table.c[EXPIRES] <= now))
        if result.rowcount:
            logger.debug("dropped %d expired rows from %s", result.rowcount, table.name)

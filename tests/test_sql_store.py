"""SQLStore on real SQLite (a temporary file) and PostgreSQL: tables, transactions, TTL, Alembic."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import BaseModel
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.spec import spec_of
from starmodel_asgi.stores.sql import SQLStore, metadata_for
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON
from tests.support.services import require

pytestmark = pytest.mark.anyio


class Point(BaseModel):
    x: int = 0
    y: int = 0


class Sheet(Entity):
    model_config = {"scope": "global", "store": "sql"}
    count: int = 0
    ratio: float = 0.5
    title: str = ""
    done: bool = False
    maybe: int | None = None
    tags: list[str] = []
    where: Point = Point()

    @event
    def fill(self, count: int) -> None:
        self.count = count
        self.ratio = count / 4
        self.title = f"n{count}"
        self.done = True
        self.tags = ["a", "b"]
        self.where = Point(x=count, y=-count)

    @event
    def increment(self) -> None:
        self.count += 1

    @event
    def rename(self, title: str) -> None:
        self.title = title

    @event
    def explode(self) -> None:
        self.count = 99
        raise RuntimeError("boom")

    @event
    async def steps(self) -> AsyncIterator[None]:
        self.count += 1
        yield
        self.count += 1
        raise RuntimeError("boom after a yield")


class Visits(Entity):
    model_config = {"store": "sql", "ttl": 10}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """One database for a test, with a table prefix of its own; drops its tables afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"t{uuid.uuid4().hex[:8]}_"
        self.stores: list[SQLStore] = []

    def store(self, **options: Any) -> SQLStore:
        store = SQLStore(self.url, table_prefix=self.prefix, **options)
        self.stores.append(store)
        return store

    def app(self, store: SQLStore, entities: list[type[Entity]] | None = None) -> StarModel:
        return StarModel(entities=entities or [Sheet, Visits], secret_key="test-secret", stores={"sql": store})

    async def query(self, sql: str) -> list[Any]:
        """Rows read with a connection of its own, not the store's."""
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql.replace("{p}", self.prefix)))).all())
        finally:
            await engine.dispose()

    async def drop(self) -> None:
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                for name in ("sheet", "visits", "blink"):
                    await conn.execute(text(f'DROP TABLE IF EXISTS "{self.prefix}{name}"'))
        finally:
            await engine.dispose()
        for store in self.stores:
            await store.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sm.db'}"
    else:
        url = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
    backend = Backend(url)
    try:
        yield backend
    finally:
        await backend.drop()


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver")


async def test_fields_become_columns_and_json(db: Backend) -> None:
    sm = db.app(db.store())
    async with client(sm) as c:
        response = await c.post("/sheet/fill", json={"count": 6}, headers=JSON)
        assert response.status_code == 200
        assert (await c.get("/sheet", headers=JSON)).json() == {
            "count": 6, "ratio": 1.5, "title": "n6", "done": True, "maybe": None,
            "tags": ["a", "b"], "where": {"x": 6, "y": -6},
        }  # fmt: skip
    rows = await db.query('SELECT _key, count, ratio, title, maybe FROM "{p}sheet"')
    assert [tuple(r) for r in rows] == [("global", 6, 1.5, "n6", None)]
    engine = create_async_engine(db.url)
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_columns(f"{db.prefix}sheet"))
    await engine.dispose()
    columns = {c["name"]: c["type"] for c in found}
    fields = {"id", "count", "ratio", "title", "done", "maybe", "tags", "where"}
    assert set(columns) == {"_key", "_created", "_expires", *fields}
    assert "INT" in str(columns["count"]).upper()
    assert str(columns["title"]).upper() == "TEXT"
    assert "JSON" in str(columns["tags"]).upper() and "JSON" in str(columns["where"]).upper()
    await sm.aclose()


async def test_an_exception_in_an_event_rolls_back_the_row(db: Backend) -> None:
    sm = db.app(db.store())
    async with client(sm) as c:
        await c.post("/sheet/increment", headers=JSON)
        assert (await c.post("/sheet/explode", headers=JSON)).status_code == 500
        # a generator's first step was streamed, then it failed: nothing is saved
        assert (await c.post("/sheet/steps", headers=JSON)).status_code == 500
        assert (await c.get("/sheet", headers=JSON)).json()["count"] == 1
    assert [tuple(r) for r in await db.query('SELECT count FROM "{p}sheet"')] == [(1,)]
    await sm.aclose()


async def test_values_a_column_cannot_hold_are_422_and_change_nothing(db: Backend) -> None:
    sm = db.app(db.store())
    async with client(sm) as c:
        await c.post("/sheet/fill", json={"count": 3}, headers=JSON)
        response = await c.post("/sheet/fill", json={"count": 2**70}, headers=JSON)
        assert response.status_code == 422 and "count" in response.json()["errors"]
        response = await c.post("/sheet/rename", json={"title": "a\x00b"}, headers=JSON)
        assert response.status_code == 422 and "title" in response.json()["errors"]
        assert (await c.get("/sheet", headers=JSON)).json()["count"] == 3
    assert [tuple(r) for r in await db.query('SELECT count, title FROM "{p}sheet"')] == [(3, "n3")]
    await sm.aclose()


async def test_concurrent_events_in_one_process_are_serialised(db: Backend) -> None:
    sm = db.app(db.store())
    async with client(sm) as c:
        limit = anyio.Semaphore(50)

        async def one() -> None:
            async with limit:
                assert (await c.post("/sheet/increment", headers=JSON)).status_code == 200

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
    assert [tuple(r) for r in await db.query('SELECT count FROM "{p}sheet"')] == [(200,)]
    await sm.aclose()


async def test_a_session_survives_an_app_restart(db: Backend) -> None:
    first = db.app(db.store())
    async with client(first) as c:
        response = await c.post("/visits/increment", headers=JSON)
        await c.post("/visits/increment", headers=JSON)
        cookie = response.cookies["sm_session"]
    await first.aclose()
    second = db.app(db.store())
    async with client(second) as c:
        c.cookies.set("sm_session", cookie)
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 2}
        c.cookies.clear()
        c.cookies.set("sm_session", "someone-else.forged")
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 0}
    await second.aclose()


async def test_idle_sessions_expire_and_reading_keeps_them_alive(db: Backend) -> None:
    clock = Clock()
    store = db.store(clock=clock, sweep_interval=0)
    sm = db.app(store)  # Visits has ttl=10
    async with client(sm) as c:
        await c.post("/visits/increment", headers=JSON)
        clock.now += 8
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 1}  # pushed back to +18
        clock.now += 8
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 1}
        clock.now += 10.5
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 0}
        assert len(await db.query('SELECT _key FROM "{p}visits"')) == 1  # expired, not yet swept
        other = httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver")
        async with other:
            await other.post("/visits/increment", headers=JSON)  # a write sweeps expired rows
        assert len(await db.query('SELECT _key FROM "{p}visits"')) == 1
        assert (await c.post("/visits/increment", headers=JSON)).json() == {"count": 1}
    await sm.aclose()


async def test_idle_sessions_expire_in_real_time(db: Backend) -> None:
    sm = StarModel(entities=[_short_lived()], secret_key="k", stores={"sql": db.store()})
    async with client(sm) as c:
        await c.post("/blink/increment", headers=JSON)
        assert (await c.get("/blink", headers=JSON)).json() == {"count": 1}
        await anyio.sleep(1.2)
        assert (await c.get("/blink", headers=JSON)).json() == {"count": 0}
    await sm.aclose()


def _short_lived() -> type[Entity]:
    class Blink(Entity):
        model_config = {"store": "sql", "ttl": 1}
        count: int = 0

        @event
        def increment(self) -> None:
            self.count += 1

    return Blink


async def test_hold_keeps_the_row_locked_until_the_block_ends(db: Backend) -> None:
    """A second holder (another store: another connection pool, as another process has) waits
    for the first holder's commit and sees its write; both while the row does not exist yet
    and once it does."""
    first, second = db.store(), db.store()
    order: list[tuple[str, int | None]] = []

    async def late_holder() -> None:
        async with second.hold(spec_of(Sheet), "global") as slot:
            state = await slot.load()
            order.append(("second saw", None if state is None else state["count"]))

    for count in (5, 6):
        async with anyio.create_task_group() as tg, first.hold(spec_of(Sheet), "global") as slot:
            await slot.save({**Sheet(id="global").stored_state(), "count": count})
            tg.start_soon(late_holder)
            await anyio.sleep(0.3)
            order.append(("first commits", count))
    assert order == [("first commits", 5), ("second saw", 5), ("first commits", 6), ("second saw", 6)]


def test_alembic_autogenerate_sees_the_tables(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    db_file = tmp_path / "app.db"
    config = Config(str(tmp_path / "alembic.ini"))
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{db_file}")
    command.init(config, str(tmp_path / "migrations"))
    env = tmp_path / "migrations" / "env.py"
    # alembic's template calls fileConfig(), which by default disables every logger already made
    # (starmodel_asgi's too), so a later test reading the library's log would see nothing
    text = env.read_text().replace("target_metadata = None", "target_metadata = config.attributes['metadata']")
    text = text.replace(
        "fileConfig(config.config_file_name)", "fileConfig(config.config_file_name, disable_existing_loggers=False)"
    )
    assert "disable_existing_loggers=False" in text
    env.write_text(text)
    config.attributes["metadata"] = metadata_for([Sheet, Visits, _memory_entity()])

    command.revision(config, message="entities", autogenerate=True)
    (script,) = (tmp_path / "migrations" / "versions").glob("*.py")
    source = script.read_text()
    assert "op.create_table('starmodel_sheet'" in source
    assert "op.create_table('starmodel_visits'" in source
    assert "starmodel_memo" not in source  # only store="sql" entities have tables
    assert "sa.Column('where', sa.JSON()" in source

    command.upgrade(config, "head")
    with sqlite3.connect(db_file) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"starmodel_sheet", "starmodel_visits"} <= tables

    command.revision(config, message="nothing new", autogenerate=True)
    newest = max((tmp_path / "migrations" / "versions").glob("*.py"), key=lambda p: p.stat().st_mtime_ns)
    assert "op.create_table" not in newest.read_text()
    assert "op.add_column" not in newest.read_text()


async def test_the_store_uses_tables_that_alembic_created(tmp_path: Path) -> None:
    """``metadata_for`` is exactly what the store creates: a migrated database just works."""
    from sqlalchemy import create_engine

    db_file = tmp_path / "migrated.db"
    engine = create_engine(f"sqlite:///{db_file}")
    metadata_for([Sheet]).create_all(engine)
    engine.dispose()
    sm = StarModel(entities=[Sheet], secret_key="k", database_url=f"sqlite+aiosqlite:///{db_file}")
    async with client(sm) as c:
        assert (await c.post("/sheet/fill", json={"count": 2}, headers=JSON)).json()["count"] == 2
    await sm.aclose()
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count, tags FROM starmodel_sheet").fetchall() == [(2, '["a", "b"]')]


def _memory_entity() -> type[Entity]:
    class Memo(Entity):
        text: str = ""

    return Memo


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        SQLStore("mysql+aiomysql://u@h/db")

"""``sm.copy``: every instance (records, global, user and session states) moved to another store,
with its key, remaining TTL and creation order; a second run writes nothing, a dry run nothing at
all; and a browser's old session cookie finds its state in an app serving from the new store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.spec import spec_of
from starmodel_asgi.stores import Store, Stored
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.stores.sql import SQLStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON
from tests.support.services import drop_redis_keys, require

pytestmark = pytest.mark.anyio

NAMES = ("cart", "profile", "tally", "todo")


def entities(kind: str) -> dict[str, type[Entity]]:
    """The same four entities (one per scope), kept in the store ``kind``: what an app looks like
    before and after moving its data (only ``model_config["store"]`` changes)."""

    class Cart(Entity):
        model_config = {"store": kind, "name": "cart"}
        items: list[str] = []

        @event
        def add(self, item: str) -> None:
            self.items.append(item)

    class Profile(Entity):
        model_config = {"scope": "user", "store": kind, "name": "profile"}
        nickname: str = ""

    class Tally(Entity):
        model_config = {"scope": "global", "store": kind, "name": "tally"}
        count: int = 0

    class Todo(Entity):
        model_config = {"scope": "record", "store": kind, "name": "todo"}
        title: str = ""
        done: bool = False

    return {"cart": Cart, "profile": Profile, "tally": Tally, "todo": Todo}


class Place:
    """A store of one kind with names of the test's own; drops what it made afterwards."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tag = kind, uuid.uuid4().hex[:8]
        self.url = ""
        if kind == "memory":
            self.store: Store = MemoryStore(default_ttl=3600)
        elif kind == "redis":
            self.url = require("STARMODEL_TEST_REDIS_URL", "Redis")
            self.store = RedisStore(self.url, default_ttl=3600, prefix=f"smtest:copy:{self.tag}:")
        else:
            if kind == "sqlite":
                self.url = f"sqlite+aiosqlite:///{tmp_path / f'copy-{self.tag}.db'}"
            else:
                self.url = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
            self.store = SQLStore(self.url, default_ttl=3600, table_prefix=f"c{self.tag}_")

    @property
    def config(self) -> str:
        return "memory" if self.kind == "memory" else "redis" if self.kind == "redis" else "sql"

    def app(self) -> tuple[StarModel, dict[str, type[Entity]]]:
        classes = entities(self.config)
        sm = StarModel(
            entities=list(classes.values()),
            secret_key="moving-day",
            base_path="",
            session_ttl=3600,
            get_user=lambda request: request.headers.get("x-user"),
            stores={self.config: self.store},
        )
        return sm, classes

    async def cleanup(self) -> None:
        await self.store.aclose()
        if self.kind == "redis":
            await drop_redis_keys(self.url, f"smtest:copy:{self.tag}:")
        elif self.kind in ("sqlite", "postgres"):
            engine = create_async_engine(self.url)
            try:
                async with engine.begin() as conn:
                    for name in NAMES:
                        await conn.execute(text(f'DROP TABLE IF EXISTS "c{self.tag}_{name}"'))
            finally:
                await engine.dispose()


def client(sm: StarModel, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver", cookies=cookies)


async def fill(sm: StarModel, classes: dict[str, type[Entity]]) -> httpx.Cookies:
    """A browser's cart, a user's profile, the global tally and three records (ids in the reverse
    order of their creation)."""
    async with client(sm) as c:
        for item in ("apple", "pear"):
            assert (await c.post("/cart/add", json={"item": item}, headers=JSON)).status_code == 200
        cookies = c.cookies
    async with sm.edit(classes["profile"], "alice") as profile:
        profile.nickname = "Al"  # type: ignore[attr-defined]
    async with sm.edit(classes["tally"]) as tally:
        tally.count = 7  # type: ignore[attr-defined]
    for n, title in enumerate(("first", "second", "third")):
        await sm.create(classes["todo"], id=f"{'zyx'[n]}-{title}", title=title, done=n == 1)
    return cookies


async def everything(store: Store, classes: dict[str, type[Entity]]) -> dict[str, list[tuple[str, str]]]:
    return {name: [(s.key, s.text) async for s in store.dump(spec_of(cls))] for name, cls in classes.items()}


@pytest.fixture
async def places(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Place, Place]]:
    source, target = (Place(kind, tmp_path) for kind in request.param)
    try:
        yield source, target
    finally:
        await source.cleanup()
        await target.cleanup()


MOVES = [("memory", "sqlite"), ("sqlite", "postgres"), ("redis", "postgres"), ("postgres", "redis")]


@pytest.mark.parametrize("places", MOVES, indirect=True, ids=["->".join(m) for m in MOVES])
async def test_copy_moves_every_instance_and_an_old_session_cookie_finds_its_state(places: tuple[Place, Place]) -> None:
    source, target = places
    old, old_classes = source.app()
    cookies = await fill(old, old_classes)
    new, classes = target.app()

    dry = await old.copy(to=target.store, dry_run=True)
    assert {name: (c.found, c.written) for name, c in dry.items()} == {
        "cart": (1, 0),
        "profile": (1, 0),
        "tally": (1, 0),
        "todo": (3, 0),
    }
    assert await everything(target.store, classes) == {name: [] for name in NAMES}  # the dry run wrote nothing

    copied = await old.copy(to=target.store)
    assert {name: (c.found, c.written) for name, c in copied.items()} == {
        "cart": (1, 1),
        "profile": (1, 1),
        "tally": (1, 1),
        "todo": (3, 3),
    }

    async with client(new, cookies) as c:  # the browser, now talking to the app on the new store
        assert (await c.get("/cart", headers=JSON)).json()["items"] == ["apple", "pear"]
        assert (await c.post("/cart/add", json={"item": "fig"}, headers=JSON)).json()["items"] == [
            "apple",
            "pear",
            "fig",
        ]
        assert (await c.get("/profile", headers={**JSON, "x-user": "alice"})).json() == {"nickname": "Al"}
        assert (await c.get("/tally", headers=JSON)).json() == {"count": 7}
        todos = (await c.get("/todo", headers=JSON)).json()
    assert [(t["id"], t["title"], t["done"]) for t in todos] == [
        ("z-first", "first", False),
        ("y-second", "second", True),
        ("x-third", "third", False),
    ]  # ids and creation order kept (not the ids' order)

    session_ttl = {s.key: s.expires_in async for s in target.store.dump(spec_of(classes["cart"]))}
    (left,) = session_ttl.values()
    assert left is not None and 3000 < left <= 3600  # the remaining TTL, not "never"
    assert [s.expires_in async for s in target.store.dump(spec_of(classes["tally"]))] == [None]

    before = await everything(target.store, classes)
    again = await old.copy(to=target.store)
    assert {name: (c.found, c.written, c.present) for name, c in again.items()} == {
        "cart": (1, 0, 1),
        "profile": (1, 0, 1),
        "tally": (1, 0, 1),
        "todo": (3, 0, 3),
    }
    assert await everything(target.store, classes) == before  # the fig added since is not overwritten
    await old.aclose()


async def test_copy_to_a_url_picks_the_store_and_names_what_it_cannot_copy_to(tmp_path: Path) -> None:
    classes = entities("memory")
    sm = StarModel(entities=list(classes.values()), secret_key="k", base_path="")
    await fill(sm, classes)
    url = f"sqlite+aiosqlite:///{tmp_path / 'moved.db'}"
    copied = await sm.copy(to=url, entities=["todo", classes["tally"]])
    assert {name: c.written for name, c in copied.items()} == {"todo": 3, "tally": 1}
    moved = SQLStore(url)  # the default table names an app configured with this URL reads
    assert [s.key async for s in moved.dump(spec_of(entities("sql")["todo"]))] == ["z-first", "y-second", "x-third"]
    await moved.aclose()
    with pytest.raises(ValueError, match="cannot copy to 'mysql://h/db': give sqlite"):
        await sm.copy(to="mysql://h/db")
    with pytest.raises(ValueError, match="no entity 'basket' kept on the server to copy: cart, profile"):
        await sm.copy(to=url, entities=["basket"])
    await sm.aclose()


async def test_copying_from_tables_never_made_finds_nothing_and_makes_none(tmp_path: Path) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    classes = entities("sql")
    sm = StarModel(entities=list(classes.values()), secret_key="k", database_url=source_url)
    counts = await sm.copy(to=f"sqlite+aiosqlite:///{tmp_path / 'target.db'}", dry_run=True)
    assert {name: c.found for name, c in counts.items()} == dict.fromkeys(NAMES, 0)
    await sm.aclose()
    engine = create_async_engine(source_url)
    async with engine.connect() as conn:
        assert await conn.run_sync(lambda sync: inspect(sync).get_table_names()) == []
    await engine.dispose()
    assert not (tmp_path / "target.db").exists()  # a dry run does not even open the target


@pytest.mark.parametrize("places", [("sqlite", "redis")], indirect=True, ids=["sqlite->redis->memory"])
async def test_copy_pages_through_more_instances_than_one_batch(places: tuple[Place, Place]) -> None:
    """Past one page (500) of records and of sessions: every one copied once, records in order."""
    source, target = places
    sm, classes = source.app()
    todo, cart = spec_of(classes["todo"]), spec_of(classes["cart"])
    records = [
        Stored(f"r{n:05d}"[::-1], f'{{"id": "r{n}", "title": "t{n}"}}', None, 1000.0 + n // 3) for n in range(1201)
    ]
    sessions = [Stored(f"s{n}", f'{{"id": "s{n}", "items": ["x{n}"]}}', 600.0, None) for n in range(1201)]
    assert await source.store.restore(todo, records) == 1201  # equal creation times: the key breaks ties
    assert await source.store.restore(cart, sessions) == 1201

    counts = await sm.copy(to=target.store, entities=["todo", "cart"])
    assert {name: (c.found, c.written) for name, c in counts.items()} == {"todo": (1201, 1201), "cart": (1201, 1201)}
    ordered = sorted(records, key=lambda s: (s.created or 0, s.key))
    assert [s.key async for s in target.store.dump(todo)] == [s.key for s in ordered]
    assert sorted([s.key async for s in target.store.dump(cart)]) == sorted(s.key for s in sessions)

    memory = MemoryStore()
    back = StarModel(entities=list(target.app()[1].values()), secret_key="k", stores={"redis": target.store})
    assert (await back.copy(to=memory, entities=["todo"]))["todo"].written == 1201
    assert [s.key async for s in memory.dump(todo)] == [s.key for s in ordered]
    await sm.aclose()

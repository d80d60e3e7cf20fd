"""Queries of record entities (equality filters, an order, a count) and collection events, in
Python and over HTTP, on every server store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from sqlalchemy import inspect as sql_inspect
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import ClientWritable, Entity, EventRequest, ServerOnly, StarModel, event
from starmodel_asgi.errors import EventError
from starmodel_asgi.stores import Store
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.stores.sql import SQLStore
from starmodel_asgi.testing import Page
from tests.support.services import drop_redis_keys, require

pytestmark = pytest.mark.anyio

KINDS = ["memory", "sqlite", "postgres", "redis"]
StoreKind = Literal["memory", "sql", "redis"]


def make_todo(store: StoreKind) -> type[Entity]:
    class Todo(Entity):
        model_config = {
            "scope": "record",
            "store": store,
            "indexes": ["done", "room"],
            "aggregates": {"left": {"done": False}, "finished": {"done": True}},
        }
        title: Annotated[str, ClientWritable] = ""
        room: str = "main"
        done: bool = False
        rank: int = 0
        note: str | None = None
        secret: Annotated[str, ServerOnly] = ""
        tags: list[str] = []

        @event
        def toggle(self) -> None:
            self.done = not self.done

        @event
        @classmethod
        async def toggle_all(cls, request: EventRequest) -> None:
            """Every todo done, or, when all are, none."""
            app = request.app
            all_done = await app.count(cls, where={"done": False}) == 0
            for todo in await app.list(cls, limit=10_000, where={"done": all_done}):
                async with app.edit(cls, todo.id) as editing:
                    editing.done = not all_done

        @event
        @classmethod
        async def clear_completed(cls, request: EventRequest) -> str:
            app = request.app
            done = await app.list(cls, limit=10_000, where={"done": True})
            for todo in done:
                await app.delete(cls, todo.id)
            return f'<p id="cleared">{len(done)} cleared</p>'

        @event
        @classmethod
        async def clear_then_fail(cls, request: EventRequest) -> None:
            for todo in await request.app.list(cls, limit=10_000):
                await request.app.delete(cls, todo.id)
            raise RuntimeError("half way")

        @event
        @classmethod
        async def add_and_move(cls, request: EventRequest, title: str) -> None:
            """Lists and counts inside the unit see its own changes before they are saved."""
            app = request.app
            in_a = await app.count(cls, where={"room": "a"})
            await app.create(cls, title=title, room="unit")
            first = (await app.list(cls, where={"room": "a"}))[0]
            async with app.edit(cls, first.id) as moved:
                moved.room = "unit"
            assert sorted(titles(await app.list(cls, where={"room": "unit"}))) == sorted([title, first.title])
            assert first.title not in titles(await app.list(cls, where={"room": "a"}))
            assert await app.count(cls, where={"room": "unit"}) == 2
            assert await app.count(cls, where={"room": "a"}) == in_a - 1

        def render(self) -> str:
            return f'<li id="{self.dom_id}">{self.title}</li>'

    return Todo


class Backend:
    """One store of one kind, with the tables or keys of this test only."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        tag = uuid.uuid4().hex[:8]
        self.entity = make_todo("memory" if kind == "memory" else "redis" if kind == "redis" else "sql")
        self.store: Store
        if kind == "memory":
            self.store = MemoryStore()
        elif kind == "redis":
            self.url = require("STARMODEL_TEST_REDIS_URL", "Redis")
            self.prefix = f"smtest:q{tag}:"
            self.store = RedisStore(self.url, prefix=self.prefix)
        else:
            self.url = (
                f"sqlite+aiosqlite:///{tmp_path / 'queries.db'}"
                if kind == "sqlite"
                else require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
            )
            self.prefix = f"q{tag}_"
            self.store = SQLStore(self.url, table_prefix=self.prefix)

    def app(self, **options: Any) -> StarModel:
        store = "memory" if self.kind == "memory" else "redis" if self.kind == "redis" else "sql"
        return StarModel([self.entity], base_path="", secret_key="k", stores={store: self.store}, **options)

    async def cleanup(self) -> None:
        if self.kind == "redis":
            await drop_redis_keys(self.url, self.prefix)
        elif self.kind in ("sqlite", "postgres"):
            engine = create_async_engine(self.url)
            async with engine.begin() as conn:
                await conn.execute(text(f'DROP TABLE IF EXISTS "{self.prefix}todo"'))
            await engine.dispose()
        await self.store.aclose()


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(request.param, tmp_path)
    try:
        yield b
    finally:
        await b.cleanup()


ROWS = [  # title, room, done, rank
    ("a1", "a", False, 3),
    ("b1", "b", True, 1),
    ("a2", "a", True, 2),
    ("b2", "b", False, 5),
    ("a3", "a", False, 2),
    ("b3", "b", False, 4),
]


async def seed(sm: StarModel, todo: type[Entity]) -> dict[str, str]:
    ids = {}
    for title, room, done, rank in ROWS:
        ids[title] = (await sm.create(todo, title=title, room=room, done=done, rank=rank)).id
    return ids


def titles(records: list[Any]) -> list[str]:
    return [r.title for r in records]


async def test_filters_orders_and_counts_in_python(backend: Backend) -> None:
    sm, todo = backend.app(), backend.entity
    ids = await seed(sm, todo)
    assert titles(await sm.list(todo, where={"room": "a"})) == ["a1", "a2", "a3"]
    assert titles(await sm.list(todo, where={"room": "b", "done": False})) == ["b2", "b3"]
    assert titles(await sm.list(todo, where={"done": False, "rank": 2})) == ["a3"]  # rank: not indexed
    assert titles(await sm.list(todo, order="rank")) == ["b1", "a2", "a3", "a1", "b3", "b2"]  # ties by creation
    assert titles(await sm.list(todo, order="-rank", limit=3)) == ["b2", "b3", "a1"]
    assert titles(await sm.list(todo, order="-created", limit=2, offset=1)) == ["a3", "b2"]
    assert titles(await sm.list(todo, where={"room": "a"}, order="-created")) == ["a3", "a2", "a1"]
    assert titles(await sm.list(todo, where={"room": "a"}, limit=1, offset=1)) == ["a2"]
    assert titles(await sm.list(todo, where={"room": "nowhere"})) == []
    assert titles(await sm.list(todo, where={"note": None, "room": "b"})) == ["b1", "b2", "b3"]
    assert await sm.count(todo) == 6
    assert await sm.count(todo, where={"done": False}) == 4
    assert await sm.count(todo, where={"room": "a", "done": False}) == 2
    assert await sm.count(todo, where={"rank": 2}) == 2

    # a record that changes its indexed value leaves one list and joins the other
    async with sm.edit(todo, ids["a1"]) as moving:
        moving.room, moving.done = "b", True
    assert titles(await sm.list(todo, where={"room": "a"})) == ["a2", "a3"]
    assert titles(await sm.list(todo, where={"room": "b", "done": True})) == ["a1", "b1"]  # creation order
    assert await sm.count(todo, where={"room": "b"}) == 4
    await sm.delete(todo, ids["b1"])
    assert await sm.count(todo, where={"room": "b"}) == 3
    assert await sm.count(todo, where={"done": True}) == 2
    assert titles(await sm.list(todo, where={"room": "b"}, order="-created")) == ["b3", "b2", "a1"]


async def test_values_are_coerced_by_the_field_type_and_bad_ones_named() -> None:
    todo = make_todo("memory")
    sm = StarModel([todo], base_path="", secret_key="k")
    await seed(sm, todo)
    assert await sm.count(todo, where={"done": "false", "rank": "2"}) == 1  # as a form or query gives them
    with pytest.raises(ValueError, match="rank: Input should be a valid integer"):
        await sm.list(todo, where={"rank": "two"})
    with pytest.raises(ValueError, match=r"Todo has no field 'colour' to filter by \(it can filter by done, id,"):
        await sm.count(todo, where={"colour": "red"})
    with pytest.raises(ValueError, match="no field 'tags' to filter by"):  # a list: not comparable everywhere
        await sm.list(todo, where={"tags": ["x"]})
    with pytest.raises(ValueError, match="no field 'size' to order by"):
        await sm.list(todo, order="-size")
    assert await sm.count(todo, where={"secret": ""}) == 6  # Python may filter on ServerOnly fields


async def test_filters_order_and_count_over_http(backend: Backend) -> None:
    sm, todo = backend.app(), backend.entity
    await seed(sm, todo)
    async with Page(sm) as page:
        answer = await page.request("GET", "/todo?room=a&done=false&order=-rank", accept="application/json")
        assert [t["title"] for t in answer.json()] == ["a1", "a3"]
        answer = await page.request("GET", "/todo?order=rank&limit=2&offset=1", accept="application/json")
        assert [t["title"] for t in answer.json()] == ["a2", "a3"]
        answer = await page.request("GET", "/todo/count?done=true", accept="application/json")
        assert answer.json() == {"count": 2}
        assert (await page.request("GET", "/todo/count", accept="application/json")).json() == {"count": 6}


@pytest.mark.parametrize(
    ("query", "named", "message"),
    [
        ("rank=two", "rank", "valid integer"),
        ("done=perhaps", "done", "valid boolean"),
        ("colour=red", "colour", "Todo has no field 'colour' to filter by"),
        ("secret=x", "secret", "Todo has no field 'secret' to filter by"),  # ServerOnly: not said to exist
        ("order=secret", "order", "Todo has no field 'secret' to order by"),
        ("rank=1&rank=2", "rank", "rank is given 2 times: give it once"),  # not silently the last one
    ],
)
async def test_a_bad_filter_over_http_is_422_naming_it(query: str, named: str, message: str) -> None:
    todo = make_todo("memory")
    sm = StarModel([todo], base_path="", secret_key="k")
    async with Page(sm) as page:
        for path in ("/todo", "/todo/count"):
            if path.endswith("count") and named == "order":
                continue
            answer = await page.request("GET", f"{path}?{query}", accept="application/json")
            assert answer.status == 422
            assert message in answer.json()["errors"][named]
            assert "secret" not in answer.json()["errors"][named].partition("(")[2]  # never listed


async def test_toggle_all_and_clear_completed_are_one_event_each(backend: Backend) -> None:
    asked: list[tuple[str | None, str | None]] = []

    def authorize(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        asked.append((event, request.path_params.get("id")))
        return True

    sm, todo = backend.app(authorize=authorize), backend.entity
    await seed(sm, todo)
    async with Page(sm) as page:
        assert todo.toggle_all() == "@post('/todo/toggle_all')"  # no id: it acts on the collection
        assert (await page.run(todo.toggle_all())).status == 200
        assert await sm.count(todo, where={"done": True}) == 6
        assert ("toggle_all", None) in asked
        await page.run(todo.toggle_all())  # all were done: none is
        assert await sm.count(todo, where={"done": False}) == 6
        await page.run(todo.toggle(id=(await sm.list(todo))[0].id))
        answer = await page.run(todo.clear_completed())
        assert answer.status == 200
        assert answer.elements == [("#cleared", "outer", '<p id="cleared">1 cleared</p>')]
        assert titles(await sm.list(todo)) == ["b1", "a2", "b2", "a3", "b3"]

        failed = await page.run(todo.clear_then_fail())
        assert failed.status == 500
        assert await sm.count(todo) == 5  # one unit: the deletes before the failure are not kept

        answer = await page.run(todo.add_and_move(title="new"))
        assert answer.status == 200, answer.text
        assert sorted(titles(await sm.list(todo, where={"room": "unit"}))) == ["a2", "new"]


async def test_an_index_is_made_for_each_declared_field(backend: Backend) -> None:
    if backend.kind not in ("sqlite", "postgres"):
        pytest.skip("SQL indexes")
    sm, todo = backend.app(), backend.entity
    await sm.create(todo, title="x")
    store = backend.store
    assert isinstance(store, SQLStore)
    async with store.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: sql_inspect(c).get_indexes(f"{backend.prefix}todo"))
    assert {tuple(i["column_names"]) for i in indexes} >= {("done",), ("room",)}
    assert ("rank",) not in {tuple(i["column_names"]) for i in indexes}


async def test_openapi_lists_filters_the_count_and_collection_events() -> None:
    todo = make_todo("memory")
    sm = StarModel([todo], base_path="", secret_key="k")
    async with Page(sm) as page:
        doc = (await page.request("GET", "/openapi.json", accept="application/json")).json()
    listed = {p["name"]: p["schema"] for p in doc["paths"]["/todo"]["get"]["parameters"]}
    assert listed["done"] == {"type": "boolean"} and listed["rank"] == {"type": "integer"}
    assert "secret" not in listed and "tags" not in listed
    assert {"-created", "rank", "-rank"} <= set(listed["order"]["enum"])
    count = doc["paths"]["/todo/count"]["get"]
    assert {p["name"] for p in count["parameters"]} >= {"done", "room"}
    assert count["responses"]["200"]["content"]["application/json"]["schema"]["properties"] == {
        "count": {"type": "integer"}
    }
    assert "post" in doc["paths"]["/todo/toggle_all"] and "/todo/{id}/toggle_all" not in doc["paths"]
    assert "/todo/{id}/toggle" in doc["paths"]


def test_mistakes_are_named_when_the_app_is_built() -> None:
    class Bad(Entity):
        model_config = {"scope": "record", "indexes": ["nope"]}

    with pytest.raises(ValueError, match=r"Bad: indexes names unknown fields \['nope'\]"):
        StarModel([Bad], secret_key="k")

    class Listy(Entity):
        model_config = {"scope": "record", "indexes": ["tags"]}
        tags: list[str] = []

    with pytest.raises(ValueError, match="indexes takes bool, int, float and str fields, not"):
        StarModel([Listy], secret_key="k")

    class Unindexed(Entity):
        model_config = {"scope": "record", "aggregates": {"left": {"done": False}}}
        done: bool = False

    with pytest.raises(ValueError, match="aggregate 'left' filters on \\['done'\\]: add them to model_config"):
        StarModel([Unindexed], secret_key="k")

    class Global(Entity):
        model_config = {"scope": "global"}

        @event
        @classmethod
        def reset(cls) -> None: ...

    with pytest.raises(ValueError, match=r'Global.reset: a collection event .* needs scope="record"'):
        StarModel([Global], secret_key="k")

    with pytest.raises(TypeError, match="put @event above @classmethod"):

        class Upside(Entity):
            model_config = {"scope": "record"}

            @classmethod  # type: ignore[misc]
            @event
            def reset(cls) -> None: ...

        StarModel([Upside], secret_key="k")

    with pytest.raises(TypeError, match="a collection event is a plain"):
        event(classmethod(lambda cls: (yield)))  # type: ignore[arg-type]


async def test_the_event_error_of_a_bad_query_is_the_entitys() -> None:
    todo = make_todo("memory")
    sm = StarModel([todo], base_path="", secret_key="k")
    with pytest.raises(EventError) as caught:
        await sm.list(todo, where={"rank": "x"})
    assert caught.value.entity == "todo" and caught.value.status == 422

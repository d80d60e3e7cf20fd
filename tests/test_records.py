"""``scope="record"`` entities on every server store, the authorize hook, and the unit of work
and TTLs seen from the store's own data."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.spec import spec_of
from starmodel_asgi.stores import Store
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.stores.sql import SQLStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.services import drop_redis_keys, require
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio

KINDS = ["memory", "sqlite", "postgres", "redis"]


def make_todo(store: Literal["memory", "sql", "redis"]) -> type[Entity]:
    class Todo(Entity):
        model_config = {"scope": "record", "store": store}
        title: Annotated[str, ClientWritable] = ""
        done: bool = False
        edits: int = 0

        @event
        def toggle(self) -> None:
            self.done = not self.done
            self.edits += 1

        @event
        def rename(self, title: str) -> None:
            self.title = title
            self.edits += 1

        @event
        def explode(self) -> None:
            self.title = "ruined"
            raise RuntimeError("boom")

        @event
        async def duplicate(self, request: EventRequest, as_id: str) -> None:
            await request.app.create(type(self), id=as_id, title=self.title)
            self.edits += 1

    return Todo


class Backend:
    """A store of one kind and a way to read what it holds without going through it."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tag = uuid.uuid4().hex[:8]
        self.entity = make_todo("memory" if kind == "memory" else "redis" if kind == "redis" else "sql")
        self.store: Store
        if kind == "memory":
            self.store = MemoryStore()
        elif kind == "redis":
            self.url = require("STARMODEL_TEST_REDIS_URL", "Redis")
            self.prefix = f"smtest:{self.tag}:"
            self.store = RedisStore(self.url, prefix=self.prefix)
        else:
            if kind == "sqlite":
                self.url = f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"
            else:
                self.url = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
            self.prefix = f"r{self.tag}_"
            self.store = SQLStore(self.url, table_prefix=self.prefix)

    def app(self, **options: Any) -> StarModel:
        kind = spec_of(self.entity).store
        return StarModel(entities=[self.entity], secret_key="k", stores={kind: self.store}, **options)

    async def stored(self, key: str) -> dict[str, Any] | None:
        """The record as the backend holds it, read directly."""
        if isinstance(self.store, MemoryStore):
            entry = self.store._data.get(("todo", key))
            return None if entry is None else json.loads(entry.text)
        if self.kind == "redis":
            raw = Redis.from_url(self.url, decode_responses=True)
            try:
                value = await raw.get(f"{self.prefix}state:todo:{key}")
            finally:
                await raw.aclose()
            return None if value is None else dict(json.loads(value))
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as conn:
                query = text(f'SELECT id, title, done, edits FROM "{self.prefix}todo" WHERE _key = :k')
                row = (await conn.execute(query, {"k": key})).first()
        finally:
            await engine.dispose()
        return None if row is None else dict(row._mapping)

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


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver")


async def test_create_read_list_event_delete(backend: Backend) -> None:
    sm = backend.app()
    async with client(sm) as c:
        created = []
        for title in ("one", "two", "three"):
            response = await c.post("/todo", json={"todo": {"title": title}}, headers=JSON)
            assert response.status_code == 201
            created.append(response.json())
        assert [t["title"] for t in created] == ["one", "two", "three"]
        first_id = created[0]["id"]
        assert len({t["id"] for t in created}) == 3 and all(t["id"] for t in created)

        assert (await c.get(f"/todo/{first_id}", headers=JSON)).json() == created[0]
        assert (await c.get("/todo")).json() == created  # oldest first
        assert [t["title"] for t in (await c.get("/todo?limit=2&offset=1")).json()] == ["two", "three"]
        assert (await c.get("/todo?limit=0")).status_code == 422
        assert (await c.get("/todo?offset=x")).status_code == 422

        response = await c.post(f"/todo/{first_id}/toggle", headers=DATASTAR)
        assert response.status_code == 200
        assert merged_signals(parse_sse(response.text)) == {"todo": {"done": True, "edits": 1}}
        response = await c.post(f"/todo/{first_id}/rename", json={"title": "uno"}, headers=JSON)
        assert response.json() == {"id": first_id, "title": "uno", "done": True, "edits": 2}
        stored = await backend.stored(first_id)
        assert stored is not None and (stored["title"], bool(stored["done"]), stored["edits"]) == ("uno", True, 2)
        second = await backend.stored(created[1]["id"])
        assert second is not None and (second["title"], second["edits"]) == ("two", 0)

        assert (await c.delete(f"/todo/{first_id}")).status_code == 204
        assert await backend.stored(first_id) is None
        assert (await c.get(f"/todo/{first_id}", headers=JSON)).status_code == 404
        assert (await c.delete(f"/todo/{first_id}")).status_code == 404
        assert (await c.post(f"/todo/{first_id}/toggle", headers=JSON)).status_code == 404
        assert await backend.stored(first_id) is None  # an event on a missing record creates nothing
        assert [t["title"] for t in (await c.get("/todo")).json()] == ["two", "three"]
    await sm.aclose()


async def test_datastar_create_is_200_so_the_page_applies_it(backend: Backend) -> None:
    sm = backend.app()
    async with client(sm) as c:
        response = await c.post("/todo", json={"todo": {"title": "from a page"}}, headers=DATASTAR)
        assert response.status_code == 200
        assert merged_signals(parse_sse(response.text))["todo"]["title"] == "from a page"
    await sm.aclose()


async def test_ids_that_cannot_be_records_are_404(backend: Backend) -> None:
    sm = backend.app()
    async with client(sm) as c:
        for bad in ["a%00b", "x" * 201, "tab%09"]:
            assert (await c.get(f"/todo/{bad}", headers=JSON)).status_code == 404
            assert (await c.post(f"/todo/{bad}/toggle", headers=JSON)).status_code == 404
    await sm.aclose()


async def test_the_record_id_is_not_client_writable(backend: Backend) -> None:
    sm = backend.app()
    async with client(sm) as c:
        response = await c.post("/todo", json={"todo": {"title": "x", "id": "mine", "edits": 50}}, headers=JSON)
        body = response.json()
        assert response.status_code == 201 and body["id"] != "mine" and body["edits"] == 0
        response = await c.post(f"/todo/{body['id']}/toggle", json={"todo": {"id": "other", "edits": 9}}, headers=JSON)
        assert response.json() == {"id": body["id"], "title": "x", "done": True, "edits": 1}
        assert await backend.stored("other") is None
    await sm.aclose()


async def test_an_exception_in_an_event_persists_nothing(backend: Backend) -> None:
    sm = backend.app()
    async with client(sm) as c:
        record = (await c.post("/todo", json={"todo": {"title": "keep"}}, headers=JSON)).json()
        before = await backend.stored(record["id"])
        response = await c.post(f"/todo/{record['id']}/explode", headers=JSON)
        assert response.status_code == 500
        assert "boom" not in response.text  # no traceback or message leaks to the client
        assert await backend.stored(record["id"]) == before
        assert (await c.get(f"/todo/{record['id']}", headers=JSON)).json()["title"] == "keep"
    await sm.aclose()


async def test_authorize_can_refuse_each_operation(backend: Backend) -> None:
    seen: list[tuple[str, str | None]] = []

    def authorize(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        seen.append((request.method, event))
        return request.headers.get("x-role") == "admin" or event == "toggle" or request.method == "GET"

    sm = backend.app(authorize=authorize)
    admin = {**JSON, "X-Role": "admin"}
    async with client(sm) as c:
        assert (await c.post("/todo", json={"todo": {"title": "t"}}, headers=JSON)).status_code == 403
        assert (await c.get("/todo")).json() == []  # the refused create stored nothing
        record = (await c.post("/todo", json={"todo": {"title": "t"}}, headers=admin)).json()
        key = record["id"]
        assert (await c.post(f"/todo/{key}/toggle", headers=JSON)).status_code == 200
        response = await c.post(f"/todo/{key}/rename", json={"title": "no"}, headers=DATASTAR)
        assert response.status_code == 403
        assert (await c.delete(f"/todo/{key}", headers=JSON)).status_code == 403
        stored = await backend.stored(key)
        assert stored is not None and stored["title"] == "t" and stored["edits"] == 1
        assert (await c.post(f"/todo/{key}/rename", json={"title": "ok"}, headers=admin)).status_code == 200
        assert (await c.delete(f"/todo/{key}", headers=admin)).status_code == 204
    assert ("POST", "toggle") in seen and ("POST", "rename") in seen and ("DELETE", "delete") in seen
    assert ("POST", None) in seen and ("GET", None) in seen
    await sm.aclose()


async def test_record_paths_refuse_wrong_methods(backend: Backend) -> None:
    sm = backend.app()
    async with client(sm) as c:
        key = (await c.post("/todo", headers=JSON)).json()["id"]
        assert (await c.put("/todo", headers=JSON)).status_code == 405
        assert (await c.put(f"/todo/{key}", headers=JSON)).status_code == 405
        assert (await c.get(f"/todo/{key}/toggle", headers=JSON)).status_code == 405
        assert (await c.post(f"/todo/{key}/nope", headers=JSON)).status_code == 404
        assert (await c.head("/todo")).status_code == 200
    await sm.aclose()


async def test_memory_sessions_expire_when_idle() -> None:
    """MemoryStore's clock is injectable: TTLs without waiting."""

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    class Visits(Entity):
        count: int = 0

        @event
        def increment(self) -> None:
            self.count += 1

    clock = Clock()
    store = MemoryStore(default_ttl=10, sweep_interval=0, clock=clock)
    sm = StarModel(entities=[Visits], secret_key="k", stores={"memory": store})
    async with client(sm) as c:
        await c.post("/visits/increment", headers=JSON)
        clock.now = 8
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 1}  # read: now expires at 18
        clock.now = 17
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 1}
        clock.now = 27.5
        assert (await c.get("/visits", headers=JSON)).json() == {"count": 0}
        assert len(store) == 0
    await sm.aclose()


async def test_a_record_created_with_a_chosen_id_keeps_it_and_an_existing_one_is_refused(backend: Backend) -> None:
    sm = backend.app()
    Todo = backend.entity
    moved = await sm.create(Todo, id="from-sqlite-42", title="moved in")
    assert moved.id == "from-sqlite-42"
    assert (await backend.stored("from-sqlite-42") or {})["title"] == "moved in"
    with pytest.raises(ValueError, match="todo 'from-sqlite-42' already exists"):
        await sm.create(Todo, id="from-sqlite-42", title="again")
    assert (await sm.get(Todo, "from-sqlite-42")).title == "moved in"  # untouched
    for bad in ("", "x" * 201, "tab\there"):
        with pytest.raises(ValueError, match="An id is text of 1 to 200 printable characters"):
            await sm.create(Todo, id=bad)
    fresh = await sm.create(Todo, title="new")
    assert len(fresh.id) == 32 and fresh.id != "from-sqlite-42"  # made up when not given
    async with client(sm) as c:  # the HTTP create never takes an id from the page
        made = await c.post("/todo", json={"id": "from-sqlite-42", "title": "page"}, headers=JSON)
        assert made.status_code == 201 and made.json()["id"] != "from-sqlite-42"
        # an event creating a record with a chosen id: 409 over HTTP when it exists, nothing saved
        taken = await c.post(f"/todo/{fresh.id}/duplicate", json={"as_id": "from-sqlite-42"}, headers=JSON)
        assert taken.status_code == 409 and "todo 'from-sqlite-42' already exists" in taken.json()["error"]
        assert (await sm.get(Todo, fresh.id)).edits == 0  # the event rolled back
        copied = await c.post(f"/todo/{fresh.id}/duplicate", json={"as_id": "copy-1"}, headers=JSON)
        assert copied.status_code == 200 and (await sm.get(Todo, "copy-1")).title == "new"


async def test_sm_list_gives_records_in_creation_order_not_by_id(backend: Backend) -> None:
    sm = backend.app()
    Todo = backend.entity
    for key in ("m", "z", "a"):
        await sm.create(Todo, id=key, title=key)
    assert [t.id for t in await sm.list(Todo)] == ["m", "z", "a"]
    assert [t.id for t in await sm.list(Todo, limit=1, offset=1)] == ["z"]  # offset skips the oldest

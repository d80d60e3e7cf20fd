"""Schema drift: a field added to a SQL entity whose table was not migrated (``schema="add"`` adds
the column, ``schema="check"`` refuses with a 503 naming it), and JSON states whose field changed
type (a clear error naming the entity, the field and the upgrade hook; the hook upgrades them)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import model_validator
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.stores.sql import SQLStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON
from tests.support.services import drop_redis_keys, require

pytestmark = pytest.mark.anyio


class NoteV1(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "note"}
    title: str = ""


class NoteV2(Entity):  # the same entity, a release later: one field more
    model_config = {"scope": "record", "store": "sql", "name": "note"}
    title: str = ""
    stars: int = 3
    tags: list[str] = []


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://testserver")


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A database URL and a table prefix of the test's own (its table dropped afterwards)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'drift.db'}"
    else:
        url = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
    prefix = f"d{uuid.uuid4().hex[:8]}_"
    yield url, prefix
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{prefix}note"'))
    finally:
        await engine.dispose()


def app(entity: type[Entity], url: str, prefix: str, **options: Any) -> StarModel:
    store = SQLStore(url, table_prefix=prefix, **options)
    return StarModel(entities=[entity], secret_key="k", base_path="", stores={"sql": store})


async def columns(url: str, table: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda c: inspect(c).get_columns(table))
        return {column["name"] for column in found}
    finally:
        await engine.dispose()


async def saved_by_v1(url: str, prefix: str) -> str:
    old = app(NoteV1, url, prefix)
    note = await old.create(NoteV1, title="written before the upgrade")
    await old.aclose()
    return note.id


async def test_schema_add_adds_the_missing_columns_and_old_rows_read_the_defaults(
    database: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = database
    note_id = await saved_by_v1(url, prefix)
    assert "stars" not in await columns(url, f"{prefix}note")

    sm = app(NoteV2, url, prefix)  # schema="add" is the default
    caplog.set_level(logging.WARNING, logger="starmodel_asgi.stores")
    async with client(sm) as c:
        response = await c.get(f"/note/{note_id}", headers=JSON)
        assert response.status_code == 200
        assert response.json() == {"id": note_id, "title": "written before the upgrade", "stars": 3, "tags": []}
        made = await c.post("/note", json={}, headers=JSON)
        assert made.status_code == 201
    await sm.create(NoteV2, id="starred", title="new", stars=5, tags=["x"])
    assert (await sm.get(NoteV2, "starred")).stars == 5
    await sm.aclose()
    assert {"stars", "tags"} <= await columns(url, f"{prefix}note")
    added = [r.getMessage() for r in caplog.records if "added column" in r.getMessage()]
    assert len(added) == 2 and all(f"{prefix}note" in m and "NoteV2" in m for m in added)
    assert any("stars" in m for m in added) and any("tags" in m for m in added)


async def test_schema_check_refuses_the_entity_naming_the_columns_and_the_alembic_command(
    database: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = database
    note_id = await saved_by_v1(url, prefix)
    sm = app(NoteV2, url, prefix, schema="check")
    caplog.set_level(logging.ERROR, logger="starmodel_asgi.stores")
    async with client(sm) as c:
        for _ in range(2):
            response = await c.get(f"/note/{note_id}", headers=JSON)
            assert response.status_code == 503
            assert "stars, tags" in response.text and "alembic revision --autogenerate" in response.text
        assert (await c.post("/note", json={}, headers=JSON)).status_code == 503
    logged = [r.getMessage() for r in caplog.records if "alembic upgrade head" in r.getMessage()]
    assert len(logged) == 1 and "stars, tags" in logged[0]  # once, not per request
    assert "stars" not in await columns(url, f"{prefix}note")  # nothing altered
    await sm.aclose()

    migrated = app(NoteV2, url, prefix)  # the columns added ("add"; Alembic would do the same)
    assert (await migrated.get(NoteV2, note_id)).stars == 3
    await migrated.aclose()
    checked = app(NoteV2, url, prefix, schema="check")  # now it serves
    assert (await checked.get(NoteV2, note_id)).title == "written before the upgrade"
    await checked.aclose()


async def test_the_apps_schema_setting_applies_to_a_store_given_without_its_own(database: tuple[str, str]) -> None:
    url, prefix = database
    note_id = await saved_by_v1(url, prefix)
    given = SQLStore(url, table_prefix=prefix)
    sm = StarModel(entities=[NoteV2], secret_key="k", base_path="", stores={"sql": given}, schema="check")
    async with client(sm) as c:
        assert (await c.get(f"/note/{note_id}", headers=JSON)).status_code == 503
    await sm.aclose()
    assert "stars" not in await columns(url, f"{prefix}note")
    own = SQLStore(url, table_prefix=prefix, schema="add")  # the store's own setting wins
    sm = StarModel(entities=[NoteV2], secret_key="k", base_path="", stores={"sql": own}, schema="check")
    assert (await sm.get(NoteV2, note_id)).stars == 3
    await sm.aclose()


def test_a_bad_schema_setting_fails_at_build_and_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"schema='drop': must be \"add\" .* or \"check\""):
        StarModel(entities=[NoteV2], secret_key="k", schema="drop")  # type: ignore[arg-type]
    monkeypatch.setenv("STARMODEL_SCHEMA", "sometimes")
    with pytest.raises(ValueError, match="STARMODEL_SCHEMA='sometimes'"):
        StarModel(entities=[NoteV2], secret_key="k")
    monkeypatch.setenv("STARMODEL_SCHEMA", "check")
    assert StarModel(entities=[NoteV2], secret_key="k").settings.schema == "check"
    assert StarModel(entities=[NoteV2], secret_key="k", schema="add").settings.schema == "add"  # code wins


class BoardV1(Entity):
    model_config = {"scope": "global", "store": "redis", "name": "board"}
    tags: str = ""  # "a,b": comma-separated text


class BoardV2(Entity):  # tags became a list: old states hold a string
    model_config = {"scope": "global", "store": "redis", "name": "board"}
    tags: list[str] = []


class BoardV2Upgraded(Entity):
    model_config = {"scope": "global", "store": "redis", "name": "board"}
    tags: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tags"), str):  # saved before tags was a list
            data = {**data, "tags": [t for t in data["tags"].split(",") if t]}
        return data


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    prefix = f"smtest:drift:{uuid.uuid4().hex[:8]}:"
    yield url, prefix
    await drop_redis_keys(url, prefix)


async def test_a_type_change_on_redis_is_a_clear_error_and_the_upgrade_hook_reads_old_states(
    redis_prefix: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = redis_prefix

    def redis_app(entity: type[Entity]) -> StarModel:
        return StarModel(
            entities=[entity], secret_key="k", base_path="", stores={"redis": RedisStore(url, prefix=prefix)}
        )

    old = redis_app(BoardV1)
    async with old.edit(BoardV1) as board:
        board.tags = "red,green"
    await old.aclose()

    caplog.set_level(logging.ERROR, logger="starmodel_asgi.events")
    strict = redis_app(BoardV2)
    async with client(strict) as c:
        response = await c.get("/board", headers=JSON)
    assert response.status_code == 500
    for named in ("BoardV2", "tags", 'model_validator(mode="before")'):
        assert named in response.json()["error"]
        assert any(named in r.getMessage() for r in caplog.records)
    with pytest.raises(Exception, match="the stored state no longer fits the entity"):
        await strict.get(BoardV2)
    await strict.aclose()

    upgraded = redis_app(BoardV2Upgraded)
    async with client(upgraded) as c:
        assert (await c.get("/board", headers=JSON)).json() == {"tags": ["red", "green"]}
    async with upgraded.edit(BoardV2Upgraded) as board:  # saved back in the new shape
        board.tags.append("blue")
    await upgraded.aclose()
    assert (await redis_app(BoardV2).get(BoardV2)).tags == ["red", "green", "blue"]

"""A setting whose optional dependency is missing fails when the app is built, naming the extra."""

from __future__ import annotations

import sys

import pytest

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.extras import MissingExtra


class Saved(Entity):
    model_config = {"store": "sql"}
    count: int = 0


class Cached(Entity):
    model_config = {"store": "redis"}
    count: int = 0


class InPage(Entity):
    model_config = {"store": "client"}
    count: int = 0


@pytest.mark.parametrize(
    ("entity", "missing", "message"),
    [
        (Saved, "sqlalchemy", 'store="sql" needs pip install "starmodel-asgi[sql]"'),
        (Saved, "aiosqlite", 'needs pip install "starmodel-asgi[sql]" (could not import aiosqlite)'),
        (Cached, "redis", 'store="redis" needs pip install "starmodel-asgi[redis]"'),
    ],
)
def test_a_store_without_its_extra_fails_at_build(
    monkeypatch: pytest.MonkeyPatch, entity: type[Entity], missing: str, message: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import now raises ImportError
    with pytest.raises(MissingExtra) as caught:
        StarModel(entities=[entity], secret_key="k")
    assert message in str(caught.value)


def test_the_driver_of_the_database_url_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingExtra, match=r"could not import asyncpg"):
        StarModel(entities=[Saved], secret_key="k", database_url="postgresql+asyncpg://u@h/db")


def test_the_page_store_needs_no_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("sqlalchemy", "redis", "asyncpg", "aiosqlite"):
        monkeypatch.setitem(sys.modules, module, None)
    StarModel(entities=[InPage], secret_key="k")


def test_a_bad_setting_is_named_at_build() -> None:
    class Odd(Entity):
        model_config = {"scope": "tab"}  # type: ignore[typeddict-item]

    with pytest.raises(ValueError, match=r'Odd: model_config "scope" must be one of'):
        StarModel(entities=[Odd], secret_key="k")


@pytest.mark.parametrize(
    ("url", "missing", "message"),
    [
        ("redis://127.0.0.1:6379/0", "redis", 'broadcast_url="redis://..." needs pip install "starmodel-asgi[redis]"'),
        ("postgresql://u@h/db", "asyncpg", 'broadcast_url="postgresql://..." needs pip install "starmodel-asgi[sql]"'),
    ],
)
def test_a_broadcast_without_its_extra_fails_at_build(
    monkeypatch: pytest.MonkeyPatch, url: str, missing: str, message: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(MissingExtra) as caught:
        StarModel(entities=[InPage], secret_key="k", broadcast_url=url)
    assert message in str(caught.value)

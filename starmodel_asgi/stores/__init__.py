"""Where entity state lives: one ``Store`` protocol (``base.py``), one module per backend, and the
factory that picks one by ``store=`` and checks its extra is installed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starmodel_asgi.extras import require
from starmodel_asgi.stores.base import Contention, KeyedLocks, Slot, State, Store, Stored, Transaction, ttl_for

if TYPE_CHECKING:
    from starmodel_asgi.settings import SchemaMode
    from starmodel_asgi.spec import StoreKind

__all__ = ["Contention", "KeyedLocks", "Slot", "State", "Store", "Stored", "Transaction", "store_from_kind", "ttl_for"]

#: The module each SQLAlchemy async driver needs, by URL scheme's driver part.
SQL_DRIVERS = {"aiosqlite": "aiosqlite", "asyncpg": "asyncpg", "psycopg": "psycopg", "aiomysql": "aiomysql"}


def store_from_kind(
    kind: StoreKind, *, database_url: str, redis_url: str, ttl: float | None, schema: SchemaMode = "add"
) -> Store:
    """The store for ``store=kind``. Fails here, when the app is built, if its extra is missing."""
    if kind == "memory":
        from starmodel_asgi.stores.memory import MemoryStore

        return MemoryStore(default_ttl=ttl)
    if kind == "sql":
        require("sqlalchemy", "sql", 'store="sql"')
        driver = database_url.partition("://")[0].partition("+")[2]
        if driver in SQL_DRIVERS:
            require(SQL_DRIVERS[driver], "sql", f"database_url {database_url.partition(':')[0]}://")
        from starmodel_asgi.stores.sql import SQLStore

        return SQLStore(database_url, default_ttl=ttl, schema=schema)
    if kind == "redis":
        require("redis", "redis", 'store="redis"')
        from starmodel_asgi.stores.redis import RedisStore

        return RedisStore(redis_url, default_ttl=ttl)
    raise ValueError(f"no store {kind!r} on the server (store='client' keeps the state in the page)")

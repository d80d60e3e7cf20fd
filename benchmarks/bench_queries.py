"""Queries against the way the TodoMVC build had to do without them, on every server store.

For N records (half done, in 50 rooms): "items left" as ``sm.count(Todo, where={"done": False})``
(what a live list's aggregate costs per change and process) against paging through every record
with ``sm.list`` and counting in Python; and one room's messages as ``sm.list(where={"room": ...})``
against the same paging loop, filtered in Python.

    python benchmarks/bench_queries.py [--records 10000] [--runs 5]

PostgreSQL and Redis come from ``STARMODEL_TEST_POSTGRES_URL`` and ``STARMODEL_TEST_REDIS_URL``
(skipped when unset).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from starmodel_asgi import Entity, StarModel
from starmodel_asgi.stores import Store


def make_todo(store: str) -> type[Entity]:
    class Todo(Entity):
        model_config = {"scope": "record", "store": store, "name": "todo", "indexes": ["done", "room"]}  # type: ignore[typeddict-item]
        title: str = ""
        room: str = ""
        done: bool = False

    return Todo


async def _timed(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    await fn()  # warm: tables made, statements cached
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def one_store(name: str, kind: str, store: Store, records: int, runs: int) -> None:
    todo = make_todo(kind)
    sm = StarModel([todo], base_path="", secret_key="bench", stores={kind: store})
    try:
        for i in range(records):
            await sm.create(todo, title=f"t{i}", room=f"r{i % 50}", done=i % 2 == 0)

        async def every() -> list[Any]:
            out: list[Any] = []
            while page := await sm.list(todo, limit=100, offset=len(out)):
                out += page
            return out

        async def left_by_paging() -> int:
            return sum(1 for t in await every() if not t.done)

        async def left_by_count() -> int:
            return await sm.count(todo, where={"done": False})

        async def room_by_paging() -> list[Any]:
            return [t for t in await every() if t.room == "r7"][-20:]

        async def room_by_query() -> list[Any]:
            return await sm.list(todo, limit=20, where={"room": "r7"}, order="-created")

        assert await left_by_paging() == await left_by_count()
        paging, counting = await _timed(left_by_paging, runs), await _timed(left_by_count, runs)
        scanning, querying = await _timed(room_by_paging, runs), await _timed(room_by_query, runs)
        print(
            f"| {name}, {records} records | items left: {counting * 1000:.2f} ms vs {paging * 1000:.1f} ms "
            f"({paging / counting:.0f}x) | one room's newest 20: {querying * 1000:.2f} ms vs "
            f"{scanning * 1000:.1f} ms ({scanning / querying:.0f}x) |"
        )
    finally:
        await store.aclose()


async def main(records: int, runs: int) -> None:
    from starmodel_asgi.stores.memory import MemoryStore

    print("| store | count vs paging loop | filtered list vs paging loop |")
    print("|---|---|---|")
    await one_store("memory", "memory", MemoryStore(), records, runs)
    from starmodel_asgi.stores.sql import SQLStore

    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'q.db'}"
        await one_store("SQLite", "sql", SQLStore(url, table_prefix=f"bq{tag}_"), records, runs)
    postgres = os.environ.get("STARMODEL_TEST_POSTGRES_URL")
    if postgres:
        store = SQLStore(postgres, table_prefix=f"bq{tag}_")
        await one_store("PostgreSQL", "sql", store, records, runs)
        async with SQLStore(postgres).engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text(f'DROP TABLE IF EXISTS "bq{tag}_todo"'))
    redis = os.environ.get("STARMODEL_TEST_REDIS_URL")
    if redis:
        from starmodel_asgi.stores.redis import RedisStore

        prefix = f"benchq:{tag}:"
        await one_store("Redis", "redis", RedisStore(redis, prefix=prefix), records, runs)
        from redis.asyncio import Redis

        client = Redis.from_url(redis)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.records, args.runs)

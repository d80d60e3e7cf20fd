"""A global counter under concurrent clients on SQLite, PostgreSQL and Redis: StarModel's event
against a hand-written safe read-modify-write with the same library (SQLAlchemy 2 async,
redis-py asyncio) and the same locking (SQLite ``BEGIN IMMEDIATE`` behind one writer per
process, PostgreSQL ``SELECT ... FOR UPDATE``, a Redis lock). Both sides count lost updates.

    python benchmarks/stores_bench.py [--clients 16] [--each 50] [--rounds 3]

PostgreSQL and Redis come from ``STARMODEL_TEST_POSTGRES_URL`` / ``STARMODEL_TEST_REDIS_URL``
(skipped when unset); each run uses its own table, key prefix and SQLite file.
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
from asgi_driver import Driver
from datastar_py.sse import ServerSentEventGenerator as SSE
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from starmodel_asgi import Entity, StarModel, event


def make_entity(store: str) -> type[Entity]:
    class Tally(Entity):
        model_config = {"scope": "global", "store": store, "name": "tally"}  # type: ignore[typeddict-item]
        count: int = 0

        @event
        async def increment(self) -> None:
            self.count += 1

    return Tally


class Baseline:
    """``POST /tally/increment``: read, add one, write, under the store's lock; a Datastar answer."""

    def __init__(self, read_modify_write: Callable[[], Awaitable[int]]) -> None:
        self.rmw = read_modify_write

    def app(self) -> Starlette:
        async def increment(request: Request) -> Response:
            count = await self.rmw()
            return Response(SSE.patch_signals({"tally": {"count": count}}), media_type="text/event-stream")

        return Starlette(routes=[Route("/tally/increment", increment, methods=["POST"])])


async def sql_baseline(url: str, table: str) -> tuple[Baseline, Callable[[], Awaitable[int]], Any]:
    from sqlalchemy import event as sa_event
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    sqlite = url.startswith("sqlite")
    writer = anyio.Lock()
    if sqlite:

        def connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.cursor().execute("PRAGMA journal_mode=WAL")

        sa_event.listen(engine.sync_engine, "connect", connect)
        sa_event.listen(engine.sync_engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        await conn.execute(text(f"INSERT INTO {table} VALUES (1, 0)"))
    lock = " FOR UPDATE" if not sqlite else ""

    async def rmw() -> int:
        async with writer if sqlite else _nothing(), engine.begin() as conn:
            n = (await conn.execute(text(f"SELECT n FROM {table} WHERE id = 1{lock}"))).scalar_one() + 1
            await conn.execute(text(f"UPDATE {table} SET n = :n WHERE id = 1"), {"n": n})
            return int(n)

    async def final() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT n FROM {table} WHERE id = 1"))).scalar_one())

    async def close() -> None:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()

    return Baseline(rmw), final, close


async def redis_baseline(url: str, key: str) -> tuple[Baseline, Callable[[], Awaitable[int]], Any]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    local = anyio.Lock()  # one waiter per process: redis-py's lock polls while it waits

    async def rmw() -> int:
        async with local, client.lock(key + ":lock", timeout=60):
            n = int(await client.get(key) or 0) + 1
            await client.set(key, n)
            return n

    async def final() -> int:
        return int(await client.get(key) or 0)

    async def close() -> None:
        await client.delete(key, key + ":lock")
        await client.aclose()

    return Baseline(rmw), final, close


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def hammer(app: Any, clients: int, each: int) -> float:
    """``clients`` concurrent clients post ``each`` increments; requests per second."""
    headers = [(b"datastar-request", b"true"), (b"content-type", b"application/json")]

    async def client() -> None:
        driver = Driver(app)
        for _ in range(each):
            status = await driver("POST", "/tally/increment", b"", b"{}", headers)
            assert status == 200, status

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(client)
    return clients * each / (time.perf_counter() - start)


async def measure_store(kind: str, url: str, clients: int, each: int, rounds: int) -> tuple[float, float, int, int]:
    """(baseline req/s, StarModel req/s, updates lost by the baseline, by StarModel)."""
    run = uuid.uuid4().hex[:10]
    store = "redis" if kind == "redis" else "sql"
    entity = make_entity(store)
    if kind == "redis":
        from starmodel_asgi.stores.redis import RedisStore

        sm_store: Any = RedisStore(url, prefix=f"bench-{run}:")
        baseline, final, close = await redis_baseline(url, f"bench-{run}:count")
    else:
        from starmodel_asgi.stores.sql import SQLStore

        sm_store = SQLStore(url, table_prefix=f"bench_{run}_")
        baseline, final, close = await sql_baseline(url, f"bench_{run}_baseline")
    sm = StarModel([entity], base_path="", secret_key="bench", stores={store: sm_store})
    apps = {"baseline": baseline.app(), "starmodel": sm}
    rates: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            rates[name].append(await hammer(app, clients, each))
    expected = clients * each * rounds
    lost_base = expected - await final()
    lost_ours = expected - (await sm.get(entity)).count  # type: ignore[attr-defined]
    await close()
    if kind != "redis":
        from sqlalchemy import text

        async with sm_store.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE bench_{run}_tally"))
    else:
        await sm_store.client.delete(*[k async for k in sm_store.client.scan_iter(f"bench-{run}:*")])
    await sm.aclose()
    return statistics.median(rates["baseline"]), statistics.median(rates["starmodel"]), lost_base, lost_ours


def store_urls(tmp: Path) -> dict[str, str]:
    urls = {"SQLite": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    if os.environ.get("STARMODEL_TEST_POSTGRES_URL"):
        urls["PostgreSQL"] = os.environ["STARMODEL_TEST_POSTGRES_URL"]
    if os.environ.get("STARMODEL_TEST_REDIS_URL"):
        urls["Redis"] = os.environ["STARMODEL_TEST_REDIS_URL"]
    return urls


async def measure(clients: int, each: int, rounds: int) -> dict[str, tuple[float, float, int, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for name, url in store_urls(Path(tmp)).items():
            figures[name] = await measure_store("redis" if name == "Redis" else "sql", url, clients, each, rounds)
        return figures


async def main(clients: int, each: int, rounds: int) -> None:
    print(f"{clients} clients x {each} increments x {rounds} rounds, median requests/s, lost updates")
    print(f"{'store':12} {'baseline':>9} {'starmodel':>9} {'ratio':>6} {'lost b':>7} {'lost s':>7}")
    for name, (base, ours, lost_b, lost_s) in (await measure(clients, each, rounds)).items():
        print(f"{name:12} {base:9.0f} {ours:9.0f} {ours / base:6.2f} {lost_b:7d} {lost_s:7d}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--each", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.clients, args.each, args.rounds)

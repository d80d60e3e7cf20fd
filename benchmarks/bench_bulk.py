"""A bulk change as one unit of work: "clear completed" over N done records, on SQLite and PostgreSQL.

StarModel: one event that lists the records and deletes each done one through ``request.app.delete``
(one unit: one transaction, one live-list message). Baseline: the least a developer would write by
hand with SQLAlchemy 2 async, one transaction that locks the done rows and deletes them
(``SELECT ... FOR UPDATE`` then one ``DELETE ... WHERE key IN``). Also shown: the same records
deleted by N separate ``sm.delete`` calls (N units), which is what the event cost before units.

    python benchmarks/bench_bulk.py [--records 500] [--runs 3]

PostgreSQL comes from ``STARMODEL_TEST_POSTGRES_URL`` (skipped when unset).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import httpx
from sqlalchemy import delete, select

from starmodel_asgi import Entity, EventRequest, StarModel, event
from starmodel_asgi.stores.sql import KEY, SQLStore


class Todo(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "todo"}
    title: str = ""
    done: bool = False

    @event
    async def clear_done(self, request: EventRequest) -> None:
        for todo in await request.app.list(Todo, limit=10_000):
            if todo.done:
                await request.app.delete(Todo, todo.id)


async def _fill(sm: StarModel, records: int) -> str:
    keep = await sm.create(Todo, title="keep")
    for i in range(records):
        await sm.create(Todo, title=f"t{i}", done=True)
    return keep.id


async def one_run(url: str, records: int) -> tuple[float, float, float]:
    """Seconds for: the baseline's transaction, StarModel's one event, N separate deletes."""
    store = SQLStore(url, table_prefix=f"b{uuid.uuid4().hex[:8]}_")
    sm = StarModel([Todo], base_path="", secret_key="bench", stores={"sql": store})
    spec = sm.spec(Todo)
    try:
        await _fill(sm, records)
        table = await store.table(spec)
        started = time.perf_counter()
        async with store.engine.begin() as conn:
            done = select(table.c[KEY]).where(table.c.done.is_(True))
            keys = [row[0] for row in (await conn.execute(done.with_for_update())).all()]
            await conn.execute(delete(table).where(table.c[KEY].in_(keys)))
        baseline = time.perf_counter() - started

        keep = await _fill(sm, records)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sm), base_url="http://b") as client:
            started = time.perf_counter()
            response = await client.post(f"/todo/{keep}/clear_done", headers={"Accept": "application/json"})
            ours = time.perf_counter() - started
            assert response.status_code == 200, response.text

        await _fill(sm, records)
        started = time.perf_counter()
        for todo in await sm.list(Todo, limit=10_000):
            if todo.done:
                await sm.delete(Todo, todo.id)
        separate = time.perf_counter() - started
    finally:
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{store.table_prefix}todo"')
        await sm.aclose()
    return baseline, ours, separate


async def measure(records: int, runs: int) -> dict[str, tuple[float, float, float]]:
    """Median milliseconds per database: (baseline, one event, separate deletes)."""
    urls: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        urls["SQLite"] = f"sqlite+aiosqlite:///{Path(tmp) / 'bulk.db'}"
        if os.environ.get("STARMODEL_TEST_POSTGRES_URL"):
            urls["PostgreSQL"] = os.environ["STARMODEL_TEST_POSTGRES_URL"]
        results = {}
        for name, url in urls.items():
            samples = [await one_run(url, records) for _ in range(runs)]
            results[name] = tuple(1000 * statistics.median(s[i] for s in samples) for i in range(3))
    return results  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name, (base, ours, separate) in anyio.run(measure, args.records, args.runs).items():
        print(
            f"{name}: clear {args.records} done records: baseline {base:.0f} ms, one event {ours:.0f} ms "
            f"({base / ours:.2f}x), {args.records} separate deletes {separate:.0f} ms"
        )


if __name__ == "__main__":
    main()

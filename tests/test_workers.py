"""No lost updates across processes: two real uvicorn workers share one SQL database or Redis."""

from __future__ import annotations

import contextlib
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.headers import JSON
from tests.support.servers import run_worker
from tests.support.services import require

pytestmark = pytest.mark.anyio

INCREMENTS = 1000
CONCURRENCY = 50


def _backend(kind: str, tmp_path: Path) -> tuple[str, str]:
    if kind == "sqlite":
        return "sql", f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}"
    if kind == "postgres":
        return "sql", require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
    return "redis", require("STARMODEL_TEST_REDIS_URL", "Redis")


async def _stored_count(store: str, url: str, prefix: str) -> int:
    """The tally as the database itself holds it, read without the app."""
    if store == "redis":
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            raw = await client.get(f"{prefix}state:tally:global")
            assert raw is not None
            return int(httpx.Response(200, content=raw).json()["count"])
        finally:
            await client.aclose()
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f'SELECT count FROM "{prefix}tally"'))).scalar_one())
    finally:
        await engine.dispose()


async def _drop(store: str, url: str, prefix: str) -> None:
    if store == "redis":
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
        return
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for table in ("tally", "visits", "item"):
                await conn.execute(text(f'DROP TABLE IF EXISTS "{prefix}{table}"'))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", ["postgres", "redis", "sqlite"])
async def test_concurrent_increments_over_two_workers_are_all_kept(kind: str, tmp_path: Path) -> None:
    store, url = _backend(kind, tmp_path)
    prefix = f"w{uuid.uuid4().hex[:8]}_" if store == "sql" else f"smtest:{uuid.uuid4().hex}:"
    env = {"SM_WORKER_STORE": store, "SM_WORKER_URL": url, "SM_WORKER_PREFIX": prefix}
    try:
        with ExitStack() as stack:
            workers = [stack.enter_context(run_worker("tests.support.worker_app:app", env)) for _ in range(2)]
            limit = anyio.Semaphore(CONCURRENCY)
            statuses: list[int] = []

            async def increment(client: httpx.AsyncClient, base: str) -> None:
                async with limit:
                    response = await client.post(f"{base}/tally/increment", headers=JSON)
                    statuses.append(response.status_code)

            started = time.monotonic()
            # idle connections are dropped well before uvicorn's 5 s keep-alive timeout closes
            # them server-side: reusing one as it closes is a "Server disconnected" race
            limits = httpx.Limits(max_connections=2 * CONCURRENCY, keepalive_expiry=1)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                async with anyio.create_task_group() as tg:
                    for i in range(INCREMENTS):
                        tg.start_soon(increment, client, workers[i % 2])
                elapsed = time.monotonic() - started
                answers = [(await client.get(f"{base}/tally", headers=JSON)).json() for base in workers]
        count = await _stored_count(store, url, prefix)
    finally:
        await _drop(store, url, prefix)
    print(f"{kind}: {INCREMENTS} increments over 2 workers in {elapsed:.2f}s")
    assert statuses.count(200) == INCREMENTS, {s: statuses.count(s) for s in set(statuses)}
    assert answers == [{"count": INCREMENTS}, {"count": INCREMENTS}]
    assert count == INCREMENTS


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_a_session_moves_between_workers(kind: str, tmp_path: Path) -> None:
    """Sessions live in the shared store: a browser's session continues on the other worker."""
    store, url = _backend(kind, tmp_path)
    prefix = f"w{uuid.uuid4().hex[:8]}_" if store == "sql" else f"smtest:{uuid.uuid4().hex}:"
    env = {"SM_WORKER_STORE": store, "SM_WORKER_URL": url, "SM_WORKER_PREFIX": prefix}
    try:
        with ExitStack() as stack:
            first, second = (stack.enter_context(run_worker("tests.support.worker_app:app", env)) for _ in range(2))
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(f"{first}/visits/increment", headers=JSON)
                assert response.json() == {"count": 1}
                session = {**JSON, "Cookie": f"sm_session={response.cookies['sm_session']}"}
                client.cookies.clear()
                response = await client.post(f"{second}/visits/increment", headers=session)
                assert response.json() == {"count": 2}
                assert (await client.get(f"{first}/visits", headers=session)).json() == {"count": 2}
                forged = {**JSON, "Cookie": "sm_session=forged.value"}
                assert (await client.get(f"{second}/visits", headers=forged)).json() == {"count": 0}
    finally:
        await _drop(store, url, prefix)


@pytest.mark.parametrize("kind", ["postgres", "redis", "sqlite"])
async def test_one_worker_creates_while_the_other_deletes(kind: str, tmp_path: Path) -> None:
    """Worker one's events create records (a nested create in each event's unit) while worker two's
    events delete theirs (each event deletes its own record): nothing hangs, no 5xx, none lost."""
    store, url = _backend(kind, tmp_path)
    prefix = f"w{uuid.uuid4().hex[:8]}_" if store == "sql" else f"smtest:{uuid.uuid4().hex}:"
    env = {"SM_WORKER_STORE": store, "SM_WORKER_URL": url, "SM_WORKER_PREFIX": prefix}
    try:
        with ExitStack() as stack:
            one, two = (stack.enter_context(run_worker("tests.support.worker_app:app", env)) for _ in range(2))
            limits = httpx.Limits(max_connections=40, keepalive_expiry=1)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                parent = (await client.post(f"{one}/item", json={"title": "parent"}, headers=JSON)).json()["id"]
                doomed = [
                    (await client.post(f"{one}/item", json={"title": f"doomed{i}"}, headers=JSON)).json()["id"]
                    for i in range(20)
                ]
                statuses: list[int] = []

                async def spawn(i: int) -> None:
                    response = await client.post(f"{one}/item/{parent}/spawn?title=child{i:02}", headers=JSON)
                    statuses.append(response.status_code)

                async def drop(key: str) -> None:
                    statuses.append((await client.post(f"{two}/item/{key}/drop", headers=JSON)).status_code)

                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        for i in range(20):
                            tg.start_soon(spawn, i)
                            tg.start_soon(drop, doomed[i])
                titles = sorted(item["title"] for item in (await client.get(f"{two}/item?limit=100")).json())
    finally:
        await _drop(store, url, prefix)
    assert sorted(statuses) == [200] * 20 + [204] * 20
    assert titles == sorted(["parent", *(f"child{i:02}" for i in range(20))])


@pytest.mark.parametrize("kind", ["postgres", "redis", "sqlite"])
async def test_a_worker_killed_while_holding_an_instance_frees_it_within_seconds(kind: str, tmp_path: Path) -> None:
    """kill -9 of a worker in the middle of an event: the other worker gets the instance within a
    few seconds (the database ends the dead connection's transaction; a Redis lock's short lease,
    renewed only by a live holder, runs out), not after a minute."""
    store, url = _backend(kind, tmp_path)
    prefix = f"w{uuid.uuid4().hex[:8]}_" if store == "sql" else f"smtest:{uuid.uuid4().hex}:"
    env = {"SM_WORKER_STORE": store, "SM_WORKER_URL": url, "SM_WORKER_PREFIX": prefix}
    try:
        with ExitStack() as stack:
            one, two = (stack.enter_context(run_worker("tests.support.worker_app:app", env)) for _ in range(2))
            async with httpx.AsyncClient(timeout=60) as client:
                assert (await client.post(f"{two}/tally/increment", headers=JSON)).status_code == 200

                async def linger() -> None:
                    with contextlib.suppress(httpx.HTTPError):  # its worker is killed under it
                        await client.post(f"{one}/tally/linger?seconds=60", headers=JSON)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(linger)
                    await anyio.sleep(1.0)  # the lingering event holds the instance by now
                    one.process.kill()
                    killed = time.monotonic()
                    with anyio.fail_after(30):
                        response = await client.post(f"{two}/tally/increment", headers=JSON)
                    freed = time.monotonic() - killed
                    tg.cancel_scope.cancel()
    finally:
        await _drop(store, url, prefix)
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 2}
    assert freed < 8, f"the instance stayed locked {freed:.1f} s after its holder died"

"""Two uvicorn worker processes sharing Redis: a change made through one shows on the other's streams."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from typing import Annotated

import anyio
import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from starmodel_asgi import ClientWritable, Entity, StarModel, event
from starmodel_asgi.testing import LivePage
from tests.support.headers import DATASTAR
from tests.support.servers import read_live, run_worker
from tests.support.services import drop_redis_keys, require
from tests.support.sse import ListPage

pytestmark = pytest.mark.anyio


class Scoreboard(Entity):
    model_config = {"scope": "global", "store": "redis"}
    score: int = 0

    @event
    def score_up(self) -> None:
        self.score += 1


def worker_app() -> StarModel:
    """``uvicorn --factory tests.test_live_workers:worker_app``, configured by the environment:
    ``LIVE_WORKER_REDIS`` (Redis URL) and ``LIVE_WORKER_PREFIX`` (keys and channels namespace)."""
    from starmodel_asgi.stores.redis import RedisStore

    url, prefix = os.environ["LIVE_WORKER_REDIS"], os.environ["LIVE_WORKER_PREFIX"]
    return StarModel(
        entities=[Scoreboard],
        base_path="",
        secret_key="live-workers",
        broadcast_url=f"{url}?prefix={prefix}",
        stores={"redis": RedisStore(url, prefix=prefix)},
    )


@asynccontextmanager
async def two_workers(
    factory: str, env: dict[str, str], path: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, LivePage, LivePage]]:
    """Two uvicorn workers of ``tests.test_live_workers:<factory>``, a client of each, and a live
    stream of ``path`` open on each."""
    with ExitStack() as stack:
        a, b = (stack.enter_context(run_worker(f"tests.test_live_workers:{factory}", env, factory=True)) for _ in "ab")
        async with (
            httpx.AsyncClient(base_url=a, timeout=10) as on_a,
            httpx.AsyncClient(base_url=b, timeout=10) as on_b,
            read_live(on_a, path) as watching_a,
            read_live(on_b, path) as watching_b,
        ):
            yield on_a, on_b, watching_a, watching_b


def score_is(n: int) -> object:
    return lambda live: live.signals.get("scoreboard", {}).get("score") == n


async def test_an_event_on_one_worker_reaches_a_stream_on_the_other_within_a_second() -> None:
    redis_url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    env = {"LIVE_WORKER_REDIS": redis_url, "LIVE_WORKER_PREFIX": f"test-live-workers-{uuid.uuid4().hex}:"}
    try:
        await scores_across_workers(env)
    finally:
        await drop_redis_keys(redis_url, env["LIVE_WORKER_PREFIX"])


async def scores_across_workers(env: dict[str, str]) -> None:
    async with two_workers("worker_app", env, "/scoreboard/live") as (on_a, on_b, watching_a, watching_b):
        await watching_a.wait(score_is(0))
        await watching_b.wait(score_is(0))
        delays = []
        for n in range(1, 7):
            # alternate: post to one worker, watch the other
            poster, watcher = (on_a, watching_b) if n % 2 else (on_b, watching_a)
            started = time.monotonic()
            response = await poster.post("/scoreboard/score_up", headers=DATASTAR)
            assert response.status_code == 200
            with anyio.fail_after(5):
                await watcher.wait(score_is(n))
            delays.append(time.monotonic() - started)
        assert max(delays) < 1.0, delays
        # both pages end at the last change, having seen the states in order
        for live in (watching_a, watching_b):
            await live.wait(score_is(6))
            scores = [e.signals["scoreboard"]["score"] for e in live.events]
            assert scores == sorted(scores) and scores[-1] == 6


class Post(Entity):
    model_config = {"scope": "record", "presence": True, "store": "sql"}
    text: Annotated[str, ClientWritable] = ""

    @event
    def edit(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        return f'<li id="{self.dom_id}">{self.text}</li>'


class Lobby(Entity):
    model_config = {"scope": "global", "presence": True, "store": "sql"}
    topic: str = ""


def lists_app() -> StarModel:
    """``uvicorn --factory tests.test_live_workers:lists_app``: ``Post`` records and a ``Lobby`` on
    ``LIVE_WORKER_STORE`` (a database URL, tables prefixed ``LIVE_WORKER_PREFIX``), live through
    ``LIVE_WORKER_BROADCAST``; each worker repeats its viewer counts every 0.3 s."""
    from starmodel_asgi.stores.sql import SQLStore

    prefix = os.environ["LIVE_WORKER_PREFIX"]
    return StarModel(
        entities=[Post, Lobby],
        base_path="",
        secret_key="live-workers",
        broadcast_url=f"{os.environ['LIVE_WORKER_BROADCAST']}?prefix={prefix}",
        stores={"sql": SQLStore(os.environ["LIVE_WORKER_STORE"], table_prefix=prefix.replace("-", "_"))},
        presence_interval=0.3,
    )


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[str], dict[str, str]]]:
    """``backends(kind)``: Redis broadcast with the records in PostgreSQL, or PostgreSQL for both,
    under a prefix of the test's own; its tables are dropped afterwards."""
    made: list[dict[str, str]] = []

    def make(kind: str) -> dict[str, str]:
        postgres = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
        broadcast = require("STARMODEL_TEST_REDIS_URL", "Redis") if kind == "redis" else postgres
        env = {
            "LIVE_WORKER_BROADCAST": broadcast,
            "LIVE_WORKER_STORE": postgres,
            "LIVE_WORKER_PREFIX": f"lw{uuid.uuid4().hex[:12]}",
        }
        made.append(env)
        return env

    yield make
    for env in made:
        engine = create_async_engine(env["LIVE_WORKER_STORE"])
        try:
            async with engine.begin() as conn:
                for table in ("post", "lobby"):
                    await conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{env["LIVE_WORKER_PREFIX"]}{table}"')
        finally:
            await engine.dispose()


Backends = Callable[[str], dict[str, str]]


def posts(*texts: str) -> object:
    return lambda live: ListPage("#post-list").apply(live.events).texts == list(texts)


def viewers(name: str, n: int) -> object:
    return lambda live: live.signals.get(name, {}).get("_viewers") == n


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
async def test_a_live_list_follows_records_changed_on_either_worker(kind: str, backends: Backends) -> None:
    async with two_workers("lists_app", backends(kind), "/post/live") as (on_a, on_b, watching_a, watching_b):
        for live in (watching_a, watching_b):
            await live.wait(viewers("post", 2))  # both streams counted, across the workers
            await live.wait(posts())
        first = (await on_a.post("/post", json={"text": "hello"})).json()["id"]
        await on_b.post("/post", json={"text": "from b"})
        for live in (watching_a, watching_b):
            await live.wait(posts("hello", "from b"))
        await on_b.post(f"/post/{first}/edit", json={"text": "hello!"}, headers=DATASTAR)
        assert (await on_b.delete(f"/post/{first}")).status_code == 204
        for live in (watching_a, watching_b):
            await live.wait(posts("from b"))


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
async def test_viewers_are_counted_across_workers_and_a_killed_worker_drops_out(kind: str, backends: Backends) -> None:
    env = backends(kind)
    with ExitStack() as stack:
        a, b = (stack.enter_context(run_worker("tests.test_live_workers:lists_app", env, factory=True)) for _ in "ab")
        async with httpx.AsyncClient(base_url=a, timeout=10) as on_a, read_live(on_a, "/lobby/live") as watching_a:
            await watching_a.wait(viewers("lobby", 1))
            async with httpx.AsyncClient(base_url=b, timeout=10) as on_b:
                async with read_live(on_b, "/lobby/live") as one, read_live(on_b, "/lobby/live") as two:
                    for live in (watching_a, one, two):
                        await live.wait(viewers("lobby", 3))
                # closed streams are counted out at once
                await watching_a.wait(viewers("lobby", 1), timeout=2)
                async with read_live(on_b, "/lobby/live") as three:
                    await watching_a.wait(viewers("lobby", 2))
                    await three.wait(viewers("lobby", 2))
                    b.process.kill()  # kill -9: worker b says nothing
                    killed = time.monotonic()
                    await watching_a.wait(viewers("lobby", 1), timeout=5)
                    gone_after = time.monotonic() - killed
            # within four intervals of 0.3 s (three to expire, one to notice), with room for a busy machine
            assert gone_after < 2.5, gone_after


async def test_a_live_list_shows_every_edit_once_committed_on_postgresql(backends: Backends) -> None:
    """The list re-reads the store when told of a change: told before the commit, it could read
    the old row and keep showing it."""
    async with two_workers("lists_app", backends("postgresql"), "/post/live") as (on_a, _, watching_a, _):
        record = (await on_a.post("/post", json={"text": "v0"})).json()["id"]
        for n in range(1, 16):
            await on_a.post(f"/post/{record}/edit", json={"text": f"v{n}"}, headers=DATASTAR)
            await watching_a.wait(posts(f"v{n}"), timeout=5)

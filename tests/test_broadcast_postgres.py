"""PostgreSQL LISTEN/NOTIFY broadcast: delivery across instances and prefixes, the payload limit,
connections, reconnection, and live pages fed by another app sharing the database."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.broadcast import Payload, broadcast_from_url
from starmodel_asgi.spec import spec_of
from tests.support.headers import DATASTAR
from tests.support.servers import ROOT, read_live, run_server
from tests.support.services import require
from tests.test_broadcast import next_message

pytestmark = pytest.mark.anyio


@pytest.fixture
def postgres_url() -> str:
    return require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")


def unique(label: str) -> str:
    return f"test-{label}-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def admin(url: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection to inspect the server from outside the broadcast."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        yield conn
    finally:
        await conn.close()


async def eventually(check: Callable[[], Any], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def listening(*broadcasts: Any) -> None:
    async def check() -> bool:
        return all(b.listening for b in broadcasts)

    await eventually(check)


async def connections(conn: Any, application_name: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT application_name, count(*) FROM pg_stat_activity WHERE application_name LIKE $1 GROUP BY 1",
        application_name + "-%",
    )
    return {row[0]: row[1] for row in rows}


# -- choosing the backend --------------------------------------------------------------------


def test_url_scheme_picks_the_postgres_backend() -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast, notify_channel

    for scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        backend = broadcast_from_url(f"{scheme}://u@db:5433/app?prefix=app1:&sslmode=disable")
        assert isinstance(backend, PostgresBroadcast)
        assert backend.url == f"{scheme.removesuffix('+asyncpg')}://u@db:5433/app?sslmode=disable"
        assert (backend.prefix, backend.channel) == ("app1:", "starmodel:app1:")
    assert isinstance(StarModel([], broadcast_url="postgresql://u@db/app").broadcast, PostgresBroadcast)
    long = notify_channel("x" * 100)  # NOTIFY channels are identifiers: at most 63 bytes
    assert len(long) <= 63 and long != notify_channel("x" * 101)


def test_the_core_does_not_import_asyncpg() -> None:
    code = "import sys, starmodel_asgi; starmodel_asgi.StarModel([]); print('asyncpg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- delivery --------------------------------------------------------------------------------


async def test_delivers_across_instances_within_a_prefix_only(postgres_url: str) -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast

    shared, other_app = unique("app") + ":", unique("app") + ":"
    one, two = PostgresBroadcast(postgres_url, prefix=shared), PostgresBroadcast(postgres_url, prefix=shared)
    stranger = PostgresBroadcast(postgres_url, prefix=other_app)
    try:
        async with (
            one.subscribe("sm:room:1") as on_one,
            two.subscribe("sm:room:1") as on_two,
            two.subscribe("sm:room:2") as elsewhere,
            stranger.subscribe("sm:room:1") as on_stranger,
        ):
            await listening(one, two, stranger)
            await one.publish("sm:room:1", "hello")
            assert await next_message(on_one) == "hello"
            assert await next_message(on_two) == "hello"  # another process, same prefix
            await stranger.publish("sm:room:1", "marker")
            assert await next_message(on_stranger) == "marker"  # not "hello"
            await two.publish("sm:room:2", "marker")
            assert await next_message(elsewhere) == "marker"  # not "hello" either
            await one.publish("sm:room:1", "")
            assert await next_message(on_two) == ""  # an empty message is still a message
    finally:
        for broadcast in (one, two, stranger):
            await broadcast.aclose()


async def test_a_message_too_large_for_notify_arrives_as_reread(postgres_url: str) -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast

    prefix = unique("big")
    listener, publisher = PostgresBroadcast(postgres_url, prefix=prefix), PostgresBroadcast(postgres_url, prefix=prefix)
    try:
        async with listener.subscribe("sm:doc:1") as messages:
            await listening(listener)
            fits = "x" * 7900
            await publisher.publish("sm:doc:1", fits)
            assert await next_message(messages) == fits
            for too_large in ("x" * 9000, "é" * 4500):  # the limit counts bytes, not characters
                await publisher.publish("sm:doc:1", too_large)
                with anyio.fail_after(10):
                    assert await anext(messages) is None  # "you may have missed it: re-read"
                await publisher.publish("sm:doc:1", "small again")
                assert await next_message(messages) == "small again"
    finally:
        await listener.aclose()
        await publisher.aclose()


async def test_publish_fails_fast_without_a_server() -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast
    from tests.support.servers import free_port

    broadcast = PostgresBroadcast(f"postgresql://postgres@127.0.0.1:{free_port()}/db", timeout=1)
    try:
        with anyio.fail_after(3), pytest.raises((OSError, TimeoutError)):
            await broadcast.publish("sm:c:1", "lost")  # the caller logs it; the event still succeeded
    finally:
        await broadcast.aclose()


# -- connections -----------------------------------------------------------------------------


async def test_one_lazy_listener_and_aclose_closes_every_connection(postgres_url: str) -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast

    name = unique("close")
    broadcast = PostgresBroadcast(postgres_url, prefix=name, application_name=name)
    async with admin(postgres_url) as db:
        assert await connections(db, name) == {}  # nothing opened up front
        ended: list[str] = []

        async def follow(room: str, messages: AsyncIterator[Payload]) -> None:
            async for _ in messages:
                pass
            ended.append(room)

        async with anyio.create_task_group() as tg:
            rooms = [f"sm:room:{i}" for i in range(20)]
            for room in rooms:
                tg.start_soon(follow, room, await tg.start(_subscribed, broadcast, room))
            await listening(broadcast)
            await broadcast.publish("sm:room:0", "x")

            async def opened() -> bool:
                return await connections(db, name) == {f"{name}-listen": 1, f"{name}-publish": 1}

            await eventually(opened)  # 20 channels, one listening connection
            await broadcast.aclose()
            await eventually(lambda: _value(len(ended) == len(rooms)))  # every subscription ended
            tg.cancel_scope.cancel()

        async def closed() -> bool:
            return await connections(db, name) == {}

        await eventually(closed)
        assert not broadcast.listening and broadcast.subscriber_count() == 0


async def _subscribed(broadcast: Any, channel: str, *, task_status: Any) -> None:
    async with broadcast.subscribe(channel) as messages:
        task_status.started(messages)
        await anyio.sleep_forever()


async def test_reconnects_after_the_listener_is_terminated(postgres_url: str) -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast

    name, prefix = unique("kill"), unique("kill")
    listener = PostgresBroadcast(
        postgres_url, prefix=prefix, application_name=name, min_reconnect_delay=0.05, ping_interval=0.05
    )
    publisher = PostgresBroadcast(postgres_url, prefix=prefix)
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
    try:
        async with listener.subscribe("sm:c:1") as messages, admin(postgres_url) as db:
            await listening(listener)
            await publisher.publish("sm:c:1", "before")
            assert await next_message(messages) == "before"
            pid = await db.fetchval(query, f"{name}-listen")
            assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
            with anyio.fail_after(10):
                assert await anext(messages) is None  # listening again: re-read what was missed
            assert listener.listening
            assert await db.fetchval(query, f"{name}-listen") not in (None, pid)
            await publisher.publish("sm:c:1", "after")
            assert await next_message(messages) == "after"
    finally:
        await listener.aclose()
        await publisher.aclose()


# -- live pages across apps ------------------------------------------------------------------


class PgTally(Entity):
    model_config = {"scope": "global", "store": "sql"}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1


async def test_a_live_page_sees_a_change_made_through_another_app(postgres_url: str) -> None:
    from starmodel_asgi.broadcast.postgres import PostgresBroadcast
    from starmodel_asgi.stores.sql import SQLStore, table_name

    prefix, table_prefix = unique("live"), f"test_{uuid.uuid4().hex[:12]}_"

    def app(**options: Any) -> StarModel:
        store = SQLStore(postgres_url, table_prefix=table_prefix)
        return StarModel([PgTally], base_path="", secret_key="k", stores={"sql": store}, **options)

    reader = app(broadcast_url=f"{postgres_url}?prefix={prefix}")
    writer = app(broadcast=PostgresBroadcast(postgres_url, prefix=prefix))
    assert isinstance(reader.broadcast, PostgresBroadcast) and reader.broadcast.prefix == prefix
    try:
        with run_server(reader) as reader_url, run_server(writer) as writer_url:
            async with (
                httpx.AsyncClient(base_url=reader_url, timeout=10) as page,
                httpx.AsyncClient(base_url=writer_url, timeout=10) as other,
                read_live(page, "/pg_tally/live") as live,
            ):
                await live.wait(lambda s: s.signals.get("pg_tally") == {"count": 0})
                await eventually(lambda: _value(reader_url.call(lambda: reader.broadcast.listening)))
                for n in (1, 2):
                    assert (await other.post("/pg_tally/increment", headers=DATASTAR)).status_code == 200
                    await live.wait(lambda s, n=n: s.signals["pg_tally"]["count"] == n)
    finally:
        async with admin(postgres_url) as db:
            await db.execute(f'DROP TABLE IF EXISTS "{table_name(spec_of(PgTally), table_prefix)}"')


async def _value(value: bool) -> bool:
    return value

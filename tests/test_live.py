"""``GET /{entity}/live`` against a real uvicorn: state first, then every change, to the right pages only."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.broadcast.memory import MemoryBroadcast
from tests.support.headers import DATASTAR, JSON
from tests.support.servers import ServerURL, read_live, run_server, run_worker
from tests.support.services import require

pytestmark = pytest.mark.anyio


class Board(Entity):
    """Session scope (the default)."""

    count: int = 0
    note: str = ""

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event
    def write(self, text: str) -> None:
        self.note = text


class Profile(Entity):
    model_config = {"scope": "user"}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1


class Shared(Entity):
    model_config = {"scope": "global"}
    count: int = 0
    padding: int = 0  # bytes of filler in render(), to make pushes heavy

    @event
    def increment(self) -> None:
        self.count += 1

    @event
    def pad(self, size: int) -> None:
        self.padding = size

    def render(self) -> str:
        return f'<div id="shared-view">Shared count {self.count}{"x" * self.padding}</div>'


class Doc(Entity):
    model_config = {"scope": "record"}
    title: str = ""

    @event
    def rename(self, title: str) -> None:
        self.title = title


def user_header(request: Request) -> str | None:
    return request.headers.get("x-user")


@pytest.fixture(params=["memory", "redis"])
def broadcast(request: pytest.FixtureRequest) -> Iterator[Broadcast]:
    if request.param == "memory":
        yield MemoryBroadcast()
        return
    from starmodel_asgi.broadcast.redis import RedisBroadcast

    url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    yield RedisBroadcast(url, prefix=f"test-live-{uuid.uuid4().hex}:")


def make_app(broadcast: Broadcast | None = None, **options: Any) -> StarModel:
    return StarModel(
        entities=[Board, Profile, Shared, Doc],
        base_path="/",
        secret_key="test",
        broadcast=broadcast,
        get_user=user_header,
        **{"keepalive": 30.0, **options},
    )


@contextmanager
def serve(sm: StarModel) -> Iterator[ServerURL]:
    with run_server(sm) as url:
        yield url


@asynccontextmanager
async def client(url: str, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """One browser: its own cookie jar, hence its own session once it called the app."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as c:
        yield c


async def post(c: httpx.AsyncClient, path: str, headers: dict[str, str] = DATASTAR, **params: Any) -> httpx.Response:
    response = await c.post(path, params=params, headers=headers)
    assert response.status_code < 300, response.text
    return response


def count_is(n: int, name: str) -> Any:
    return lambda live: live.signals.get(name, {}).get("count") == n


async def test_stream_sends_current_state_then_every_change_from_any_route(broadcast: Broadcast) -> None:
    with serve(make_app(broadcast)) as url:
        async with client(url) as writer, client(url) as watcher:
            for _ in range(5):
                await post(writer, "/shared/increment")
            async with read_live(watcher, "/shared/live") as live:
                await live.wait(lambda s: len(s.events) >= 2)
                assert live.response is not None
                assert live.response.headers["content-type"].startswith("text/event-stream")
                first, view = live.events[:2]
                assert first.event == "datastar-patch-signals"
                assert first.signals == {"shared": {"count": 5, "padding": 0}}
                assert view.event == "datastar-patch-elements"
                assert view.elements == '<div id="shared-view">Shared count 5</div>'

                await post(writer, "/shared/increment")  # a Datastar request
                await live.wait(count_is(6, "shared"))
                await post(writer, "/shared/increment", headers=JSON)  # a JSON API call
                await live.wait(count_is(7, "shared"))
                await live.wait(lambda s: "Shared count 7<" in s.events[-1].elements)
                # each push carries only what changed, plus the re-rendered element
                patches = [e.signals for e in live.events if e.event == "datastar-patch-signals"]
                assert patches == [
                    {"shared": {"count": 5, "padding": 0}},
                    {"shared": {"count": 6}},
                    {"shared": {"count": 7}},
                ]


async def test_keepalive_comments_while_nothing_changes() -> None:
    with serve(make_app(keepalive=0.05)) as url:
        async with client(url) as c, read_live(c, "/shared/live") as live:
            await live.wait(lambda s: s.text.count(": keepalive\n\n") >= 3)
            assert [e.event for e in live.events] == ["datastar-patch-signals", "datastar-patch-elements"]


async def test_each_stream_gets_its_keepalive_when_it_alone_has_been_quiet_for_the_interval() -> None:
    """One ticker serves every stream of the process: a stream that keeps sending gets no
    comment, a quiet one beside it gets one each interval."""
    period, seconds = 1.0, 3.5
    with serve(make_app(keepalive=period)) as url:
        async with (
            client(url) as writer,
            client(url) as c,
            read_live(c, "/shared/live") as busy,
            read_live(c, "/board/live") as quiet,
        ):
            await busy.wait(lambda s: len(s.events) >= 2)
            await quiet.wait(lambda s: len(s.events) >= 1)
            with anyio.move_on_after(seconds):
                while True:
                    await post(writer, "/shared/increment")
                    await anyio.sleep(period / 10)
            assert busy.text.count(": keepalive\n\n") == 0
            assert 3 <= quiet.text.count(": keepalive\n\n") <= 4, quiet.text


async def test_a_client_that_stopped_reading_holds_up_no_other_streams_keepalive() -> None:
    """A stream whose client reads nothing is stuck in its send; the others still get their
    keep-alive comments."""
    with serve(make_app(keepalive=0.1)) as url:
        async with client(url) as writer, client(url) as c, stuck_stream(url):
            await anyio.sleep(0.3)  # its first view went out and it was kept alive
            for size in range(1, 9):  # 36 MB of elements: more than the sockets hold
                await post(writer, "/shared/pad", size=size * 1024 * 1024)
            await anyio.sleep(0.5)  # the ticker has had it send a comment (or wait to)
            async with read_live(c, "/board/live") as live:
                await live.wait(lambda s: s.text.count(": keepalive\n\n") >= 5)


@asynccontextmanager
async def stuck_stream(url: str) -> AsyncIterator[socket.socket]:
    """A client of ``/shared/live`` on a socket with a tiny receive buffer, that reads nothing
    unless the test reads from the socket."""
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = int(url.rsplit(":", 1)[1])
    await anyio.to_thread.run_sync(stuck.connect, ("127.0.0.1", port))
    try:
        request = f"GET /shared/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nDatastar-Request: true\r\n\r\n"
        stuck.sendall(request.encode())
        yield stuck
    finally:
        stuck.close()


async def test_live_of_a_missing_record_is_404_and_a_json_client_still_gets_a_stream() -> None:
    with serve(make_app()) as url:
        async with client(url) as c:
            missing = await c.get("/doc/nope/live", headers=DATASTAR)
            assert missing.status_code == 404
            async with read_live(c, "/board/live", headers=JSON) as live:
                await live.wait(count_is(0, "board"))
                assert live.response is not None
                assert live.response.headers["content-type"].startswith("text/event-stream")


async def test_a_retried_stream_resumes_with_the_current_state() -> None:
    """Datastar reopens a dropped stream; the new one starts from the state as it is now."""
    with serve(make_app()) as url:
        async with client(url) as page, client(url) as other:
            await post(page, "/board/increment")
            async with read_live(page, "/board/live") as live:
                await live.wait(count_is(1, "board"))
            # dropped: changes made meanwhile, by this session's other tab and by another session
            await post(page, "/board/increment", amount=10)
            await post(page, "/board/write", text="while away")
            await post(other, "/shared/increment")
            async with read_live(page, "/board/live") as live:
                await live.wait(lambda s: len(s.events) >= 1)
                assert live.events[0].signals == {"board": {"count": 11, "note": "while away"}}
            async with read_live(other, "/shared/live") as live:
                await live.wait(lambda s: len(s.events) >= 1)
                assert live.events[0].signals == {"shared": {"count": 1, "padding": 0}}


# -- who sees what ---------------------------------------------------------------------------


async def test_session_changes_reach_only_that_sessions_pages(broadcast: Broadcast) -> None:
    with serve(make_app(broadcast)) as url:
        async with client(url) as alice, client(url) as bob:
            await alice.get("/board")  # both get their session cookies
            await bob.get("/board")
            assert alice.cookies["sm_session"] != bob.cookies["sm_session"]
            async with (
                read_live(alice, "/board/live") as tab1,
                read_live(alice, "/board/live") as tab2,
                read_live(bob, "/board/live") as other,
            ):
                for live in (tab1, tab2, other):
                    await live.wait(lambda s: len(s.events) >= 1)
                await post(alice, "/board/write", text="SECRET-OF-ALICE")
                for _ in range(3):
                    await post(alice, "/board/increment")
                for tab in (tab1, tab2):
                    await tab.wait(lambda s: s.signals.get("board") == {"count": 3, "note": "SECRET-OF-ALICE"})
                await post(bob, "/board/increment", amount=100)  # the marker: bob's own change
                await other.wait(count_is(100, "board"))
                assert "SECRET" not in other.text
                assert [e.signals for e in other.events] == [
                    {"board": {"count": 0, "note": ""}},
                    {"board": {"count": 100}},
                ]
                for tab in (tab1, tab2):
                    assert '"count":100' not in tab.text


async def test_user_changes_reach_all_of_that_users_sessions(broadcast: Broadcast) -> None:
    with serve(make_app(broadcast)) as url:
        async with (
            client(url, **{"x-user": "alice"}) as laptop,
            client(url, **{"x-user": "alice"}) as phone,
            client(url, **{"x-user": "bob"}) as bob,
            client(url) as anonymous,
        ):
            assert (await anonymous.get("/profile/live", headers=DATASTAR)).status_code == 401
            async with (
                read_live(laptop, "/profile/live") as on_laptop,
                read_live(phone, "/profile/live") as on_phone,
                read_live(bob, "/profile/live") as on_bob,
            ):
                for live in (on_laptop, on_phone, on_bob):
                    await live.wait(count_is(0, "profile"))
                await post(laptop, "/profile/increment")
                await post(phone, "/profile/increment")
                for live in (on_laptop, on_phone):
                    await live.wait(count_is(2, "profile"))
                await post(bob, "/profile/increment")
                await on_bob.wait(count_is(1, "profile"))
                assert [e.signals for e in on_bob.events] == [{"profile": {"count": 0}}, {"profile": {"count": 1}}]


async def test_global_changes_reach_everyone(broadcast: Broadcast) -> None:
    with serve(make_app(broadcast)) as url:
        async with (
            client(url) as a,
            client(url) as b,
            client(url, **{"x-user": "carol"}) as c,
            read_live(a, "/shared/live") as on_a,
            read_live(b, "/shared/live") as on_b,
        ):
            await on_a.wait(count_is(0, "shared"))
            await on_b.wait(count_is(0, "shared"))
            await post(c, "/shared/increment")
            await on_a.wait(count_is(1, "shared"))
            await on_b.wait(count_is(1, "shared"))


async def test_record_changes_reach_its_watchers_only(broadcast: Broadcast) -> None:
    with serve(make_app(broadcast)) as url:
        async with client(url) as a, client(url) as b:
            one = (await a.post("/doc", json={}, headers=JSON)).json()["id"]
            two = (await a.post("/doc", json={}, headers=JSON)).json()["id"]
            async with (
                read_live(a, f"/doc/{one}/live") as a_one,
                read_live(b, f"/doc/{one}/live") as b_one,
                read_live(b, f"/doc/{two}/live") as b_two,
            ):
                for live in (a_one, b_one, b_two):
                    await live.wait(lambda s: len(s.events) >= 1)
                await post(a, f"/doc/{one}/rename", title="RECORD-ONE")
                for live in (a_one, b_one):
                    await live.wait(lambda s: s.signals["doc"]["title"] == "RECORD-ONE")
                await post(a, f"/doc/{two}/rename", title="two")
                await b_two.wait(lambda s: s.signals["doc"]["title"] == "two")
                assert "RECORD-ONE" not in b_two.text
                assert len(b_two.events) == 2


async def test_watchers_of_a_deleted_record_are_told_and_the_stream_ends(broadcast: Broadcast) -> None:
    with serve(make_app(broadcast)) as url:
        async with client(url) as a:
            doc = (await a.post("/doc", json={}, headers=JSON)).json()["id"]
            async with read_live(a, f"/doc/{doc}/live") as live:
                await live.wait(lambda s: len(s.events) >= 1)
                assert (await a.delete(f"/doc/{doc}", headers=JSON)).status_code == 204
                await live.wait(lambda s: s.signals["doc"].get("_deleted") is True)
                await live.wait(lambda s: s.ended)


# -- resources -------------------------------------------------------------------------------


def leak_check_app() -> Starlette:
    """The worker of the 500-streams test: the app, plus ``/_debug`` reporting what the process
    holds. Its memory is traced in its own process, away from the test's 500 clients;
    ``/_debug?snapshot=1`` also names the lines that grew most since the previous snapshot."""
    tracemalloc.start()
    sm = make_app()
    snapshots: list[tracemalloc.Snapshot] = []

    async def debug(request: Request) -> JSONResponse:
        gc.collect()
        report: dict[str, Any] = {
            "subscribers": sm.broadcast.subscriber_count(),  # type: ignore[attr-defined]
            "tasks": len(asyncio.all_tasks()),
            "memory": tracemalloc.get_traced_memory()[0],
        }
        if request.query_params.get("snapshot"):
            snapshots.append(tracemalloc.take_snapshot())
            report["blocks"] = len(snapshots[-1].traces)
            if len(snapshots) > 1:
                report["grew"] = [str(stat) for stat in snapshots[-1].compare_to(snapshots[-2], "lineno")[:5]]
        return JSONResponse(report)

    async def bare(request: Request) -> StreamingResponse:
        """The least a live endpoint holds: Starlette's own stream, one event sent, waiting."""

        async def events() -> AsyncIterator[str]:
            yield 'event: datastar-patch-signals\ndata: signals {"shared":{"count":0}}\n\n'
            await anyio.sleep_forever()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/_debug", debug), Route("/_bare", bare), Mount("/", sm)])


async def _open_and_drop(
    c: httpx.AsyncClient, n: int, path: str = "/shared/live", headers: dict[str, str] = DATASTAR
) -> dict[str, Any]:
    """Opens ``n`` streams at once, then drops them all; what ``/_debug`` said while they were open."""
    opened = anyio.Event()
    ready = 0

    async def one() -> None:
        nonlocal ready
        async with (
            c.stream("GET", path, headers=headers) as response,
            aclosing(response.aiter_bytes()) as chunks,
        ):
            assert b"datastar-patch-signals" in await anext(chunks)
            ready += 1
            if ready == n:
                opened.set()
            await anyio.sleep_forever()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
            await opened.wait()
            report: dict[str, Any] = (await c.get("/_debug")).json()
            tg.cancel_scope.cancel()  # every client goes away
    return report


async def _settled(c: httpx.AsyncClient, idle_tasks: int) -> dict[str, Any]:
    """Waits until the server has let go of every stream: no subscriber, no task left over."""
    with anyio.fail_after(20):
        while True:
            report = (await c.get("/_debug")).json()
            if report["subscribers"] == 0 and report["tasks"] <= idle_tasks:
                result: dict[str, Any] = (await c.get("/_debug", params={"snapshot": 1})).json()
                return result
            await anyio.sleep(0.05)


async def test_500_dropped_streams_leave_no_subscriber_task_or_memory_behind() -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    with run_worker("tests.test_live:leak_check_app", factory=True) as url:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
            idle = (await c.get("/_debug")).json()
            # warm-up at full size: imports, caches, the loop's tables grown to 500 connections
            assert (await _open_and_drop(c, 500))["subscribers"] == 500
            before = await _settled(c, idle["tasks"])
            assert (await _open_and_drop(c, 500))["subscribers"] == 500
            after = await _settled(c, idle["tasks"])
    assert after["tasks"] == idle["tasks"]
    # flat: anything kept per stream (a subscriber, a task, a frame, a dict) is 500 more blocks;
    # bytes may move a little with hash tables resized to the peak of 500 connections
    grew = after["grew"]
    assert after["blocks"] - before["blocks"] < 250, grew
    assert after["memory"] - before["memory"] < 128 * 1024, grew


async def test_an_idle_stream_holds_no_more_memory_than_a_bare_starlette_stream() -> None:
    """Heap held by the server per open stream that sent its first event, through uvicorn: a
    live stream (its subscription, tasks, state) against Starlette's ``StreamingResponse``, both
    uncompressed (httpx would take zstd: a compressed stream's cost is tests/test_compression.py's)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    n, held, plain = 200, {}, {**DATASTAR, "accept-encoding": "identity"}
    with run_worker("tests.test_live:leak_check_app", factory=True) as url:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
            idle = (await c.get("/_debug")).json()
            for path in ("/_bare", "/shared/live") * 2:  # the first round warms up
                before = await _settled(c, idle["tasks"])
                held[path] = ((await _open_and_drop(c, n, path, plain))["memory"] - before["memory"]) / n
    assert held["/shared/live"] <= 1.1 * held["/_bare"], held


SIGNAL_COUNT = re.compile(rb'datastar-patch-signals\ndata: signals \{"shared":\{"count":(\d+)')


async def test_a_stuck_client_does_not_block_others_and_gets_only_the_latest_state(broadcast: Broadcast) -> None:
    """One client opens a stream and stops reading; its socket fills up while others read on.
    Every push renders a 1 MB element, 40 times: a queue of them would be 40 MB for it alone."""
    size, pushes = 1024 * 1024, 40
    with serve(make_app(broadcast)) as url:
        async with client(url) as writer, client(url) as reader_a, client(url) as reader_b:
            await post(writer, "/shared/pad", size=size)
            async with stuck_stream(url) as stuck:

                async def follow(c: httpx.AsyncClient, seen: list[int]) -> None:
                    tail = b""
                    async with c.stream("GET", "/shared/live", headers=DATASTAR) as response:
                        async for chunk in response.aiter_bytes():
                            tail = tail[-200:] + chunk
                            seen += [int(m) for m in SIGNAL_COUNT.findall(tail[-len(chunk) - 200 :])]
                            if seen and seen[-1] == pushes:
                                return

                seen_a: list[int] = []
                seen_b: list[int] = []
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(follow, reader_a, seen_a)
                        tg.start_soon(follow, reader_b, seen_b)
                        for _ in range(pushes):
                            await post(writer, "/shared/increment")  # never waits for the stuck one
                assert seen_a[-1] == seen_b[-1] == pushes

                # now the stuck client reads everything it was sent: only part of the 40 MB
                received = bytearray()
                stuck.settimeout(10)
                while not re.search(rb'"count":%d\}' % pushes, received[-(size + 1000) :]):
                    data = await anyio.to_thread.run_sync(stuck.recv, 1 << 20)
                    assert data, "the server closed the stuck stream"
                    received += data
                counts = [int(m) for m in SIGNAL_COUNT.findall(received)]
                assert counts[-1] == pushes
                assert len(counts) < pushes // 2, counts
                assert len(received) < pushes * size // 2

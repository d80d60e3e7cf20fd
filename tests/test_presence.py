"""Presence at its own level: what workers publish while idle (one census an interval, not a note
per channel), and what a census repairs. Live streams counting viewers: tests/test_live_lists.py;
across worker processes (a killed worker drops out): tests/test_live_workers.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest

from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.broadcast.memory import MemoryBroadcast
from starmodel_asgi.presence import Presence
from starmodel_asgi.wire import CENSUS_CHANNEL, viewers_channel
from tests.support.services import require

pytestmark = pytest.mark.anyio


class SmallMessages(MemoryBroadcast):
    """In-process, but carrying only short messages, as PostgreSQL's NOTIFY does."""

    max_message = 400


@asynccontextmanager
async def broadcasts(kind: str, n: int) -> AsyncIterator[list[Broadcast]]:
    """``n`` broadcasts of one app, as ``n`` workers hold them: one shared in-process broadcast,
    or each its own connections to Redis or PostgreSQL under a prefix of the test's own."""
    prefix = f"test-presence-{uuid.uuid4().hex[:12]}:"
    made: list[Broadcast]
    if kind == "memory":
        made = [MemoryBroadcast()] * n
    elif kind == "small":
        made = [SmallMessages()] * n
    elif kind == "redis":
        from starmodel_asgi.broadcast.redis import RedisBroadcast

        made = [RedisBroadcast(require("STARMODEL_TEST_REDIS_URL", "Redis"), prefix=prefix) for _ in range(n)]
    else:
        from starmodel_asgi.broadcast.postgres import PostgresBroadcast

        url = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
        made = [PostgresBroadcast(url, prefix=prefix) for _ in range(n)]
    try:
        yield made
    finally:
        for broadcast in {id(b): b for b in made}.values():
            await broadcast.aclose()


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def overhear(broadcast: Broadcast, channel: str, heard: list[str], *, task_status: anyio.abc.TaskStatus) -> None:
    """Appends every message published on ``channel`` to ``heard`` (a real subscriber)."""
    async with broadcast.subscribe(channel, every=True) as messages:
        task_status.started()
        async for message in messages:
            if message is not None:  # None: the subscriber has just started listening
                heard.append(message)


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_an_idle_worker_publishes_one_census_an_interval_however_many_channels_it_watches(kind: str) -> None:
    names = [f"sm:room:{uuid.uuid4().hex}" for _ in range(50)]
    async with broadcasts(kind, 2) as (broadcast, listening), anyio.create_task_group() as tg:
        notes: list[str] = []
        censuses: list[str] = []
        for name in names:
            await tg.start(overhear, listening, viewers_channel(name), notes)
        await tg.start(overhear, listening, CENSUS_CHANNEL, censuses)
        await until(lambda: getattr(listening, "listening", True))  # Redis: subscribed
        presence = Presence(broadcast, interval=0.1)
        async with AsyncExitStack() as stack:
            for name in names:
                await stack.enter_async_context(presence.join(name))
            await until(lambda: len(notes) >= len(names))  # each channel's hello
            await anyio.sleep(0.3)
            notes.clear()
            censuses.clear()
            await anyio.sleep(1.0)  # ten intervals, idle
            assert notes == []  # no per-channel note while nothing changes
            assert 5 <= len(censuses) <= 11, len(censuses)
            assert json.loads(censuses[-1])["c"] == dict.fromkeys(names, 1)
        await presence.aclose()
        tg.cancel_scope.cancel()


async def lose_the_next_notes(broadcast: Broadcast, channel: str) -> None:
    """Pushes the notes waiting for ``channel``'s readers out of their bounded backlog (1,000), as
    a burst would: they are lost. (The in-process broadcast delivers without waiting, so nothing
    is read meanwhile.)"""
    for number in range(1000):
        await broadcast.publish(viewers_channel(channel), json.dumps({"w": "burst", "n": 0, "s": number}))


@pytest.mark.parametrize("kind", ["memory", "small"])
async def test_a_lost_note_is_repaired_by_the_next_census(kind: str) -> None:
    """``small``: each census takes several messages, each covering a range of the channels."""
    names = [f"sm:room:{n:02}" for n in range(30)]
    shrinks, leaves = names[20], names[25]
    async with broadcasts(kind, 1) as (broadcast,), anyio.create_task_group() as tg:
        a, b = Presence(broadcast, interval=0.5), Presence(broadcast, interval=0.5)
        censuses: list[str] = []
        await tg.start(overhear, broadcast, CENSUS_CHANNEL, censuses)
        async with AsyncExitStack() as on_a, AsyncExitStack() as on_b:
            for name in names:
                await on_a.enter_async_context(a.join(name))
                await on_b.enter_async_context(b.join(name))
            second, last = AsyncExitStack(), AsyncExitStack()
            await second.enter_async_context(b.join(shrinks))
            await last.enter_async_context(b.join(leaves))
            await until(lambda: a.count(shrinks) == 3 and a.count(leaves) == 3)

            censuses.clear()  # just after one of b's censuses: the next is an interval away
            await until(lambda: any(json.loads(c)["w"] == b.worker for c in censuses))
            if kind == "small":
                pages = [json.loads(c) for c in censuses if json.loads(c)["w"] == b.worker]
                assert len(pages) > 1 and all(len(c) <= SmallMessages.max_message for c in censuses)
            await second.aclose()
            await lose_the_next_notes(broadcast, shrinks)
            await last.aclose()
            await lose_the_next_notes(broadcast, leaves)
            await anyio.sleep(0.05)
            assert (a.count(shrinks), a.count(leaves)) == (3, 3)  # a missed both notes
            assert (b.count(shrinks), b.count(leaves)) == (2, 2)

            with anyio.fail_after(2):  # b's next census, within an interval
                await until(lambda: (a.count(shrinks), a.count(leaves)) == (2, 2))
            assert all(a.count(name) == 2 for name in names)
        await a.aclose()
        await b.aclose()
        tg.cancel_scope.cancel()


async def test_a_worker_heard_once_then_silent_drops_out_and_late_or_old_words_are_ignored() -> None:
    async with broadcasts("memory", 1) as (broadcast,):
        presence = Presence(broadcast, interval=0.2)
        async with presence.join("sm:room:a"), presence.join("sm:room:b"):

            async def census(number: int, counts: dict[str, int]) -> None:
                await broadcast.publish(CENSUS_CHANNEL, json.dumps({"w": "ghost", "s": number, "c": counts}))

            async def note(number: int, channel: str, count: int) -> None:
                note = json.dumps({"w": "ghost", "n": count, "s": number})
                await broadcast.publish(viewers_channel(channel), note)

            await census(5, {"sm:room:a": 4, "sm:room:b": 2, "sm:room:unwatched": 9})
            await until(lambda: (presence.count("sm:room:a"), presence.count("sm:room:b")) == (5, 3))
            assert presence.count("sm:room:unwatched") == 0
            await note(4, "sm:room:a", 1)  # older than the census: ignored
            await note(6, "sm:room:b", 7)
            await until(lambda: presence.count("sm:room:b") == 8)
            await census(5, {})  # the same census again, or an older one: ignored
            await anyio.sleep(0.05)
            assert (presence.count("sm:room:a"), presence.count("sm:room:b")) == (5, 8)
            await census(7, {"sm:room:b": 1})  # a channel a census leaves out has no viewer there
            await until(lambda: (presence.count("sm:room:a"), presence.count("sm:room:b")) == (1, 2))
            # then silent: gone within three intervals (and one to notice)
            with anyio.fail_after(0.8 + 0.4):
                await until(lambda: presence.count("sm:room:b") == 1)
            await broadcast.publish(CENSUS_CHANNEL, "not json")  # logged, ignored
            await broadcast.publish(CENSUS_CHANNEL, json.dumps({"w": "ghost", "s": 8, "c": ["sm:room:a"]}))
            await anyio.sleep(0.05)
            assert presence.count("sm:room:a") == 1
        await presence.aclose()


async def test_censuses_over_postgresql_are_split_to_fit_its_messages_and_read_whole() -> None:
    names = [f"sm:post:{uuid.uuid4().hex}" for _ in range(200)]  # about 10 KB of counts
    async with broadcasts("postgresql", 3) as (on_a, on_b, listening), anyio.create_task_group() as tg:
        censuses: list[str] = []
        await tg.start(overhear, listening, CENSUS_CHANNEL, censuses)
        a, b = Presence(on_a, interval=0.3), Presence(on_b, interval=0.3)
        async with AsyncExitStack() as stack:
            for name in names:
                await stack.enter_async_context(a.join(name))
                await stack.enter_async_context(b.join(name))
            await until(lambda: all(a.count(name) == b.count(name) == 2 for name in names), timeout=20)
            censuses.clear()
            await anyio.sleep(1.0)
            pages = [json.loads(c) for c in censuses if json.loads(c)["w"] == b.worker]
            number = pages[0]["s"]
            one = [page for page in pages if page["s"] == number]
            assert len(one) > 1  # one census, split
            assert {name for page in one for name in page["c"]} == set(names)
            assert [page["a"] for page in one[1:]] == [page["z"] for page in one[:-1]] and one[-1]["z"] is None
        await a.aclose()
        await b.aclose()
        tg.cancel_scope.cancel()


async def test_a_viewer_that_leaves_after_the_app_was_closed_and_opened_again_does_not_uncount_the_new_one() -> None:
    presence = Presence(MemoryBroadcast(), interval=5)
    channel = "sm:room:lobby"
    async with AsyncExitStack() as old_page:
        await old_page.enter_async_context(presence.join(channel))
        assert presence.count(channel) == 1
        await presence.aclose()  # a host's shutdown while the page is open
        async with presence.join(channel):  # a page after the app came back
            assert presence.count(channel) == 1
            await old_page.aclose()  # the old page's stream ends only now
            assert presence.count(channel) == 1  # it was counted by the closed app, not this one
    assert presence.count(channel) == 0
    await presence.aclose()

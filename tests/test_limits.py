"""Memory stays bounded under floods: sessions of cookieless clients, and the live caches."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.live import View, Views
from starmodel_asgi.recent import Recent
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.testing import StreamingTransport
from starmodel_asgi.values import Element
from tests.support.asgi import http_scope

pytestmark = pytest.mark.anyio

DATASTAR = {"datastar-request": "true"}


class Counter(Entity):
    count: int = 0
    note: str = "x" * 500  # about 1 KB stored per session

    @event
    async def increment(self) -> None:
        self.count += 1


class Board(Entity):
    model_config = {"scope": "global"}
    count: int = 0


class Item(Entity):
    model_config = {"scope": "record"}
    name: str = ""


async def post_without_cookie(app: Any, path: str) -> int:
    """One request as a server would pass it, from a client that keeps no cookie."""
    scope = http_scope("POST", path, {"datastar-request": "true", "content-length": "2"})
    sent = [{"type": "http.request", "body": b"{}", "more_body": False}]
    status = 0

    async def receive() -> Any:
        return sent.pop() if sent else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def test_a_50000_session_flood_keeps_memory_bounded_and_keeps_the_data() -> None:
    store = MemoryStore(default_ttl=24 * 3600, max_sessions=5_000)
    sm = StarModel([Counter, Board, Item], base_path="", secret_key="flood", stores={"memory": store})
    items = [await sm.create(Item, name=f"item {n}") for n in range(10)]
    async with sm.edit(Board) as board:
        board.count = 7
    for _ in range(200):  # warm-up: caches, imports
        await post_without_cookie(sm, "/counter/increment")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(50_000):
        assert await post_without_cookie(sm, "/counter/increment") == 200
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(store._once) + len(store._again) == 5_000  # the least recently used sessions went
    assert grown < 12 * 1024 * 1024, f"{grown / 1e6:.1f} MB"  # ~5,000 sessions of ~1.5 KB, not 50,000
    assert (await sm.get(Board)).count == 7  # global state and records are never evicted
    assert [i.name for i in await sm.list(Item)] == [i.name for i in items]


async def test_a_recent_session_survives_while_older_ones_are_dropped() -> None:
    store = MemoryStore(max_sessions=3)
    sm = StarModel([Counter], base_path="", secret_key="flood", stores={"memory": store})
    spec = sm.spec(Counter)
    for key in "abcd":
        async with store.hold(spec, key) as slot:
            await slot.save({"count": 1})
        await store.get(spec, "a")  # "a" keeps being used
    assert sorted(k for _, k in [*store._once, *store._again]) == ["a", "c", "d"]


class Profile(Entity):
    model_config = {"scope": "user"}
    name: str = ""

    @event
    async def rename(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize("uses", [1, 2])
async def test_a_flood_of_new_visitors_does_not_erase_people_using_the_site(uses: int) -> None:
    now = [0.0]
    store = MemoryStore(max_sessions=1_000, clock=lambda: now[0])
    sm = StarModel(
        [Counter, Profile],
        base_path="",
        secret_key="flood",
        stores={"memory": store},
        get_user=lambda request: request.headers.get("x-user"),
    )
    transport = StreamingTransport(sm)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as visitor:
        for _ in range(3):  # a visitor, not signed in, who comes back a few minutes later
            assert (await visitor.post("/counter/increment", json={}, headers=DATASTAR)).status_code == 200
            now[0] += 120
        signed_in = {"x-user": "ada"}
        rename = await visitor.post("/profile/rename", json={"name": "Ada"}, headers={**DATASTAR, **signed_in})
        assert rename.status_code == 200
        if uses == 1:
            for _ in range(2_500):  # 2.5x the bound, each without a cookie
                assert await post_without_cookie(sm, "/counter/increment") == 200
        else:  # each new client uses its cookie twice at once, as if it had come back
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as flood:
                for _ in range(1_250):
                    flood.cookies.clear()
                    for _ in range(2):
                        assert (await flood.post("/counter/increment", json={}, headers=DATASTAR)).status_code == 200
        assert (await visitor.get("/counter")).json() == {"count": 3, "note": "x" * 500}
        assert (await visitor.get("/profile", headers=signed_in)).json() == {"name": "Ada"}
    assert len(store._once) + len(store._again) == 1_000  # still bounded


def test_the_live_view_cache_is_bounded_by_bytes() -> None:
    views = Views(size=256, max_bytes=2 * 1024 * 1024)
    big = "y" * 100_000
    for n in range(100):  # 100 states of 100 KB, each rendered as 100 KB of HTML
        views.put("sm:board:global", f'{{"n":{n},"text":"{big}"}}', View({"text": big}, [Element(big)]))
    assert views._recent.bytes <= 2 * 1024 * 1024
    assert len(views._recent) == 5  # 400 KB each: the newest five


def test_recent_drops_the_oldest_first() -> None:
    recent: Recent[str, int] = Recent(size=3, max_bytes=100)
    for n, key in enumerate("abcd"):
        recent.put(key, n, 10)
    assert [recent.get(k) for k in "abcd"] == [None, 1, 2, 3]
    recent.put("e", 4, 95)  # too big for the others to stay
    assert [recent.get(k) for k in "bcde"] == [None, None, None, 4]

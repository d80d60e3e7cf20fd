"""Filtered live lists and aggregates on real uvicorn: a chat with rooms follows only its room's
messages (a message moved between rooms leaves one list and joins the other), across two servers
sharing Redis, and "N items left" is pushed when any record changes, counted once per change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Literal

import httpx
import pytest

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.query import EVERYTHING, Query
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.testing import LivePage
from tests.support.headers import DATASTAR
from tests.support.servers import read_live, run_server
from tests.support.services import drop_redis_keys, require
from tests.support.sse import ListPage

pytestmark = pytest.mark.anyio


def make_message(store: Literal["memory", "redis"]) -> type[Entity]:
    class Message(Entity):
        model_config = {
            "scope": "record",
            "store": store,
            "indexes": ["room", "read"],
            "aggregates": {"unread": {"read": False}},
        }
        text: Annotated[str, ClientWritable] = ""
        room: Annotated[str, ClientWritable] = "lobby"
        read: bool = False

        @event
        def move(self, room: str) -> None:
            self.room = room

        @event
        def mark_read(self) -> None:
            self.read = True

        @event
        @classmethod
        async def read_all(cls, request: EventRequest) -> None:
            for message in await request.app.list(cls, limit=1000, where={"read": False}):
                async with request.app.edit(cls, message.id) as editing:
                    editing.read = True

        def render(self) -> str:
            return f'<li id="{self.dom_id}">{self.text}</li>'

    return Message


def showing(*texts: str) -> Callable[[LivePage], bool]:
    return lambda live: ListPage("#message-list").apply(live.events).texts == list(texts)


def unread(count: int) -> Callable[[LivePage], bool]:
    return lambda live: live.signals.get("message", {}).get("_count") == {"unread": count}


async def post(client: httpx.AsyncClient, text: str, room: str) -> str:
    response = await client.post("/message", json={"message": {"text": text, "room": room}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@asynccontextmanager
async def serving(sm: StarModel) -> AsyncIterator[httpx.AsyncClient]:
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client


async def test_a_rooms_live_list_follows_only_its_messages_and_the_unread_count() -> None:
    message = make_message("memory")
    sm = StarModel([message], base_path="", secret_key="rooms")
    async with serving(sm) as client:
        first = await post(client, "hello a", "a")
        await post(client, "hello b", "b")
        async with read_live(client, "/message/live?room=a") as in_a, read_live(client, "/message/live?room=b") as in_b:
            await in_a.wait(showing("hello a"))
            await in_b.wait(showing("hello b"))
            await in_a.wait(unread(2))  # aggregates count the whole collection
            await post(client, "second a", "a")
            await in_a.wait(showing("hello a", "second a"))
            await in_b.wait(unread(3))
            assert ListPage("#message-list").apply(in_b.events).texts == ["hello b"]  # b never saw it

            await client.post(f"/message/{first}/move", json={"room": "b"}, headers=DATASTAR)
            await in_a.wait(showing("second a"))  # stopped matching: left
            await in_b.wait(showing("hello a", "hello b"))  # started matching: joined (in creation order)
            await client.post(f"/message/{first}/mark_read", headers=DATASTAR)
            await in_a.wait(unread(2))
            await in_b.wait(unread(2))
            assert (await client.post("/message/read_all", headers=DATASTAR)).status_code == 200
            await in_a.wait(unread(0))


class CountingStore(MemoryStore):
    """The memory store, counting the counts it serves."""

    counts: list[Query]

    async def count(self, spec: EntitySpec, query: Query = EVERYTHING) -> int:
        self.counts.append(query)
        return await super().count(spec, query)


async def test_streams_of_one_process_share_one_count_per_change() -> None:
    message = make_message("memory")
    store = CountingStore()
    store.counts = []
    sm = StarModel([message], base_path="", secret_key="rooms", stores={"memory": store})
    async with serving(sm) as client, AsyncExitStack() as stack:
        pages = [await stack.enter_async_context(read_live(client, f"/message/live?room=r{i % 3}")) for i in range(6)]
        for page in pages:
            await page.wait(unread(0))
        store.counts.clear()
        await post(client, "one", "r1")
        for page in pages:
            await page.wait(unread(1))
        assert len(store.counts) == 1  # six streams, one aggregate, one change: one count


async def test_a_filtered_live_list_follows_changes_made_on_another_server() -> None:
    from starmodel_asgi.broadcast.redis import RedisBroadcast
    from starmodel_asgi.stores.redis import RedisStore

    url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    prefix = f"smtest:lq{uuid.uuid4().hex[:8]}:"
    message = make_message("redis")

    def app() -> StarModel:
        stores = {"redis": RedisStore(url, prefix=prefix)}
        return StarModel(
            [message], base_path="", secret_key="rooms", stores=stores, broadcast=RedisBroadcast(url, prefix=prefix)
        )

    try:
        with run_server(app()) as a_url, run_server(app()) as b_url:
            async with (
                httpx.AsyncClient(base_url=a_url, timeout=10) as on_a,
                httpx.AsyncClient(base_url=b_url, timeout=10) as on_b,
            ):
                await post(on_b, "old", "a")
                async with read_live(on_a, "/message/live?room=a") as live:
                    await live.wait(showing("old"))
                    moving = await post(on_b, "from b", "b")
                    await post(on_b, "new", "a")
                    await live.wait(showing("old", "new"))
                    await on_b.post(f"/message/{moving}/move", json={"room": "a"}, headers=DATASTAR)
                    await live.wait(showing("old", "from b", "new"))
                    await live.wait(unread(3))
                    await on_b.post(f"/message/{moving}/move", json={"room": "b"}, headers=DATASTAR)
                    await live.wait(showing("old", "new"))
    finally:
        await drop_redis_keys(url, prefix)


def test_the_page_builder_takes_the_filter_and_declares_the_counts() -> None:
    message = make_message("memory")
    StarModel([message], base_path="/sm", secret_key="rooms")
    html = str(message.live_list(limit=20, where={"room": "a b", "read": False}, order="-created"))
    assert "@get('/sm/message/live?read=false&amp;room=a+b&amp;order=-created&amp;limit=20', {retry: 'always'})" in html
    assert '"_count":{"unread":0}' in html.replace("&quot;", '"')
    with pytest.raises(ValueError, match="Message has no field 'colour' to filter by"):
        message.live_list(where={"colour": "red"})  # when the page renders, not in the browser


async def test_a_bad_filter_on_a_live_list_is_422() -> None:
    message = make_message("memory")
    sm = StarModel([message], base_path="", secret_key="rooms")
    async with serving(sm) as client:
        response = await client.get("/message/live?read=maybe", headers={"Accept": "application/json"})
        assert response.status_code == 422
        assert "read" in response.json()["errors"]

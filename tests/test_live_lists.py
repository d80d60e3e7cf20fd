"""Live record lists (``GET /{entity}/live`` on a record entity) and presence (``_viewers``), on one
real uvicorn with the in-memory broadcast. Across workers: tests/test_live_workers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import httpx
import pytest
from pydantic import Field

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.lists import Row, Windows
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR
from tests.support.servers import ServerURL, read_live, run_server
from tests.support.sse import ListPage

pytestmark = pytest.mark.anyio


class Message(Entity):
    model_config = {"scope": "record", "presence": True}
    text: Annotated[str, ClientWritable, Field(min_length=1, max_length=200)] = "?"
    author: str = ""

    @event
    def edit(self, text: str) -> None:
        self.text = text

    @event
    def sign(self, author: str) -> None:
        self.author = author

    def render(self) -> str:
        return f'<li id="{self.dom_id}">{self.text}</li>'


class Note(Entity):
    """Renders without the element id: the list wraps it."""

    model_config = {"scope": "record"}
    text: str = ""

    def render(self) -> str:
        return f"<p>{self.text}</p>" if self.text != "boom" else 1 / 0  # type: ignore[return-value]


class Plain(Entity):
    model_config = {"scope": "record"}
    text: str = ""


class Room(Entity):
    model_config = {"scope": "global", "presence": True}
    topic: str = ""


class Composer(Entity):
    """Posts messages through ``sm.create`` inside its event, as a chat room would."""

    model_config = {"scope": "global"}
    sent: int = 0

    @event
    async def send(self, text: str) -> None:
        await APP[0].create(Message, text=text)
        self.sent += 1


APP: list[StarModel] = []


def build(**settings: Any) -> StarModel:
    sm = StarModel([Message, Note, Plain, Room, Composer], base_path="", secret_key="lists", **settings)
    APP[:] = [sm]
    return sm


async def test_a_bad_value_given_to_sm_create_inside_an_event_is_a_422_naming_the_field() -> None:
    sm = build()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        response = await client.post("/composer/send", json={"text": ""}, headers=DATASTAR)
        assert response.status_code == 422
        assert '"message":{"_error":"Invalid input: text: Text cannot be empty."' in response.text
        assert (await client.post("/composer/send", json={"text": "hi"})).json()["sent"] == 1
        assert (await sm.get(Composer)).sent == 1
        assert [m.text for m in await sm.list(Message)] == ["hi"]


@asynccontextmanager
async def serving(sm: StarModel) -> AsyncIterator[tuple[ServerURL, httpx.AsyncClient]]:
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield url, client


async def post(client: httpx.AsyncClient, text: str) -> str:
    response = await client.post("/message", json={"text": text})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def showing(*texts: str) -> Any:
    return lambda live: ListPage("#message-list").apply(live.events).texts == list(texts)


async def test_the_list_starts_with_the_newest_records_then_follows_creates_changes_and_deletes() -> None:
    async with serving(build()) as (_, client):
        for text in ("one", "two", "three"):
            await post(client, text)
        async with read_live(client, "/message/live?limit=2") as live:
            await live.wait(showing("two", "three"))
            first = live.events[0]
            assert (first.get("selector"), first.get("mode")) == ("#message-list", "inner")
            four = await post(client, "four")
            await live.wait(showing("three", "four"))  # appended; the oldest leaves the window
            await client.post(f"/message/{four}/edit", json={"text": "FOUR"}, headers=DATASTAR)
            await live.wait(showing("three", "FOUR"))
            assert live.events[-1].get("selector") == f"#message-{four}"  # morphed by its id
            assert (await client.delete(f"/message/{four}")).status_code == 204
            await live.wait(showing("two", "three"))  # removed; the next older one comes back first
            modes = [e.get("mode") for e in live.events[-2:]]
            assert modes == ["remove", "prepend"], modes


async def test_server_side_creates_edits_and_deletes_reach_the_list() -> None:
    sm = build()
    async with serving(sm) as (url, client), read_live(client, "/message/live") as live:
        await live.wait(showing())
        record = await url.run(sm.create(Message, text="from a task"))
        await live.wait(showing("from a task"))

        async def edit() -> None:
            async with sm.edit(Message, record.id) as message:
                message.text = "edited"

        await url.run(edit())
        await live.wait(showing("edited"))
        await url.run(sm.delete(Message, record.id))
        await live.wait(showing())


async def test_a_record_without_its_element_id_is_wrapped_and_one_that_fails_to_render_is_left_out() -> None:
    sm = build()
    async with serving(sm) as (url, client):
        good = await url.run(sm.create(Note, text="fine"))
        await url.run(sm.create(Note, text="boom"))
        async with read_live(client, "/note/live") as live:
            await live.wait(lambda live: bool(live.events))
            assert live.events[0].elements == f'<div id="note-{good.id}"><p>fine</p></div>'


async def test_a_list_of_an_entity_without_render_is_404_naming_the_fix() -> None:
    async with serving(build()) as (_, client):
        response = await client.get("/plain/live", headers=DATASTAR)
        assert response.status_code == 404
        assert "Plain has no render()" in response.text


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x"])
async def test_a_bad_limit_is_422(query: str) -> None:
    async with serving(build()) as (_, client):
        response = await client.get(f"/message/live?{query}", headers={"Accept": "application/json"})
        assert response.status_code == 422
        assert "limit" in response.json()["error"]


def test_a_page_asking_a_live_list_for_more_than_the_app_sends_fails_when_it_renders() -> None:
    build(list_limit=20)
    assert "?limit=20" in Message.live_list(limit=20)
    with pytest.raises(ValueError, match=r"Message.live_list\(limit=21\): the app sends 1..20 records per list"):
        Message.live_list(limit=21)  # else the browser would get a 422 and show an empty list
    with pytest.raises(ValueError, match="list_limit"):
        Message.live_list(limit=0)


async def test_authorize_is_asked_for_each_record_and_refused_ones_stay_off_the_page() -> None:
    asked: list[tuple[str | None, str | None]] = []

    def authorize(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        record = request.path_params.get("id")
        asked.append((event, record))
        return record is None or record not in hidden

    hidden: set[str] = set()
    sm = build(authorize=authorize)
    async with serving(sm) as (url, client):
        mine = await url.run(sm.create(Message, text="mine"))
        theirs = await url.run(sm.create(Message, text="theirs"))
        hidden.add(theirs.id)
        async with read_live(client, "/message/live") as live:
            await live.wait(showing("mine"))
            assert (None, theirs.id) in asked and (None, mine.id) in asked
            later = await url.run(sm.create(Message, text="later"))
            await live.wait(showing("mine", "later"))
            hidden.add(later.id)  # refused from now on: the next change takes it off the page
            await client.post(f"/message/{mine.id}/edit", json={"text": "MINE"}, headers=DATASTAR)
            await live.wait(showing("MINE"))


async def test_presence_counts_the_open_streams_of_an_instance_and_of_a_list() -> None:
    async with serving(build()) as (_, client):

        def viewers(n: int) -> Any:
            return lambda live: live.signals.get("room", {}).get("_viewers") == n

        async with read_live(client, "/room/live") as first:
            await first.wait(viewers(1))
            async with read_live(client, "/room/live") as second:
                await first.wait(viewers(2))
                await second.wait(viewers(2))
                async with read_live(client, "/message/live") as listing:  # a list counts its own
                    await listing.wait(lambda live: live.signals.get("message", {}).get("_viewers") == 1)
            await first.wait(viewers(1))


async def test_the_state_of_a_presence_entity_still_streams_beside_its_viewers() -> None:
    sm = build()
    async with serving(sm) as (url, client), read_live(client, "/room/live") as live:

        async def set_topic() -> None:
            async with sm.edit(Room) as room:
                room.topic = "lunch"

        await live.wait(lambda live: live.signals.get("room", {}).get("_viewers") == 1)
        await url.run(set_topic())
        await live.wait(lambda live: live.signals["room"].get("topic") == "lunch")


def test_the_list_element_and_holder_declare_viewers_for_presence_entities() -> None:
    build()
    element = str(Message.live_list(limit=20, class_="chat"))
    assert element.startswith('<div id="message-list"')
    assert "@get('/message/live?limit=20', {retry: 'always'})" in element and 'class="chat"' in element
    assert "&quot;_viewers&quot;:0" in element
    assert "&quot;_viewers&quot;:0" in str(Room.holder(sync="live"))
    assert "_viewers" not in str(Note.live_list())
    with pytest.raises(TypeError, match=r"live_list needs a record entity \(scope=\"record\"\)"):
        Room.live_list()


@pytest.mark.parametrize(
    ("config", "error"),
    [({"presence": "yes"}, "must be True or False"), ({"presence": True, "store": "client"}, 'store="client"')],
)
def test_presence_settings_are_checked_when_the_app_is_built(config: dict[str, Any], error: str) -> None:
    entity = type("Badge", (Entity,), {"__annotations__": {"n": int}, "n": 0, "model_config": config})
    with pytest.raises(ValueError, match=error):
        StarModel([entity], secret_key="x")


async def test_a_viewer_leaving_while_others_stay_is_counted_at_once() -> None:
    async with serving(build()) as (_, client):
        streams = [read_live(client, "/room/live") for _ in range(3)]
        async with streams[0] as a, streams[1] as b:
            async with streams[2] as c:
                for live in (a, b, c):
                    await live.wait(lambda live: live.signals.get("room", {}).get("_viewers") == 3)
            with anyio.fail_after(2):
                await a.wait(lambda live: live.signals["room"]["_viewers"] == 2)


async def test_a_records_event_ignores_the_namespace_when_it_holds_another_record() -> None:
    """A page listing many records shares one ``$message`` namespace: an event on one record
    must not write another's values into it."""
    sm = build()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        first, second = await post(client, "first"), await post(client, "second")

        async def bump(on: str, namespace: dict[str, Any]) -> str:
            response = await client.post(f"/message/{on}/sign", json={"author": "ann", "message": namespace})
            assert response.status_code == 200, response.text
            return str((await client.get(f"/message/{on}")).json()["text"])

        # the page's namespace holds the second record: its text is not written into the first
        assert await bump(first, {"id": second, "text": "second"}) == "first"
        assert await bump(second, {"id": second, "text": "typed"}) == "typed"  # its own: written
        assert await bump(first, {"text": "no id"}) == "no id"  # no id: taken as the page's


async def test_a_record_whose_authorize_fails_is_left_out_and_the_list_goes_on() -> None:
    failing: set[str] = set()

    def authorize(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        if request.path_params.get("id") in failing:
            raise RuntimeError("the permission service is down")
        return True

    sm = build(authorize=authorize)
    async with serving(sm) as (url, client):
        bad = await url.run(sm.create(Message, text="bad"))
        failing.add(bad.id)
        await url.run(sm.create(Message, text="good"))
        async with read_live(client, "/message/live") as live:
            await live.wait(showing("good"))
            await url.run(sm.create(Message, text="later"))
            await live.wait(showing("good", "later"))


async def test_a_create_into_an_empty_list_is_appended() -> None:
    sm = build()
    async with serving(sm) as (url, client), read_live(client, "/message/live") as live:
        await live.wait(showing())
        await url.run(sm.create(Message, text="first"))
        await live.wait(showing("first"))
        assert live.events[-1].get("mode") == "append"


async def test_streams_waiting_for_one_failed_read_share_its_failure() -> None:
    windows, reads = Windows(), []

    async def failing_read(width: int) -> list[Row]:
        reads.append(width)
        await anyio.sleep(0.05)
        raise OSError("the store is down")

    async def ask() -> None:
        with pytest.raises(OSError):
            await windows.get("message", "token", 10, failing_read)

    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask)
    assert reads == [10]  # one read for all twenty, not twenty in a row


class CountingStore(MemoryStore):
    """The memory store, counting the list reads it serves."""

    reads: list[int]

    async def list(self, spec: EntitySpec, limit: int, offset: int, newest: bool = False) -> list[dict[str, Any]]:
        self.reads.append(limit)
        return await super().list(spec, limit, offset, newest)


async def test_lists_of_different_lengths_share_one_read_per_change() -> None:
    store = CountingStore()
    store.reads = []
    sm = build(stores={"memory": store})
    async with serving(sm) as (_, client):
        for text in ("one", "two", "three"):
            await post(client, text)
        async with (
            read_live(client, "/message/live?limit=1") as one,
            read_live(client, "/message/live?limit=2") as two,
            read_live(client, "/message/live?limit=5") as five,
        ):
            await one.wait(showing("three"))
            await two.wait(showing("two", "three"))
            await five.wait(showing("one", "two", "three"))
            store.reads.clear()
            await post(client, "four")
            await one.wait(showing("four"))
            await two.wait(showing("three", "four"))
            await five.wait(showing("one", "two", "three", "four"))
            assert store.reads == [5]  # the widest window, once, cut to each list's length


async def test_closing_the_app_with_viewers_open_then_using_it_again_counts_from_scratch() -> None:
    sm = build()
    async with serving(sm) as (url, client):
        async with read_live(client, "/room/live") as live:
            await live.wait(lambda live: live.signals.get("room", {}).get("_viewers") == 1)
            await url.run(sm.presence.aclose())  # e.g. a host's shutdown while pages are open
        async with read_live(client, "/room/live") as again:
            await again.wait(lambda live: live.signals.get("room", {}).get("_viewers") == 1)

"""Running events as a caller sees them: the behaviours mutation testing (issue 19 point 11) found no
test for in ``dispatch.py``: a generator event that deletes its own record after its last yield, a
background event's HTML target, its missing record, and what nested ``async with self:`` says."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Annotated, Any

import anyio
import httpx
import pytest
from pydantic import Field

from starmodel_asgi import ClientWritable, Entity, EventRequest, Redirect, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


class Note(Entity):
    model_config = {"scope": "record", "name": "note"}
    title: Annotated[str, ClientWritable] = ""

    @event
    async def retire(self, request: EventRequest) -> AsyncIterator[None]:
        self.title = "retiring"
        yield None  # the page sees the new title ...
        await request.app.delete(Note, self.id)  # ... then the record goes, with nothing else changed

    @event
    async def vanish(self, request: EventRequest) -> AsyncIterator[None]:
        yield None
        self.title = "vanishing"  # changed after the last yield, then deleted
        await request.app.delete(Note, self.id)

    @event
    async def publish(self) -> AsyncIterator[Any]:
        self.title = "published"
        yield None
        yield Redirect("/notes")  # the last step changes nothing else

    @event
    async def publish_then_fail(self) -> AsyncIterator[Any]:
        self.title = "published"
        yield Redirect("/notes")
        raise RuntimeError("the save never happens")

    @event
    async def publish_then_edit(self) -> AsyncIterator[Any]:
        yield Redirect("/notes")
        self.title = "edited after"
        yield None

    @event
    async def remove_loudly(self, request: EventRequest) -> str:
        self.title = "removed"
        await request.app.delete(Note, self.id)
        return "<p id='bye'>bye</p>"

    @event(thread=True)
    def spawn_in_steps(self, request: EventRequest, fail: bool = False) -> Iterator[None]:
        """A sync generator in a worker thread (thread=True), with the event's unit current."""
        anyio.from_thread.run(partial(request.app.create, Note, title="spawned"))
        yield None
        if fail:
            raise RuntimeError("after the first step")

    @event
    async def price(self, request: EventRequest, price: str) -> None:
        await request.app.create(Item, price=price)

    @event
    async def rename(self, title: str) -> AsyncIterator[None]:
        self.title = title
        yield None

    @event(background=True)
    async def touch(self) -> None:
        async with self:
            self.title = "touched"

    @event(background=True)
    async def peek(self) -> str:  # reads the record as it was saved: holds nothing
        return f"<p id='peek'>{self.title}</p>"


class Job(Entity):
    model_config = {"scope": "global", "name": "job"}
    done: int = 0

    @event(background=True, selector="#out", mode="inner")
    async def finish(self) -> str:
        async with self:
            self.done += 1
        return "<b>finished</b>"

    @event(background=True)
    async def nested(self) -> None:
        async with self, self:
            pass

    @event(background=True)
    async def stages(self) -> AsyncIterator[None]:
        async with self:
            self.done = 1
        yield None
        async with self:  # after the last yield: the last step carries it
            self.done = 2

    @event(selector="#log", mode="append")
    async def log(self) -> AsyncIterator[str]:
        yield "<li>one</li>"


class Item(Entity):
    model_config = {"scope": "record", "name": "item"}
    price: Annotated[int, Field(title="Unit price")] = 0


class Wiz(Entity):
    model_config = {"store": "client", "name": "wiz"}
    step: int = 1

    @event
    async def advance(self) -> AsyncIterator[None]:
        self.step += 1
        yield None


class Memo(Entity):
    model_config = {"scope": "global", "name": "memo"}
    note: Annotated[str, ClientWritable] = ""
    saves: int = 0

    @event
    async def save(self) -> AsyncIterator[None]:
        self.saves += 1
        yield None


ENTITIES = [Note, Job, Wiz, Memo, Item]


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t")


async def note(c: httpx.AsyncClient, title: str) -> str:
    response = await c.post("/note", json={"title": title}, headers=JSON)
    assert response.status_code == 201 and response.json()["title"] == title
    return str(response.json()["id"])


async def test_a_generator_event_that_deletes_its_record_after_its_last_yield_says_it_is_gone() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        first, second = await note(c, "a"), await note(c, "b")

        response = await c.post(f"/note/{first}/retire", headers=DATASTAR)
        assert response.status_code == 200
        events = parse_sse(response.text)
        signals = [e.signals for e in events if e.event == "datastar-patch-signals"]
        assert signals[-1] == {"note": {"_deleted": True}}  # the last step: gone, nothing else
        assert merged_signals(events)["note"] == {"title": "retiring", "_deleted": True}

        response = await c.post(f"/note/{second}/retire", headers=JSON)
        assert response.status_code == 200
        assert response.json() == {"id": second, "title": "retiring"}  # the state it was last seen in

        for key in (first, second):
            assert (await c.get(f"/note/{key}", headers=JSON)).status_code == 404
    await sm.aclose()


async def test_a_background_event_on_a_missing_record_is_404_and_creates_nothing() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        for name in ("touch", "peek"):
            response = await c.post(f"/note/nosuchnote/{name}", headers=JSON)
            assert response.status_code == 404, name
        assert (await c.get("/note/nosuchnote", headers=JSON)).status_code == 404
        assert (await c.get("/note", headers=JSON)).json() == []
    await sm.aclose()


async def test_a_background_events_html_goes_where_its_event_says() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        response = await c.post("/job/finish", headers=DATASTAR)
    events = parse_sse(response.text)
    (patch,) = [e for e in events if e.event == "datastar-patch-elements"]
    assert (patch.get("selector"), patch.get("mode"), patch.elements) == ("#out", "inner", "<b>finished</b>")
    assert merged_signals(events)["job"]["done"] == 1
    await sm.aclose()


async def test_nested_blocks_in_a_background_event_are_refused_by_name(caplog: pytest.LogCaptureFixture) -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
        async with client(sm) as c:
            response = await c.post("/job/nested", headers=JSON)
    assert response.status_code == 500
    assert response.json() == {"error": "Internal error in event job.nested", "errors": {}, "status": 500}
    assert "Job: async with self: blocks cannot nest" in caplog.text
    await sm.aclose()


async def test_a_generator_event_on_a_missing_record_is_404_and_creates_nothing() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        response = await c.post("/note/nosuchnote/rename", json={"title": "x"}, headers=JSON)
        assert response.status_code == 404
        assert (await c.get("/note/nosuchnote", headers=JSON)).status_code == 404
    await sm.aclose()


async def test_authorize_sees_the_record_a_generator_event_changes() -> None:
    def authorize(request: EventRequest, entity: type[Entity], event: str | None, record: Any) -> bool:
        return event != "rename" or record.title != "locked"

    sm = StarModel(ENTITIES, secret_key="k", authorize=authorize)
    async with client(sm) as c:
        locked, open_ = await note(c, "locked"), await note(c, "open")
        assert (await c.post(f"/note/{locked}/rename", json={"title": "x"}, headers=JSON)).status_code == 403
        assert (await c.post(f"/note/{open_}/rename", json={"title": "y"}, headers=JSON)).status_code == 200
        assert (await c.get(f"/note/{locked}", headers=JSON)).json()["title"] == "locked"
        assert (await c.get(f"/note/{open_}", headers=JSON)).json()["title"] == "y"
    await sm.aclose()


async def test_a_generator_event_on_a_client_store_starts_from_the_signals_sent() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        response = await c.post("/wiz/advance", json={"wiz": {"step": 4}}, headers=DATASTAR)
    assert merged_signals(parse_sse(response.text)) == {"wiz": {"step": 5}}
    await sm.aclose()


async def test_a_generator_event_keeps_what_the_page_may_write() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        response = await c.post("/memo/save", json={"memo": {"note": "from the page"}}, headers=DATASTAR)
        assert response.status_code == 200
        assert (await c.get("/memo", headers=JSON)).json() == {"note": "from the page", "saves": 1}
    await sm.aclose()


async def test_a_generator_events_html_goes_where_its_event_says() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        response = await c.post("/job/log", headers=DATASTAR)
    (patch,) = [e for e in parse_sse(response.text) if e.event == "datastar-patch-elements"]
    assert (patch.get("selector"), patch.get("mode"), patch.elements) == ("#log", "append", "<li>one</li>")
    await sm.aclose()


async def test_a_background_event_tells_the_caller_what_it_changed_after_its_last_yield() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        response = await c.post("/job/stages", headers=DATASTAR)
        assert merged_signals(parse_sse(response.text))["job"]["done"] == 2
        assert (await c.get("/job", headers=JSON)).json()["done"] == 2
    await sm.aclose()


async def test_what_an_event_changed_after_its_last_yield_comes_with_the_news_that_it_is_gone() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        first, second = await note(c, "a"), await note(c, "b")
        response = await c.post(f"/note/{first}/vanish", headers=DATASTAR)
        signals = [e.signals for e in parse_sse(response.text) if e.event == "datastar-patch-signals"]
        assert signals[-1] == {"note": {"title": "vanishing", "_deleted": True}}
        response = await c.post(f"/note/{second}/vanish", headers=JSON)
        assert response.json() == {"id": second, "title": "vanishing"}
    await sm.aclose()


async def test_a_redirect_yielded_last_is_sent_once_the_state_is_saved() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        first, second = await note(c, "a"), await note(c, "b")
        response = await c.post(f"/note/{first}/publish", headers=DATASTAR)
        events = parse_sse(response.text)
        assert merged_signals(events)["note"]["title"] == "published"
        assert any("/notes" in e.elements for e in events if e.event == "datastar-patch-elements")
        response = await c.post(f"/note/{second}/publish", headers=JSON)
        assert (response.status_code, response.headers["location"]) == (303, "/notes")
        assert response.json() == {"id": second, "title": "published"}
        assert (await c.get(f"/note/{second}", headers=JSON)).json()["title"] == "published"
    await sm.aclose()


async def test_a_redirect_waits_for_the_save_and_is_never_sent_when_the_event_fails() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        first, second = await note(c, "a"), await note(c, "b")
        response = await c.post(f"/note/{first}/publish_then_fail", headers=DATASTAR)
        assert "/notes" not in response.text
        assert (await c.get(f"/note/{first}", headers=JSON)).json()["title"] == "a"
        response = await c.post(f"/note/{first}/publish_then_fail", headers=JSON)
        assert response.status_code == 500 and "location" not in response.headers

        response = await c.post(f"/note/{second}/publish_then_edit", headers=DATASTAR)
        events = parse_sse(response.text)
        assert "/notes" in events[-1].elements  # the redirect comes last, after the later change
        assert merged_signals(events)["note"]["title"] == "edited after"
    await sm.aclose()


async def test_a_record_created_with_a_bad_value_is_refused_in_the_fields_own_words() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        key = await note(c, "a")
        response = await c.post(f"/note/{key}/price", json={"price": "cheap"}, headers=JSON)
        assert response.status_code == 422
        assert response.json()["errors"] == {"price": "Unit price must be a whole number."}
        assert (await c.get("/item", headers=JSON)).json() == []
    await sm.aclose()


async def test_a_plain_event_that_deletes_its_record_still_sends_its_changes_and_html() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        key = await note(c, "a")
        response = await c.post(f"/note/{key}/remove_loudly", headers=DATASTAR)
        events = parse_sse(response.text)
        assert merged_signals(events)["note"] == {"title": "removed", "_deleted": True}
        assert [e.elements for e in events if e.event == "datastar-patch-elements"] == ["<p id='bye'>bye</p>"]
        assert (await c.get(f"/note/{key}", headers=JSON)).status_code == 404
    await sm.aclose()


class Other(Entity):
    model_config = {"scope": "global", "name": "other"}
    count: int = 0


class Caller(Entity):
    model_config = {"scope": "global", "name": "caller"}
    count: int = 0

    @event
    async def poke_other_app(self) -> None:
        """Edits an entity of another app in this process: that app's own unit, not this one's."""
        async with OTHER_APP.edit(Other) as other:
            other.count += 1
        self.count += 1


OTHER_APP = StarModel([Other], secret_key="other")


async def test_an_event_editing_another_apps_entity_leaves_it_to_that_app() -> None:
    sm = StarModel([Caller], secret_key="k")
    async with client(sm) as c:
        assert (await c.post("/caller/poke_other_app", headers=JSON)).json() == {"count": 1}
    assert (await OTHER_APP.get(Other)).count == 1
    async with OTHER_APP.edit(Other) as other:  # and its lock was released
        other.count = 0
    await sm.aclose()


RUNS: list[str] = []


class Lockbox(Entity):
    model_config = {"scope": "global", "name": "lockbox"}
    count: int = 0


class Knocker(Entity):
    model_config = {"scope": "global", "name": "knocker"}
    count: int = 0

    @event
    async def knock(self, request: EventRequest) -> None:
        RUNS.append("run")
        async with request.app.edit(Lockbox) as box:  # held elsewhere the whole time
            box.count += 1


async def test_a_plain_event_whose_nested_hold_stays_busy_is_run_four_times_then_refused() -> None:
    """The first run and three more (``RETRIES``), then 503; nothing of it is kept."""
    sm = StarModel([Lockbox, Knocker], secret_key="k", nested_wait=0.05)
    RUNS.clear()
    holding, released = anyio.Event(), anyio.Event()

    async def long_block() -> None:
        async with sm.edit(Lockbox):
            holding.set()
            await released.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_block)
        await holding.wait()
        async with client(sm) as c:
            with anyio.fail_after(10):
                response = await c.post("/knocker/knock", headers=JSON)
        released.set()
    assert response.status_code == 503
    assert RUNS == ["run"] * 4
    assert (await sm.get(Knocker)).count == 0 and (await sm.get(Lockbox)).count == 0
    await sm.aclose()


async def test_writes_from_a_sync_generator_step_join_the_events_unit() -> None:
    sm = StarModel(ENTITIES, secret_key="k")
    async with client(sm) as c:
        key = await note(c, "a")
        response = await c.post(f"/note/{key}/spawn_in_steps", json={"fail": True}, headers=JSON)
        assert response.status_code == 500
        assert [n["title"] for n in (await c.get("/note", headers=JSON)).json()] == ["a"]  # rolled back with it
        assert (await c.post(f"/note/{key}/spawn_in_steps", headers=JSON)).status_code == 200
        assert sorted(n["title"] for n in (await c.get("/note", headers=JSON)).json()) == ["a", "spawned"]
    await sm.aclose()

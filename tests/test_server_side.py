"""The server side (DESIGN 3b): ``sm.edit/get/create/list/delete`` from plain coroutines, with the
locks, validation and live pushes events use, and ``@sm.on`` subscribers told of committed changes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import ValidationError

from starmodel_asgi import Change, Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON
from tests.support.servers import read_live, run_server

pytestmark = pytest.mark.anyio


class Board(Entity):
    model_config = {"scope": "global", "name": "board"}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1

    @event
    def fail(self) -> None:
        self.count += 100
        raise RuntimeError("boom")

    @event
    def peek(self) -> None:
        """Changes nothing: no change to tell."""


class Note(Entity):
    model_config = {"scope": "record", "name": "note"}
    text: str = ""
    stars: int = 0

    @event
    def star(self) -> None:
        self.stars += 1


class Draft(Entity):
    text: str = ""


def make_app(tmp_path: Path) -> StarModel:
    return StarModel([Board, Note, Draft], secret_key="server-side")


@pytest.fixture
async def sm(tmp_path: Path) -> AsyncIterator[StarModel]:
    app = make_app(tmp_path)
    yield app
    await app.aclose()


def http(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t")


async def test_edit_saves_and_a_live_page_sees_it(sm: StarModel) -> None:
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url) as c, read_live(c, "/board/live") as live:
            await live.wait(lambda s: s.signals.get("board", {}).get("count") == 0)

            async def edit() -> None:  # a background job: no request anywhere
                async with sm.edit(Board) as board:
                    board.count += 5

            await url.run(edit())
            await live.wait(lambda s: s.signals["board"]["count"] == 5)
            assert (await c.get("/board", headers=JSON)).json() == {"count": 5}


async def test_an_edit_that_raises_saves_nothing_pushes_nothing_tells_no_one(sm: StarModel) -> None:
    told: list[Change] = []
    sm.on(Board)(told.append)

    async def failing() -> None:
        async with sm.edit(Board) as board:
            board.count = 7
            1 / 0  # noqa: B018

    async def adding_one() -> None:
        async with sm.edit(Board) as board:
            board.count += 1

    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url) as c, read_live(c, "/board/live") as live:
            await live.wait(lambda s: s.signals.get("board", {}).get("count") == 0)
            with pytest.raises(ZeroDivisionError):
                await url.run(failing())
            await url.run(adding_one())
            await live.wait(lambda s: s.signals["board"]["count"] == 1)
            counts = [e.signals["board"]["count"] for e in live.events if "count" in e.signals.get("board", {})]
            assert counts == [0, 1]  # the failed block's 7 never reached the page
            assert (await url.run(sm.get(Board))).count == 1
    assert [c.after for c in told] == [{"count": 1}]
    with pytest.raises(ValidationError):  # assignments are validated
        async with sm.edit(Board) as board:
            board.count = "many"  # type: ignore[assignment]
    assert (await sm.get(Board)).count == 1  # kept after the server stopped; the bad edit saved nothing


async def test_edits_and_events_share_the_lock(sm: StarModel) -> None:
    async def by_edit() -> None:
        async with sm.edit(Board) as board:
            current = board.count
            await anyio.sleep(0)  # a read-modify-write that would lose updates without the lock
            board.count = current + 1

    async with http(sm) as c:

        async def by_event() -> None:
            assert (await c.post("/board/increment", headers=JSON)).status_code == 200

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(by_edit)
                tg.start_soon(by_event)
    assert (await sm.get(Board)).count == 200


async def test_records_from_python_create_get_list_delete(sm: StarModel) -> None:
    note = await sm.create(Note, text="hello")
    assert note.id and note.text == "hello"
    assert (await sm.get(Note, note.id)).text == "hello"
    async with sm.edit(Note, note.id) as same:
        same.stars = 3
    other = await sm.create(Note, text="second")
    assert {(n.id, n.text, n.stars) for n in await sm.list(Note)} == {(note.id, "hello", 3), (other.id, "second", 0)}
    assert len(await sm.list(Note, limit=1)) == 1
    async with http(sm) as c:
        assert (await c.get(f"/note/{note.id}", headers=JSON)).json()["stars"] == 3
    await sm.delete(Note, note.id)
    for missing in (sm.get(Note, note.id), sm.delete(Note, note.id)):
        with pytest.raises(LookupError):
            await missing
    with pytest.raises(LookupError):
        async with sm.edit(Note, note.id):
            pass
    with pytest.raises(ValueError, match="Stars must be a whole number"):  # a 422 if raised inside an event
        await sm.create(Note, stars="lots")


async def test_missing_keys_and_wrong_kinds_say_what_to_pass(sm: StarModel) -> None:
    with pytest.raises(TypeError, match="session id"):
        await sm.get(Draft)
    with pytest.raises(TypeError, match="record id"):
        async with sm.edit(Note):
            pass
    with pytest.raises(TypeError, match="record entity"):
        await sm.create(Board)
    with pytest.raises(LookupError, match="StarModel\\(entities"):
        await sm.get(Entity)
    assert (await sm.get(Draft, "some-session")).text == ""  # a session with nothing saved: defaults


async def test_subscribers_hear_each_committed_change_once(sm: StarModel) -> None:
    every: list[Change] = []
    only_star: list[Change] = []
    sm.on(Note)(every.append)

    @sm.on(Note, "star")
    async def starred(change: Change) -> None:
        only_star.append(change)

    note = await sm.create(Note, text="a")
    async with http(sm) as c:
        assert (await c.post(f"/note/{note.id}/star", headers=JSON)).status_code == 200
    async with sm.edit(Note, note.id) as n:
        n.text = "b"
    async with sm.edit(Note, note.id):
        pass  # nothing changed: nothing to tell
    await sm.delete(Note, note.id)

    assert [(c.event, c.before, c.after) for c in every] == [
        (None, None, {"id": note.id, "text": "a", "stars": 0}),
        ("star", {"id": note.id, "text": "a", "stars": 0}, {"id": note.id, "text": "a", "stars": 1}),
        (None, {"id": note.id, "text": "a", "stars": 1}, {"id": note.id, "text": "b", "stars": 1}),
        (None, {"id": note.id, "text": "b", "stars": 1}, None),
    ]
    assert all(c.entity is Note and c.key == note.id for c in every)
    assert [c.event for c in only_star] == ["star"]


async def test_a_failed_event_tells_no_subscriber_and_a_failing_subscriber_is_isolated(
    sm: StarModel, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str | None] = []

    @sm.on(Board)
    def broken(change: Change) -> None:
        raise RuntimeError("subscriber bug")

    sm.on(Board)(lambda change: heard.append(change.event))
    async with http(sm) as c:
        assert (await c.post("/board/fail", headers=JSON)).status_code == 500
        assert (await c.post("/board/peek", headers=JSON)).status_code == 200
        assert heard == []
        with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
            r = await c.post("/board/increment", headers=JSON)
        assert r.status_code == 200 and r.json() == {"count": 1}  # the answer does not suffer
    assert heard == ["increment"]
    assert any("subscriber" in rec.getMessage() and "broken" in rec.getMessage() for rec in caplog.records)


def test_subscribing_to_an_unknown_event_fails_at_once(tmp_path: Path) -> None:
    sm = make_app(tmp_path)
    with pytest.raises(ValueError, match="Board has no event 'nope'"):
        sm.on(Board, "nope")


async def test_current_raises_lookup_error_for_a_missing_record(sm: StarModel) -> None:
    from starlette.requests import Request

    request = Request({"type": "http", "headers": [], "method": "GET", "path": "/", "query_string": b""})
    with pytest.raises(LookupError):
        await sm.current(Note, request, id="nope")


async def test_an_event_error_is_still_an_http_404(sm: StarModel) -> None:
    async with http(sm) as c:
        r = await c.post("/note/nope/star", headers=JSON)
    assert r.status_code == 404 and "not found" in r.json()["error"]

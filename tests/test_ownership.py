"""Ownership: a four-argument ``authorize`` sees the record concerned, ``on_create`` sets the owner
before the first save, and ``request.user_id`` is known on every request."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import httpx
import pytest
from starlette.requests import Request

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.servers import read_live, run_server
from tests.support.sse import ListPage

pytestmark = pytest.mark.anyio
JSON = {"Accept": "application/json"}


class Note(Entity):
    model_config = {"scope": "record"}
    text: Annotated[str, ClientWritable] = ""
    owner: str = ""

    async def on_create(self, request: EventRequest | None) -> None:
        self.owner = request.user_id or "" if request is not None else "system"

    @event
    def edit(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        return f'<li id="{self.dom_id}">{self.text}</li>'


class Whoami(Entity):
    """Session scoped: the caller's user is still known."""

    seen: str = ""

    @event
    def look(self, request: EventRequest) -> None:
        self.seen = request.user_id or "anonymous"


def user_from_header(request: Request) -> str | None:
    return request.headers.get("x-user")


def authorize(request: EventRequest, entity: type[Entity], event: str | None, record: Any) -> bool:
    if record is None:
        return request.user_id is not None
    return bool(record.owner == request.user_id and record.text != "forbidden")


def build() -> StarModel:
    return StarModel([Note, Whoami], base_path="", secret_key="own", get_user=user_from_header, authorize=authorize)


def client(sm: StarModel, user: str, base: str = "http://t") -> httpx.AsyncClient:
    transport = StreamingTransport(sm) if base == "http://t" else None
    return httpx.AsyncClient(transport=transport, base_url=base, headers={"X-User": user, **JSON})


async def test_each_user_creates_lists_reads_changes_and_deletes_only_their_own() -> None:
    sm = build()
    async with client(sm, "alice") as alice, client(sm, "bob") as bob:
        created = await alice.post("/note", json={"text": "alice's", "owner": "bob"})
        assert created.status_code == 201
        note = created.json()
        assert note["owner"] == "alice"  # on_create set it; the body cannot (owner is not writable)
        await bob.post("/note", json={"text": "bob's"})

        assert [n["text"] for n in (await alice.get("/note")).json()] == ["alice's"]
        assert [n["text"] for n in (await bob.get("/note")).json()] == ["bob's"]
        assert (await bob.get(f"/note/{note['id']}")).status_code == 403
        assert (await bob.post(f"/note/{note['id']}/edit", json={"text": "mine now"})).status_code == 403
        assert (await bob.delete(f"/note/{note['id']}")).status_code == 403
        assert (await alice.get(f"/note/{note['id']}")).json()["text"] == "alice's"  # untouched
        assert (await alice.post(f"/note/{note['id']}/edit", json={"text": "edited"})).status_code == 200
        assert (await alice.delete(f"/note/{note['id']}")).status_code == 204


async def test_a_create_that_authorize_refuses_saves_nothing() -> None:
    sm = build()
    async with client(sm, "alice") as alice:
        assert (await alice.post("/note", json={"text": "forbidden"})).status_code == 403
        assert await sm.list(Note) == []


async def test_a_live_list_shows_each_user_their_own_records() -> None:
    sm = build()
    with run_server(sm) as url:
        async with client(sm, "alice", url) as alice, client(sm, "bob", url) as bob:
            mine = (await alice.post("/note", json={"text": "alice 1"})).json()
            async with read_live(bob, "/note/live", headers={"X-User": "bob"}) as watching:
                await bob.post("/note", json={"text": "bob 1"})
                await alice.post("/note", json={"text": "alice 2"})
                await watching.wait(lambda live: ListPage("#note-list").apply(live.events).texts == ["bob 1"])
                assert "alice" not in watching.text
            assert (await bob.get(f"/note/{mine['id']}/live", headers={"Datastar-Request": "true"})).status_code == 403


async def test_sm_create_runs_on_create_without_a_request() -> None:
    sm = build()
    note = await sm.create(Note, text="from a task")
    assert note.owner == "system"


async def test_the_callers_user_is_known_for_every_scope() -> None:
    sm = build()
    async with client(sm, "carol") as carol:
        assert (await carol.post("/whoami/look")).json() == {"seen": "carol"}


def test_authorize_with_the_wrong_number_of_arguments_fails_when_the_app_is_built() -> None:
    with pytest.raises(TypeError, match=r"authorize takes \(request, entity, event\[, record\]\)"):
        StarModel([Note], secret_key="own", authorize=lambda request, entity: True)


class Deed(Entity):
    """A record whose owner changes through an event that holds it a while."""

    model_config = {"scope": "record"}
    owner: str = ""
    text: str = ""

    async def on_create(self, request: EventRequest | None) -> None:
        self.owner = request.user_id or "" if request is not None else "system"

    @event
    async def give(self, to: str) -> None:
        self.owner = to
        await anyio.sleep(0.3)  # still holding the record when the other request arrives

    @event
    def write(self, text: str) -> None:
        self.text = text


def deeds() -> StarModel:
    return StarModel([Deed], base_path="", secret_key="own", get_user=user_from_header, authorize=authorize_deed)


def authorize_deed(request: EventRequest, entity: type[Entity], event: str | None, record: Any) -> bool:
    return record is None or record.owner == request.user_id


async def test_authorize_judges_the_record_as_it_is_under_the_lock_not_as_it_was() -> None:
    """Alice gives her deed to Bob; her next write, sent while the gift still holds the record,
    is judged on the record once it is Bob's: 403, and the text stays Bob's business."""
    sm = deeds()
    async with client(sm, "alice") as alice:
        deed = (await alice.post("/deed", json={})).json()["id"]
        statuses: dict[str, int] = {}

        async def give() -> None:
            statuses["give"] = (await alice.post(f"/deed/{deed}/give", json={"to": "bob"})).status_code

        async def write() -> None:
            await anyio.sleep(0.1)  # the gift holds the record by now
            statuses["write"] = (await alice.post(f"/deed/{deed}/write", json={"text": "still mine"})).status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(give)
            tg.start_soon(write)
        assert statuses == {"give": 200, "write": 403}
        assert (await alice.delete(f"/deed/{deed}")).status_code == 403
    async with client(sm, "bob") as bob:
        assert (await bob.get(f"/deed/{deed}")).json() == {"id": deed, "owner": "bob", "text": ""}


async def test_a_record_stream_ends_when_authorize_would_refuse_its_next_state() -> None:
    sm = deeds()
    with run_server(sm) as url:
        async with client(sm, "alice", url) as alice:
            deed = (await alice.post("/deed", json={})).json()["id"]
            async with read_live(alice, f"/deed/{deed}/live", headers={"X-User": "alice"}) as live:
                await live.wait(lambda s: s.signals.get("deed", {}).get("owner") == "alice")
                await alice.post(f"/deed/{deed}/write", json={"text": "hello"})
                await live.wait(lambda s: s.signals["deed"].get("text") == "hello")

                async def give_away() -> None:  # elsewhere: a task of the server's
                    async with sm.edit(Deed, deed) as record:
                        record.owner = "bob"
                        record.text = "bob's secret"

                await url.run(give_away())
                await live.wait(lambda s: s.signals["deed"].get("_error") == "Forbidden")
                await live.wait(lambda s: s.ended)
                assert "bob's secret" not in live.text

"""The unit of work as an event sees it: the behaviours mutation testing (issue 19 point 11) found no
test for in ``unit.py``: reads of records the unit does not hold (in a store it has a transaction in,
and in one it has not), lists inside a unit, and a record the unit deleted, named in its 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import pytest
from pydantic import computed_field

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from starmodel_asgi.wire import channel_name, list_channel
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


class Sheet(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "sheet"}
    title: Annotated[str, ClientWritable] = ""

    @event
    async def copy(self, request: EventRequest, other: str) -> None:
        """Reads another sheet, in the same store as the one it holds."""
        self.title = (await request.app.get(Sheet, other)).title


class Badge(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "badge"}
    title: Annotated[str, ClientWritable] = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def shout(self) -> str:
        return self.title.upper()

    @event
    def rename(self, title: str) -> None:
        self.title = title


class Stamp(Entity):
    model_config = {"scope": "global", "name": "stamp"}
    at: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    text: str = ""

    @event
    def scribble(self) -> None:
        self.text = "\ud800"  # a lone surrogate: no page or store could read it back


class Doc(Entity):
    model_config = {"scope": "record", "name": "doc"}
    title: Annotated[str, ClientWritable] = ""

    @event
    async def copy_sheet(self, request: EventRequest, sheet: str) -> None:
        """Reads a sheet, in a store the unit has no transaction in yet."""
        self.title = (await request.app.get(Sheet, sheet)).title

    @event
    async def erase_then_edit(self, request: EventRequest) -> None:
        await request.app.delete(Doc, self.id)
        async with request.app.edit(Doc, self.id) as doc:  # gone for this unit too
            doc.title = "edited"

    @event
    async def spawn_and_count(self, request: EventRequest) -> None:
        await request.app.create(Doc, title="spawned")
        self.title = ",".join(sorted(d.title for d in await request.app.list(Doc)))

    @event
    async def edit_other_and_count(self, request: EventRequest, other: str) -> None:
        async with request.app.edit(Doc, other) as doc:
            doc.title = "edited"
        self.title = ",".join(d.title for d in await request.app.list(Doc, limit=1))

    @event
    def rename(self, title: str) -> None:
        self.title = title

    @event
    async def cross(self, request: EventRequest, other: str) -> AsyncIterator[None]:
        """A generator event (never run again): holds its own record, then another's."""
        self.title = "crossed"
        yield None
        await anyio.sleep(0.2)  # both hold their own record before reaching the other
        async with request.app.edit(Doc, other) as doc:
            doc.title = f"reached from {self.id}"


@pytest.fixture
def sm(tmp_path: Path) -> StarModel:
    return StarModel(
        [Sheet, Doc, Badge, Stamp], secret_key="k", database_url=f"sqlite+aiosqlite:///{tmp_path / 'unit.db'}"
    )


@pytest.fixture
async def c(sm: StarModel) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        yield client
    await sm.aclose()


async def new(c: httpx.AsyncClient, entity: str, title: str) -> str:
    response = await c.post(f"/{entity}", json={"title": title}, headers=JSON)
    assert response.status_code == 201
    return str(response.json()["id"])


async def title(c: httpx.AsyncClient, entity: str, key: str) -> str:
    return str((await c.get(f"/{entity}/{key}", headers=JSON)).json()["title"])


async def test_an_event_reads_a_record_of_another_store(c: httpx.AsyncClient) -> None:
    sheet, doc = await new(c, "sheet", "from the sheet"), await new(c, "doc", "")
    assert (await c.post(f"/doc/{doc}/copy_sheet", json={"sheet": sheet}, headers=JSON)).status_code == 200
    assert await title(c, "doc", doc) == "from the sheet"


async def test_an_event_reads_another_record_of_the_store_it_holds_one_in(c: httpx.AsyncClient) -> None:
    source, target = await new(c, "sheet", "source"), await new(c, "sheet", "")
    assert (await c.post(f"/sheet/{target}/copy", json={"other": source}, headers=JSON)).status_code == 200
    assert await title(c, "sheet", target) == "source"


async def test_a_record_the_unit_deleted_is_not_found_by_it_and_nothing_is_kept(c: httpx.AsyncClient) -> None:
    doc = await new(c, "doc", "kept")
    response = await c.post(f"/doc/{doc}/erase_then_edit", headers=JSON)
    assert response.status_code == 404
    assert response.json()["error"] == f"doc {doc!r} not found"
    response = await c.post(f"/doc/{doc}/erase_then_edit", headers=DATASTAR)
    assert merged_signals(parse_sse(response.text))["doc"]["_error"] == f"doc {doc!r} not found"
    assert await title(c, "doc", doc) == "kept"  # the event failed: the delete was rolled back too


async def test_a_missing_record_is_named_in_its_entitys_namespace(c: httpx.AsyncClient) -> None:
    response = await c.post("/doc/nosuchdoc/rename", json={"title": "x"}, headers=DATASTAR)
    assert merged_signals(parse_sse(response.text))["doc"]["_error"] == "doc 'nosuchdoc' not found"
    response = await c.get("/doc/nosuchdoc", headers=DATASTAR)
    assert merged_signals(parse_sse(response.text))["doc"]["_error"] == "doc 'nosuchdoc' not found"


async def test_a_list_inside_an_event_shows_the_units_new_records(c: httpx.AsyncClient) -> None:
    doc = await new(c, "doc", "first")
    assert (await c.post(f"/doc/{doc}/spawn_and_count", headers=JSON)).status_code == 200
    assert await title(c, "doc", doc) == "first,spawned"


async def test_a_list_inside_an_event_keeps_its_limit_when_the_unit_holds_records_past_it(
    c: httpx.AsyncClient,
) -> None:
    first, second = await new(c, "doc", "first"), await new(c, "doc", "second")
    assert (await c.post(f"/doc/{first}/edit_other_and_count", json={"other": second}, headers=JSON)).status_code == 200
    assert await title(c, "doc", first) == "first"  # one record, as asked: not the edited one past the limit
    assert await title(c, "doc", second) == "edited"


async def test_an_event_with_a_nested_hold_leaves_no_entry_in_the_table_of_holders(
    sm: StarModel, c: httpx.AsyncClient
) -> None:
    """The process's table of who holds what (for finding units that wait on each other) empties
    when a unit ends, for its nested holds too: no entry, so no memory, is left per request."""
    first, second = await new(c, "doc", "first"), await new(c, "doc", "second")
    for _ in range(3):
        await c.post(f"/doc/{first}/edit_other_and_count", json={"other": second}, headers=JSON)
    assert sm.dispatcher.holders == {}


async def test_live_lists_are_told_of_a_committed_record_with_a_token(sm: StarModel, c: httpx.AsyncClient) -> None:
    """Every commit that touches records sends their list channel a fresh token (what a Redis or
    PostgreSQL broadcast can carry; other workers' live lists refresh on it)."""
    channel = list_channel(sm.spec(Doc))
    async with sm.broadcast.subscribe(channel, every=True) as messages:
        doc = await new(c, "doc", "a")
        await c.post(f"/doc/{doc}/rename", json={"title": "b"}, headers=JSON)
        with anyio.fail_after(5):
            tokens = [await anext(aiter(messages)), await anext(aiter(messages))]
    assert all(isinstance(t, str) and len(t) == 32 for t in tokens) and tokens[0] != tokens[1]


async def test_an_event_that_changes_nothing_on_an_entity_with_a_computed_field_saves_and_tells_nothing(
    sm: StarModel, c: httpx.AsyncClient
) -> None:
    """Computed fields are sent, never stored: they do not make an unchanged instance look changed."""
    badge = await new(c, "badge", "a")
    async with sm.broadcast.subscribe(channel_name(sm.spec(Badge), badge), every=True) as messages:
        response = await c.post(f"/badge/{badge}/rename", json={"title": "a"}, headers=JSON)
        assert response.json() == {"id": badge, "title": "a", "shout": "A"}
        with anyio.move_on_after(0.3) as waited:
            await anext(aiter(messages))
        assert waited.cancelled_caught  # nothing was published
        await c.post(f"/badge/{badge}/rename", json={"title": "b"}, headers=JSON)
        with anyio.fail_after(5):
            assert await anext(aiter(messages)) == f'{{"id":"{badge}","title":"b"}}'


async def test_unstorable_text_beside_a_date_is_a_422_naming_the_field(c: httpx.AsyncClient) -> None:
    response = await c.post("/stamp/scribble", headers=JSON)
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "text": "This value cannot be stored (a number too long to print, or broken text)"
    }
    assert (await c.get("/stamp", headers=JSON)).json()["text"] == ""


async def test_crossing_generator_events_one_is_refused_as_waiting_for_the_other(c: httpx.AsyncClient) -> None:
    """Two events each holding the record the other wants: the one that would close the circle is
    refused at once (503, named; a generator event is not run again), the other goes on."""
    first, second = await new(c, "doc", "1"), await new(c, "doc", "2")
    answers: dict[str, Any] = {}

    async def cross(key: str, other: str) -> None:
        answers[key] = await c.post(f"/doc/{key}/cross", json={"other": other}, headers=JSON)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cross, first, second)
            tg.start_soon(cross, second, first)
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [200, 503]
    (refused,) = [key for key, r in answers.items() if r.status_code == 503]
    (went_on,) = [key for key in answers if key != refused]
    body = answers[refused].json()
    assert body["error"] == f"doc {went_on!r} is held by an event waiting for this one; try again"
    assert await title(c, "doc", went_on) == "crossed"
    assert await title(c, "doc", refused) == f"reached from {went_on}"
    datastar = await c.post(f"/doc/{refused}/rename", json={"title": "x"}, headers=DATASTAR)
    assert datastar.status_code == 200  # nothing left held

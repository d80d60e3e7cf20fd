"""The request path as a caller sees it: the behaviours mutation testing (issue 19 point 11) found no
test for in ``endpoints.py``: errors answered in the format a custom formatter picks by method and
path; ``authorize`` asked once per request as documented (three arguments: at the door, never per
record; four: about the record concerned, a background event's as saved, a missing one a 404, an
upload's before its body and again under the lock, a delete as ``"delete"``); a Datastar create that
clears the errors its page shows, and only then; the list's content type; live streams that always
speak SSE (the request's own streaming format first); the messages a caller reads; the largest offset
every store takes and the longest id; a provider's cleanup with an upload; 405s, no cookie without a
session, the cross-site check over the scope's scheme and for GET events."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import httpx
import pytest
from pydantic import Field

from starmodel_asgi import ClientWritable, Depends, Entity, EventError, EventRequest, StarModel, UploadFile, event
from starmodel_asgi.formatters import default_formatters
from starmodel_asgi.testing import Page, StreamingTransport
from starmodel_asgi.values import Update
from tests import test_unit
from tests.support.headers import DATASTAR, JSON
from tests.support.sse import merged_signals, parse_sse
from tests.test_unit import Backend

pytestmark = pytest.mark.anyio

b = test_unit.b  # the same store-per-kind fixture

#: what the tests' ``authorize`` was asked: (entity, event, path_params, the record's id or None)
asked: list[tuple[str, str | None, dict[str, str], str | None]] = []
#: what background events and providers did
DONE: list[str] = []
UPLOADS: list[UploadFile] = []


def cleanup_log() -> Iterator[list[str]]:
    """A provider with a cleanup (a database session, say)."""
    log: list[str] = []
    yield log
    DONE.append(f"cleaned up after {log}")


class Memo(Entity):
    model_config = {"scope": "record", "name": "memo"}
    owner: Annotated[str, ClientWritable] = ""
    title: Annotated[str, ClientWritable, Field(max_length=20)] = ""

    def render(self) -> str:
        return f'<li id="memo-{self.id}">{self.title}</li>'

    @event
    def rename(self, title: str) -> None:
        self.title = title

    @event(background=True)
    async def archive(self) -> str:
        DONE.append(f"archived {self.title}")
        return f'<p id="archived">{self.title}</p>'

    @event
    async def attach(self, note: UploadFile, log: Annotated[list[str], Depends(cleanup_log)]) -> str:
        UPLOADS.append(note)
        log.append(note.filename or "")
        return f'<p id="attached">{len(await note.read())}</p>'


class Board(Entity):
    model_config = {"scope": "global", "name": "board"}
    views: int = 0

    @event(background=True)
    async def refresh(self) -> None:
        DONE.append("refreshed")

    @event(method="GET")
    def visit(self, times: int = 1) -> None:
        """A GET that changes state (a link's counter)."""
        self.views += times


class Prefs(Entity):
    model_config = {"scope": "user", "name": "prefs"}
    theme: str = "light"


class Cart(Entity):
    model_config = {"scope": "session", "name": "cart"}
    items: int = 0

    @event
    def add(self) -> None:
        self.items += 1


class Draft(Entity):
    model_config = {"store": "client", "name": "draft"}
    text: str = ""


def user(request: Any) -> str | None:
    return request.headers.get("x-user")


def owners(request: EventRequest, entity: type[Entity], event: str | None, record: Entity | None) -> bool:
    """Whoever owns a memo may do anything with it; the editor anything but archive or delete it."""
    asked.append((entity.__name__, event, dict(request.path_params), record.id if record is not None else None))
    if record is None:
        return True
    owner = getattr(record, "owner", None)
    return owner in (None, request.user_id) or (request.user_id == "editor" and event not in ("archive", "delete"))


def door(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
    """Three arguments: asked at the door only."""
    asked.append((entity.__name__, event, dict(request.path_params), None))
    return True


def app(authorize: Any = None, formatters: Any = None) -> StarModel:
    asked.clear()
    DONE.clear()
    UPLOADS.clear()
    return StarModel(
        [Memo, Board, Prefs, Cart, Draft],
        secret_key="endpoints",
        get_user=user,
        authorize=authorize,
        formatters=formatters,
    )


def client(sm: StarModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t")


async def new_memo(c: httpx.AsyncClient, owner: str, title: str = "first") -> str:
    r = await c.post("/memo", json={"owner": owner, "title": title}, headers={**JSON, "x-user": owner})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# -- errors in the format a custom formatter picks by the request's method and path -----------------


class TextFormatter:
    """Plain text for the memo's events (POSTs under ``/memo``), a CLI's format; JSON elsewhere."""

    media_type = "text/plain"
    streams = False
    headers: dict[str, str] = {}

    def matches(self, request: EventRequest) -> bool:
        return request.method == "POST" and request.path.startswith("/memo/")

    def format(self, updates: Sequence[Update]) -> str:
        return f"title: {updates[-1].state['title']}"

    def format_error(self, error: EventError) -> str:
        return f"error {error.status}: {error.message}"


async def test_an_error_is_answered_in_the_format_the_request_chose_by_its_method_and_path() -> None:
    sm = app(formatters=[TextFormatter(), *default_formatters()])
    async with client(sm) as c:
        memo = await new_memo(c, "ada")
        done = await c.post(f"/memo/{memo}/rename", json={"title": "second"})
        assert (done.status_code, done.headers["content-type"], done.text) == (
            200,
            "text/plain; charset=utf-8",
            "title: second",
        )
        failed = await c.post(f"/memo/{memo}/rename", json={})
        assert failed.status_code == 422
        assert failed.headers["content-type"] == "text/plain; charset=utf-8"
        assert failed.text.startswith("error 422: Invalid input: title")
        read = await c.get(f"/memo/{memo}")  # a GET: JSON, as the formatter said
        assert read.json()["title"] == "second"


# -- a background event on a record: authorize asked about the record as saved ---------------------


async def test_a_background_event_on_a_record_asks_authorize_about_the_saved_record() -> None:
    sm = app(authorize=owners)
    async with client(sm) as c:
        memo = await new_memo(c, "ada", "plans")
        asked.clear()
        done = await c.post(f"/memo/{memo}/archive", headers={**JSON, "x-user": "ada"})
        assert done.status_code == 200, done.text
        assert DONE == ["archived plans"]
        assert asked == [("Memo", "archive", {"id": memo}, memo)]

        for caller in ("bob", "editor"):  # not the owner; the editor may do much, but not this
            refused = await c.post(f"/memo/{memo}/archive", headers={**JSON, "x-user": caller})
            assert refused.status_code == 403, (caller, refused.text)
            assert refused.json()["error"] == "Forbidden"
        assert DONE == ["archived plans"]  # the event never ran for them

        missing = await c.post("/memo/nope/archive", headers={**JSON, "x-user": "ada"})
        assert missing.status_code == 404, missing.text  # not found, rather than refused
        assert DONE == ["archived plans"]


async def test_a_background_event_of_a_global_entity_asks_authorize_once_with_no_record() -> None:
    sm = app(authorize=owners)
    async with client(sm) as c:
        done = await c.post("/board/refresh", headers=JSON)  # never saved yet: there is no record
        assert done.status_code == 200, done.text
    assert DONE == ["refreshed"]
    assert asked == [("Board", "refresh", {}, None)]


# -- a three-argument authorize is asked once per request, at the door -----------------------------


async def test_a_three_argument_authorize_is_asked_once_per_request_never_per_record() -> None:
    sm = app(authorize=door)
    async with Page(sm, headers={"x-user": "ada"}) as page:
        created = await page.request("POST", "/memo", json.dumps({"owner": "ada"}).encode())
        assert created.status == 201, created.text
        memo = created.json()["id"]
        assert asked == [("Memo", None, {}, None)]

        asked.clear()
        assert (await page.request("POST", f"/memo/{memo}/archive")).status == 200
        assert asked == [("Memo", "archive", {"id": memo}, None)]

        asked.clear()
        async with page.live(f"/memo/{memo}/live") as stream:
            await stream.wait(lambda s: s.signals.get("memo", {}).get("owner") == "ada")
            renamed = await page.request("POST", f"/memo/{memo}/rename", b'{"title": "pushed"}')
            assert renamed.status == 200, renamed.text
            await stream.wait(lambda s: s.signals["memo"]["title"] == "pushed")
        assert asked == [("Memo", None, {"id": memo}, None), ("Memo", "rename", {"id": memo}, None)]

        asked.clear()
        assert (await page.request("DELETE", f"/memo/{memo}")).status == 204
        assert asked == [("Memo", "delete", {"id": memo}, None)]


# -- a four-argument authorize is asked once per request, about the record concerned ----------------


async def test_a_four_argument_authorize_is_asked_once_per_request_about_the_record() -> None:
    sm = app(authorize=owners)
    ada = {**JSON, "x-user": "ada"}
    async with client(sm) as c:
        memo = await new_memo(c, "ada")
        assert asked == [("Memo", None, {"id": memo}, memo)]  # the new record, before it is saved

        asked.clear()  # an upload: asked before its body is received (as saved), then under the record's lock
        files = {"note": ("n.txt", b"x", "text/plain")}
        assert (await c.post(f"/memo/{memo}/attach", files=files, headers=ada)).is_success
        assert asked == [("Memo", "attach", {"id": memo}, memo)] * 2

        for method, path, event_name in [
            ("GET", f"/memo/{memo}", None),
            ("POST", f"/memo/{memo}/rename?title=again", "rename"),
            ("DELETE", f"/memo/{memo}", "delete"),
        ]:
            asked.clear()
            answer = await c.request(method, path, headers=ada)
            assert answer.is_success, (method, path, answer.text)
            assert asked == [("Memo", event_name, {"id": memo}, memo)], (method, path)

        for method, path in [("GET", "/memo/gone"), ("GET", "/memo/gone/live"), ("POST", "/memo/gone/rename?title=x")]:
            missing = await c.request(method, path, headers=ada)
            assert missing.status_code == 404, (method, path, missing.text)  # not found, rather than refused


# -- a delete is asked about as "delete" -----------------------------------------------------------


async def test_authorize_is_asked_about_a_delete_by_that_name() -> None:
    sm = app(authorize=owners)
    async with client(sm) as c:
        memo = await new_memo(c, "ada")
        assert (await c.post(f"/memo/{memo}/rename", json={"title": "edited"}, headers={"x-user": "editor"})).is_success
        refused = await c.delete(f"/memo/{memo}", headers={**JSON, "x-user": "editor"})
        assert refused.status_code == 403 and refused.json()["error"] == "Forbidden"
        assert (await c.get(f"/memo/{memo}", headers={**JSON, "x-user": "ada"})).json()["title"] == "edited"
        assert ("Memo", "delete", {"id": memo}, memo) in asked
        assert (await c.delete(f"/memo/{memo}", headers={"x-user": "ada"})).status_code == 204
        assert (await c.get(f"/memo/{memo}", headers={**JSON, "x-user": "ada"})).status_code == 404


# -- a Datastar create clears the errors its page shows, and only then -----------------------------


async def test_a_datastar_create_clears_the_errors_the_page_was_shown_and_only_those() -> None:
    sm = app()
    async with client(sm) as c:
        fresh = await c.post("/memo", json={"memo": {"title": "clean"}}, headers=DATASTAR)
        assert fresh.status_code == 200, fresh.text
        signals = merged_signals(parse_sse(fresh.text))["memo"]
        assert signals["title"] == "clean"
        assert "_error" not in signals and "_errors" not in signals  # nothing shown: nothing to clear

        failed = await c.post("/memo", json={"memo": {"title": "x" * 30}}, headers=DATASTAR)
        assert failed.status_code == 422
        assert merged_signals(parse_sse(failed.text))["memo"]["_errors"]["title"]

        fixed = await c.post("/memo", json={"memo": {"title": "short"}}, headers=DATASTAR)
        assert fixed.status_code == 200, fixed.text
        signals = merged_signals(parse_sse(fixed.text))["memo"]
        assert signals["title"] == "short"
        assert signals["_error"] == "" and set(signals["_errors"].values()) == {""}
        assert signals["_errors"].keys() >= {"title", "owner"}


# -- the answers' formats ---------------------------------------------------------------------------


async def test_a_list_is_answered_as_json() -> None:
    sm = app()
    async with client(sm) as c:
        await new_memo(c, "ada")
        listed = await c.get("/memo", headers={"Accept": "*/*"})
    assert listed.headers["content-type"] == "application/json"
    assert [m["owner"] for m in listed.json()] == ["ada"]


class LinesFormatter:
    """A streaming format of the app's own (JSON lines), for requests that ask for it."""

    media_type = "application/x-ndjson"
    streams = True
    headers: dict[str, str] = {"Cache-Control": "no-cache"}

    def matches(self, request: EventRequest) -> bool:
        return "application/x-ndjson" in request.headers.get("accept", "")

    def format(self, updates: Sequence[Update]) -> str:
        return "".join(json.dumps({u.entity: u.changed}) + "\n\n" for u in updates if u.changed)

    def format_error(self, error: EventError) -> str:
        return json.dumps({"error": error.message}) + "\n\n"


async def test_a_live_stream_speaks_the_requests_streaming_format_else_datastar_sse() -> None:
    datastar, json_ = default_formatters()
    sm = app(formatters=[datastar, LinesFormatter(), json_])  # Datastar's SSE: the app's first streaming format
    async with Page(sm) as page:
        memo = (await page.request("POST", "/memo", b'{"owner": "ada", "title": "live"}')).json()["id"]
        for headers in ({"datastar-request": "false", "accept": "application/json"}, {}):  # JSON; Datastar
            async with page.live(f"@get('/memo/{memo}/live', {{headers: {json.dumps(headers)}}})") as stream:
                await stream.wait(lambda s: s.text)
                assert stream.headers["content-type"].startswith("text/event-stream"), headers
                assert stream.events[0].event == "datastar-patch-signals"
                assert stream.events[0].signals["memo"]["title"] == "live"
        lines = {"datastar-request": "false", "accept": "application/x-ndjson"}
        async with page.live(f"@get('/memo/{memo}/live', {{headers: {json.dumps(lines)}}})") as stream:
            await stream.wait(lambda s: s.text)
            assert stream.headers["content-type"] == "application/x-ndjson"
            assert json.loads(stream.text.split("\n\n")[0])["memo"]["title"] == "live"


# -- what the caller reads in an error ---------------------------------------------------------------


async def test_the_messages_of_refusals_say_what_is_wrong() -> None:
    sm = app(authorize=owners)
    async with client(sm) as c:
        nothing = await c.get("/draft/live", headers=JSON)
        assert nothing.status_code == 404
        assert nothing.json()["error"] == "draft lives in the browser: there is nothing to stream"

        someone_else = await c.post("/memo", json={"owner": "ada"}, headers={**JSON, "x-user": "bob"})
        assert someone_else.status_code == 403
        assert someone_else.json()["error"] == "Forbidden"
        signals = await c.post("/memo", json={"memo": {"owner": "ada"}}, headers={**DATASTAR, "x-user": "bob"})
        assert merged_signals(parse_sse(signals.text))["memo"]["_error"] == "Forbidden"

        for query in ("limit=ten", "offset=1.5"):
            bad = await c.get(f"/memo?{query}", headers=JSON)
            assert bad.status_code == 422
            assert bad.json()["error"] == "limit and offset must be integers"


@pytest.mark.parametrize("offset", [0, 200, 2**62 - 1])
async def test_every_offset_below_2_to_the_62_is_counted_by_every_store(b: Backend, offset: int) -> None:
    await b.card(title="one")
    async with b.client() as c:
        response = await c.get(f"/card?offset={offset}", headers=JSON)
        assert response.status_code == 200, response.text
        assert [card["title"] for card in response.json()] == (["one"] if offset == 0 else [])
        refused = await c.get(f"/card?offset={2**62}", headers=JSON)
        assert refused.status_code == 422
        assert refused.json()["error"] == "limit must be 1..100, offset 0..2**62"


# -- a provider's cleanup and an upload, both once the answer is sent -------------------------------


async def test_a_providers_cleanup_runs_and_the_upload_is_closed_once_the_answer_is_sent() -> None:
    sm = app()
    async with client(sm) as c:
        memo = await new_memo(c, "ada")
        files = {"note": ("note.txt", b"x" * 100, "text/plain")}
        r = await c.post(f"/memo/{memo}/attach", files=files, headers=DATASTAR)
        assert r.status_code == 200, r.text
        assert parse_sse(r.text)[0].elements == '<p id="attached">100</p>'
    assert DONE == ["cleaned up after ['note.txt']"]
    assert [upload.file.closed for upload in UPLOADS] == [True]


# -- the door: 405s, the cross-site check, and no cookie where there is no session ------------------


async def test_a_method_not_allowed_is_a_405_saying_so_in_each_format() -> None:
    sm = app()
    async with client(sm) as c:
        plain = await c.put("/memo", headers=JSON)
        assert (plain.status_code, plain.headers["allow"]) == (405, "GET, POST")
        assert plain.json() == {"error": "PUT not allowed here", "errors": {}, "status": 405}
        datastar = await c.put("/memo", headers=DATASTAR)
        assert datastar.status_code == 405 and datastar.headers["allow"] == "GET, POST"
        blank = {"note": "", "owner": "", "title": ""}  # the page's older messages cleared
        assert merged_signals(parse_sse(datastar.text))["memo"] == {"_error": "PUT not allowed here", "_errors": blank}


async def test_no_answer_sets_a_cookie_when_the_entity_keeps_no_session() -> None:
    sm = app()
    async with client(sm) as c:
        answers = [
            await c.post("/memo", json={"title": "t"}, headers=JSON),  # created
            await c.get("/board", headers=JSON),  # read
            await c.put("/memo", headers=JSON),  # refused before the caller is known: 405
            await c.get(f"/memo/{'x' * 201}", headers=JSON),  # an id no store holds: 404
            await c.post("/board/refresh", data={"a": "b"}, headers={"origin": "http://evil.example"}),  # 403
        ]
    assert [a.status_code for a in answers] == [201, 200, 405, 404, 403]
    assert [a.headers.get_list("set-cookie") for a in answers] == [[]] * 5


def without_scheme(sm: StarModel) -> Any:
    """A server that leaves ``scheme`` out of the scope (ASGI allows it: it is then ``http``)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await sm({k: v for k, v in scope.items() if k != "scheme"}, receive, send)

    return asgi


@pytest.mark.parametrize("scheme", ["http", "https", None])
async def test_a_same_site_form_passes_the_cross_site_check_over_the_scopes_scheme(scheme: str | None) -> None:
    sm = app()
    site = scheme or "http"
    transport = StreamingTransport(sm if scheme else without_scheme(sm))
    async with httpx.AsyncClient(transport=transport, base_url=f"{site}://t") as c:
        form = {"title": "from a form"}
        same = await c.post("/memo", data=form, headers={**JSON, "origin": f"{site}://t", "referer": f"{site}://t/"})
        assert same.status_code == 201, same.text
        other = "https" if site == "http" else "http"
        cross = await c.post("/memo", data=form, headers={**JSON, "origin": f"{other}://t"})
        assert cross.status_code == 403, cross.text


# -- ids, users and failures the caller is told about ----------------------------------------------


async def test_an_id_of_200_printable_characters_is_reachable_a_longer_one_is_404_unasked() -> None:
    sm = app()
    longest = await sm.create(Memo, id="m" * 200, title="longest")
    async with client(sm) as c:
        found = await c.get(f"/memo/{longest.id}", headers=JSON)
        assert found.status_code == 200 and found.json()["title"] == "longest"
        for key in ("m" * 201, "tab%09here"):  # too long; unprintable
            refused = await c.get(f"/memo/{key}", headers=JSON)
            assert refused.status_code == 404
            assert refused.json()["error"] == "No memo with that id"  # refused before any store is asked


async def test_a_user_entity_without_a_user_is_401_saying_so() -> None:
    sm = app()
    async with client(sm) as c:
        anonymous = await c.get("/prefs", headers=JSON)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "Authentication required"
        assert (await c.get("/prefs", headers={**JSON, "x-user": "ada"})).json()["theme"] == "light"


async def test_a_failure_at_the_door_is_a_500_naming_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def unsure(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        return "maybe"  # type: ignore[return-value]

    sm = app(authorize=unsure)
    async with client(sm) as c:
        failed = await c.get("/board", headers=JSON)
    assert failed.status_code == 500
    assert failed.json()["error"] == "Internal error in GET /board"
    assert "GET /board failed" in caplog.text and "authorize must return a bool" in caplog.text


async def test_a_get_event_changes_state_so_it_passes_the_cross_site_check_a_read_need_not() -> None:
    sm = app()
    async with client(sm) as c:
        evil = {"origin": "http://evil.example", "sec-fetch-site": "cross-site"}
        refused = await c.get("/board/visit?times=5", headers={**evil, "accept": "text/html"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "Cross-site request refused (Origin)"
        read = await c.get("/board", headers={**evil, "accept": "text/html"})  # a read: any site may link to it
        assert read.status_code == 200 and read.json()["views"] == 0
    async with Page(sm) as page:  # Datastar sends a GET's signals as the ``datastar`` query value
        page.signals = {"board": {"views": 0}, "other": 1}
        answer = await page.run("@get('/board/visit?times=2')")
        assert answer.status == 200, answer.text
        assert page.signals["board"]["views"] == 2


async def test_a_session_cookie_is_sent_with_lower_case_header_names() -> None:
    """ASGI asks for lower-case header names, and HTTP/2 servers refuse any other."""
    sm = app()
    async with client(sm) as c:
        first = await c.post("/cart/add", headers=JSON)
        assert first.status_code == 200 and first.json()["items"] == 1
        assert len(first.headers.get_list("set-cookie")) == 1
        assert [name for name, _ in first.headers.raw if name != name.lower()] == []
        assert (await c.post("/cart/add", headers=JSON)).json()["items"] == 2  # the same session

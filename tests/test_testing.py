"""``starmodel_asgi.testing.Page``: a page's stand-in behaves as Datastar's browser client does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import ClientWritable, Entity, EventRequest, Redirect, Signals, StarModel, UploadFile, event
from starmodel_asgi.testing import Page, StreamingTransport, parse_action, read_object
from tests.support.servers import run_server

pytestmark = pytest.mark.anyio


class Tally(Entity):
    count: int = 0
    step: Annotated[int, ClientWritable] = 1
    seen: list[str] = []

    @event
    def add(self, amount: int | None = None) -> None:
        self.count += self.step if amount is None else amount

    @event
    def look(self, signals: Signals) -> None:
        """Keeps what the page sent, to check what a page sends."""
        self.seen = sorted(f"{k}.{n}" for k, v in signals.items() for n in (v if isinstance(v, dict) else [""]))

    @event(selector="#out", mode="inner")
    def show(self) -> str:
        return f"<b>{self.count}</b>"

    @event
    def leave(self) -> Redirect:
        return Redirect("/done")

    @event(selector="#file", mode="inner")
    async def upload(self, note: str, doc: UploadFile) -> str:
        return f"{note}: {doc.filename} {len(await doc.read())}"


class Board(Entity):
    model_config = {"scope": "global"}
    text: str = ""

    @event
    def write(self, text: str) -> None:
        self.text = text


def page_html() -> str:
    return f"""<!doctype html><html><body>
  {Tally.holder(Tally(), sync="get")}
  {Board.holder(sync="live")}
  <div data-signals="{{draft: 'hi', 'n': 2}}"></div>
  <input data-bind:search value="py">
  <input type="checkbox" data-bind:agree checked>
  <p id="out"></p>
</body></html>"""


def host(sm: StarModel, started: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("up")
        yield
        started.append("down")

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page_html())

    return Starlette(routes=[Route("/", home), Mount("/sm", sm)], lifespan=lifespan)


def build() -> StarModel:
    return StarModel([Tally, Board], secret_key="testing")


async def test_a_page_keeps_its_session_and_signals_and_another_page_has_its_own() -> None:
    sm, started = build(), []
    async with Page(host(sm, started)) as page:
        assert started == ["up"]  # the host's lifespan runs
        answer = await page.run(Tally.add(amount=2))
        assert (answer.status, answer.signals) == (200, {"tally": {"count": 2}})
        await page.run("@post('/sm/tally/add')", tally={"step": 5})  # typed into the page first
        assert page.signals["tally"] == {"count": 7, "step": 5}
        assert "sm_session" in page.cookies
        other = Page(sm)  # the StarModel alone, addressed at its base_path
        assert (await other.run(Tally.add())).signals == {"tally": {"count": 1}}
        assert (await page.request("GET", "/sm/tally")).json()["count"] == 7
    assert started == ["up", "down"]


async def test_open_reads_declared_signals_and_runs_the_pages_init_actions() -> None:
    sm = build()
    async with Page(host(sm, [])) as page:
        await page.run(Tally.add(amount=3))
        await Page(sm).run(Board.write(text="hello"))
        answer = await page.open("/")
        assert answer.status == 200 and '<p id="out">' in answer.text
        assert page.signals["tally"]["count"] == 3  # the holder's @get brought the session's state
        assert page.signals["board"]["text"] == "hello"  # the live holder's first answer
        assert page.signals["draft"] == "hi" and page.signals["n"] == 2
        assert page.signals["search"] == "py" and page.signals["agree"] is True
        assert page.signals["tally"]["_errors"] == {
            "amount": "",
            "count": "",
            "seen": "",
            "step": "",
            "doc": "",
            "note": "",
        }


async def test_signals_are_sent_as_the_browser_sends_them_and_only_200_answers_are_applied() -> None:
    sm = build()
    page = Page(sm)
    page.signals = {"tally": {"count": 0, "_error": "x", "_errors": {"a": ""}}, "_local": 1, "q": "z"}
    await page.run(Tally.look())
    assert page.signals["tally"]["seen"] == ["q.", "tally.count"]  # nothing starting with "_"
    refused = await page.run(Tally.add(amount="many"))  # type: ignore[arg-type]
    assert refused.status == 422
    assert refused.signals["tally"]["_errors"]["amount"] == "Amount must be a whole number."
    assert page.signals["tally"]["_errors"] == {"a": ""}  # not applied: the client ignores non-200 bodies


async def test_elements_redirects_and_forms() -> None:
    page = Page(build())
    await page.run(Tally.add(amount=4))
    assert (await page.run(Tally.show())).elements == [("#out", "inner", "<b>4</b>")]
    assert (await page.run(Tally.leave())).redirect == "/done"
    upload = Tally.upload().options(contentType="form")
    answer = await page.submit(upload, {"note": "cv"}, files={"doc": ("cv.pdf", b"%PDF-1.4", "application/pdf")})
    assert answer.elements == [("#file", "inner", "cv: cv.pdf 8")]
    with pytest.raises(ValueError, match=r"page\.submit"):
        await page.run(upload)


async def test_live_streams_arrive_as_they_happen() -> None:
    sm = build()
    page, writer = Page(sm), Page(sm)
    async with page.live("@get('/sm/board/live')") as stream:
        first = await stream.next()
        assert first.signals == {"board": {"text": ""}}
        await writer.run(Board.write(text="live!"))
        assert (await stream.next()).signals == {"board": {"text": "live!"}}
        assert page.signals["board"]["text"] == "live!"
        with pytest.raises(TimeoutError, match="nothing arrived on /sm/board/live"):
            await stream.next(timeout=0.3)
        await writer.run(Board.write(text="one"))
        await writer.run(Board.write(text="two"))
        assert (await stream.until(lambda a: a.signals["board"]["text"] == "two")).status == 200
        with pytest.raises(TimeoutError):
            await stream.until(lambda a: False, timeout=0.3)
    with pytest.raises(ValueError, match="live stream"):
        await page.run("@get('/sm/board/live')")


def test_actions_and_declared_signals_are_read_like_the_client_reads_them() -> None:
    assert parse_action("@post('/sm/a/b?x=1', {contentType: 'form'})") == (
        "POST",
        "/sm/a/b?x=1",
        {"contentType": "form"},
    )
    assert parse_action(Tally.add(amount=2)) == ("POST", "/sm/tally/add?amount=2", {})
    assert read_object("{a: 1, 'b': 'it\\'s', \"c\": [true, null]}") == {"a": 1, "b": "it's", "c": [True, None]}
    with pytest.raises(ValueError, match="not a Datastar action"):
        parse_action("$count++")
    with pytest.raises(ValueError, match="data-signals"):
        read_object("{a: $other + 1}")


async def test_an_event_that_raises_answers_500_naming_it() -> None:
    class Fragile(Entity):
        @event
        def boom(self) -> None:
            raise RuntimeError("kaput")

    page = Page(StarModel([Fragile], secret_key="testing"))
    answer = await page.run(Fragile.boom())
    assert answer.status == 500
    assert answer.signals["fragile"]["_error"] == "Internal error in event fragile.boom"
    assert "kaput" not in answer.text  # the traceback goes to the log, not to the page


class Note(Entity):
    model_config = {"scope": "global"}
    text: str | None = "hi"
    pieces: list[str] = []

    @event
    def clear(self) -> None:
        self.text = None

    @event
    def parts(self) -> list[str]:
        return ['<p id="a">A</p>', "<p id='b'>B<br></p>"]


class Item(Entity):
    model_config = {"scope": "record"}


def echo_site(sent: list[dict[str, object]]) -> Starlette:
    """A host whose routes answer what Datastar would get from other servers, and note what came."""
    from datastar_py import ServerSentEventGenerator as SSE
    from starlette.responses import Response

    async def echo(request: Request) -> Response:
        sent.append({"body": await request.body(), "query": dict(request.query_params), "headers": request.headers})
        events = SSE.patch_signals({"form": {"name": "default", "age": 1}}, only_if_missing=True)
        return Response(events, media_type="text/event-stream")

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse("""<div data-signals:my-count="1" data-signals="{msg: 'a, b: c', list: [1, 2,],}"></div>
  <input type="number" data-bind:age value="42"><input data-bind:first-name value="Ada">
  <div data-init="@post('/echo', {filterSignals: {include: /^age$/}, headers: {'X-Token': 't'}})"></div>""")

    sm = StarModel([Note, Item], secret_key="testing")
    return Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["GET", "POST"]), Mount("/sm", sm)])


async def test_patches_remove_signals_and_fill_only_what_is_missing() -> None:
    page = Page(echo_site([]))
    await page.run(Note.clear())
    assert "text" not in page.signals["note"]  # null removes, as in the browser
    page.signals["form"] = {"name": "Ada"}
    answer = await page.run("@post('/echo')")
    assert answer.signals == {"form": {"name": "default", "age": 1}}  # what was sent...
    assert page.signals["form"] == {"name": "Ada", "age": 1}  # ...and what the page keeps


async def test_a_live_stream_that_fails_is_not_applied_and_says_its_status() -> None:
    page = Page(StarModel([Item], secret_key="testing"))
    async with page.live("/sm/item/live") as stream:  # a list needs render(): 404 naming the fix
        failed = await stream.next()
    assert stream.status == failed.status == 404
    assert "render()" in failed.signals["item"]["_error"]
    assert page.signals == {}  # the client ignores the body of a failed answer


async def test_options_filter_headers_and_payload_are_sent_as_the_client_sends_them() -> None:
    sent: list[dict[str, object]] = []
    page = Page(echo_site(sent))
    opened = await page.open("/")
    assert page.signals["myCount"] == 1 and page.signals["firstName"] == "Ada"  # camel-cased keys
    assert page.signals["msg"] == "a, b: c" and page.signals["list"] == [1, 2]
    assert sent[-1]["body"] == b'{"age":42}' and sent[-1]["headers"]["x-token"] == "t"  # type: ignore[index]
    assert opened.signals == {"form": {"name": "default", "age": 1}}
    await page.run("@post('/echo', {payload: {z: 9}})")
    assert sent[-1]["body"] == b'{"z":9}'
    await page.run("@get('/echo?datastar=%7B%7D&q=1')")
    assert sent[-1]["query"]["q"] == "1" and sent[-1]["query"]["datastar"].startswith('{"myCount"')  # type: ignore[index]
    with pytest.raises(ValueError, match="does not know the action options"):
        await page.run("@post('/echo', {retries: 3})")
    with pytest.raises(ValueError, match="live stream"):
        await page.request("GET", "/sm/note/live")


async def test_html_without_a_selector_patches_each_top_level_element_by_its_id() -> None:
    answer = await Page(StarModel([Note], secret_key="testing")).run(Note.parts())
    assert answer.elements == [("#a", "outer", '<p id="a">A</p>'), ("#b", "outer", "<p id='b'>B<br></p>")]


async def test_an_app_without_a_lifespan_or_a_failing_one() -> None:
    async def silent(scope: dict[str, object], receive: object, send: object) -> None:
        return None  # says nothing to a lifespan scope: uvicorn carries on, so does Page

    with anyio.fail_after(5):
        async with Page(silent):  # type: ignore[arg-type]
            pass

    @asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(RuntimeError, match="lifespan failed to start"):
        async with Page(Starlette(lifespan=broken)):
            pass


def raw_sse(*writes: bytes, fail: BaseException | None = None) -> Any:
    """An ASGI app answering an SSE stream in the given writes, then ending (or raising ``fail``)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for body in writes:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if fail is not None:
            raise fail
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_a_stream_split_anywhere_reads_whole_and_its_end_or_crash_is_told() -> None:
    split = raw_sse(b'event: datastar-patch-signals\ndata: signals {"t": "caf\xc3', b'\xa9"}\n\n')
    page = Page(split)
    async with page.live("/feed") as stream:
        assert (await stream.next()).signals == {"t": "café"}  # a character across two writes
        with pytest.raises(EOFError, match="/feed ended"):
            await stream.next()
    with pytest.raises(ZeroDivisionError):
        async with Page(raw_sse(b": hello\n\n", fail=ZeroDivisionError())).live("/feed") as stream:
            await stream.next()


async def test_pages_page_cannot_read_and_lifespans_that_fail_to_stop_are_errors() -> None:
    async def unbalanced(request: Request) -> HTMLResponse:
        return HTMLResponse("""<div data-init="@post('/x', {a: 1)"></div>""")

    with pytest.raises(ValueError, match="cannot read the action"):
        await Page(Starlette(routes=[Route("/", unbalanced)])).open("/")

    @asynccontextmanager
    async def stuck(app: Starlette) -> AsyncIterator[None]:
        yield
        raise RuntimeError("could not flush")

    with pytest.raises(RuntimeError, match="failed to shut down"):
        async with Page(Starlette(lifespan=stuck)):
            pass


class Mailbox(Entity):
    model_config = {"scope": "global"}
    sent: str = ""

    @event
    def send(self, request: EventRequest) -> None:
        self.sent = request.raw.state.mailer  # what the host's lifespan put in its state


async def test_page_gives_each_request_the_host_lifespan_state_as_servers_do() -> None:
    sm = StarModel([Mailbox], secret_key="state")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"mailer": "smtp://test"}

    host = Starlette(routes=[Mount("/sm", sm)], lifespan=lifespan)
    async with Page(host) as page:
        answer = await page.run(Mailbox.send())
        assert answer.status == 200, answer.text
        assert page.signals["mailbox"]["sent"] == "smtp://test"


def feed_until_left(told: list[str]) -> Any:
    """An ASGI app that sends one SSE comment, reads the request's body, then waits for the client
    to leave and notes what it was told."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message["body"]
            if not message.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b": got " + body + b"\n\n", "more_body": True})
        told.append((await receive())["type"])

    return app


async def test_the_streaming_transport_reads_an_endless_answer_in_process_and_leaving_tells_the_app() -> None:
    told: list[str] = []
    async with httpx.AsyncClient(transport=StreamingTransport(feed_until_left(told)), base_url="http://t") as client:
        with anyio.fail_after(5):  # httpx's own ASGITransport waits here forever: the app never ends
            async with client.stream("GET", "/feed", headers={"accept": "text/event-stream"}) as response:
                assert response.status_code == 200
                assert await response.aiter_bytes().__anext__() == b": got \n\n"
            while not told:
                await anyio.sleep(0.01)
            # another format of endless answer, asked for as a stream
            asked = {"accept": "application/x-ndjson"}
            async with client.stream("GET", "/feed", headers=asked, extensions={"stream": True}) as response:
                assert await response.aiter_bytes().__anext__() == b": got \n\n"
            while len(told) < 2:
                await anyio.sleep(0.01)
    assert told == ["http.disconnect", "http.disconnect"]


async def test_the_streaming_transport_hands_a_body_sent_in_pieces_over_piece_by_piece() -> None:
    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        pieces = []
        while (message := await receive())["type"] == "http.request":
            pieces.append(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"|".join(pieces)})

    async def pieces() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    async with httpx.AsyncClient(transport=StreamingTransport(echo), base_url="http://t") as client:
        assert (await client.post("/", content=pieces())).content == b"one|two|"  # the last piece ends it
        assert (await client.post("/", content=b"whole")).content == b"whole"


async def test_a_client_not_entered_gets_whole_answers_and_the_apps_exceptions() -> None:
    async def hello(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>hi</p>")

    async def broken(request: Request) -> HTMLResponse:
        raise ZeroDivisionError

    host = Starlette(routes=[Route("/", hello), Route("/broken", broken)])
    client = httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t")
    assert (await client.get("/")).text == "<p>hi</p>"
    with pytest.raises(ZeroDivisionError):  # raised in the test, as the server would log it
        await client.get("/broken")


async def test_a_page_reads_a_live_stream_of_a_real_server_through_its_client() -> None:
    told: list[str] = []
    with run_server(feed_until_left(told)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            async with Page(client).live("/feed") as stream:
                await stream.wait(lambda s: ": got " in s.text)
                assert stream.status == 200 and not stream.ended
            with anyio.fail_after(5):
                while not told:
                    await anyio.sleep(0.01)
    assert told == ["http.disconnect"]


async def test_the_state_stays_after_a_page_block_for_the_code_and_the_next_page() -> None:
    sm = StarModel(entities=[Tally, Board], secret_key="k")
    async with sm.edit(Board) as board:
        board.text = "seeded"
    async with Page(sm) as page:
        assert (await page.run(Board.write(text="first page"))).status == 200
    assert (await sm.get(Board)).text == "first page"
    async with Page(sm) as page:
        await page.run(Board.write(text=(await sm.get(Board)).text + ", second page"))
        assert page.signals["board"]["text"] == "first page, second page"
    await sm.aclose()
    assert (await sm.get(Board)).text == "first page, second page"

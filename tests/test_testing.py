"""``starmodel_asgi.testing.Page``: a page's stand-in behaves as Datastar's browser client does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import ClientWritable, Entity, Redirect, Signals, StarModel, UploadFile, event
from starmodel_asgi.testing import Page, parse_action, read_object

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
        with pytest.raises(TimeoutError):
            await stream.next(timeout=0.3)
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

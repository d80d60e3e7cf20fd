"""Headless Chromium with the real Datastar client: two browsers, live updates without a reload."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import ClientWritable, Entity, StarModel, event
from starmodel_asgi.pages import datastar_script
from tests.support.datastar import datastar_client
from tests.support.headers import JSON
from tests.support.servers import run_server
from tests.support.services import require

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Clicks(Entity):
    """Shared by everyone; ``step`` is typed by the page (``data-bind``) and sent with the click."""

    model_config = {"scope": "global"}
    count: int = 0
    step: Annotated[int, ClientWritable] = 1

    @event
    def click(self) -> None:
        self.count += self.step

    def render(self) -> str:
        return f'<p id="clicks-view">Clicked {self.count} times</p>'


class Mine(Entity):
    """One per browser session."""

    count: int = 0

    @event
    def bump(self) -> None:
        self.count += 1


def page(sync: str) -> str:
    """What a host page renders with our helpers: holders, bound inputs, actions."""
    holders = Clicks.holder(sync="live") + Mine.holder(sync="live") if sync == "live" else Clicks.holder()
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{datastar_script("/static/datastar.js")}</head>
<body>
  {holders}
  <span id="count" data-text="{Clicks.signal.count}"></span>
  <input id="step" type="number" data-bind:{Clicks.signal.step.path}>
  <input id="step-value-form" type="number" data-bind="{Clicks.signal.step.path}">
  <button id="click" data-on:click="{Clicks.click()}">click</button>
  <p id="clicks-view">not rendered yet</p>
  <span id="mine" data-text="{Mine.signal.count}"></span>
  <button id="bump" data-on:click="{Mine.bump()}">bump</button>
</body></html>"""


@pytest.fixture(scope="module")
def datastar_js() -> Path:
    require("STARMODEL_TEST_CHROMIUM", "browser")
    return datastar_client()


def make_site(datastar_js: Path, sm: StarModel) -> Starlette:
    async def live_page(request: Request) -> HTMLResponse:
        return HTMLResponse(page("live"))

    async def get_page(request: Request) -> HTMLResponse:
        return HTMLResponse(page("get"))

    async def script(request: Request) -> FileResponse:
        return FileResponse(datastar_js, media_type="text/javascript")

    return Starlette(
        routes=[
            Route("/", live_page),
            Route("/once", get_page),
            Route("/static/datastar.js", script),
            Mount("/sm", sm),
        ]
    )


@pytest.fixture
def site(datastar_js: Path) -> Iterator[str]:
    sm = StarModel([Clicks, Mine], base_path="/sm", secret_key="browser-test")
    with run_server(make_site(datastar_js, sm)) as url:
        yield url


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    executable = require("STARMODEL_TEST_CHROMIUM", "browser")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_holders_render_signals_and_a_sync_action() -> None:
    StarModel([Clicks, Mine], base_path="/sm")
    holder = Clicks.holder(sync="live")
    assert "data-signals='{&quot;clicks&quot;:{&quot;count&quot;:0,&quot;step&quot;:1}}'" in holder
    assert "data-init=\"@get('/sm/clicks/live', {retry: 'always'})\"" in holder
    assert "data-init=\"@get('/sm/clicks')\"" in Clicks.holder()
    assert Clicks.signal.count == "$clicks.count" and Clicks.signal.step.path == "clicks.step"


async def test_a_click_in_one_browser_shows_in_the_other_without_reload(site: str, chromium: Any) -> None:
    from playwright.async_api import expect

    async with httpx.AsyncClient(base_url=site) as api:  # state before any page opens
        for _ in range(7):
            await api.post("/sm/clicks/click", headers=JSON)

    alice_context, bob_context = await chromium.new_context(), await chromium.new_context()
    alice, bob = await alice_context.new_page(), await bob_context.new_page()
    errors: list[str] = []
    for p in (alice, bob):
        p.on("pageerror", lambda exc: errors.append(str(exc)))
    await alice.goto(site + "/")
    await bob.goto(site + "/")

    # both start in sync with the server (the holder declared 0; the stream brought 7)
    for p in (alice, bob):
        await expect(p.locator("#count")).to_have_text("7")
        await expect(p.locator("#clicks-view")).to_have_text("Clicked 7 times")
        await expect(p.locator("#step")).to_have_value("1")

    await alice.click("#click")
    await expect(bob.locator("#count")).to_have_text("8")  # no reload: pushed by the live stream
    await expect(bob.locator("#clicks-view")).to_have_text("Clicked 8 times")  # render() pushed too
    await expect(alice.locator("#count")).to_have_text("8")

    # data-bind:clicks.step sends the typed step with the click; everyone sees the new step
    await alice.fill("#step", "5")
    await expect(alice.locator("#step-value-form")).to_have_value("5")  # data-bind="clicks.step" too
    await alice.click("#click")
    await expect(bob.locator("#count")).to_have_text("13")
    await expect(bob.locator("#step")).to_have_value("5")
    await expect(bob.locator("#step-value-form")).to_have_value("5")

    # and back from Bob's side, through the value form of data-bind
    await bob.fill("#step-value-form", "2")
    await bob.click("#click")
    await expect(alice.locator("#count")).to_have_text("15")

    # session state stays in its own browser
    await alice.click("#bump")
    await alice.click("#bump")
    await expect(alice.locator("#mine")).to_have_text("2")
    await bob.click("#bump")
    await expect(bob.locator("#mine")).to_have_text("1")
    await expect(alice.locator("#mine")).to_have_text("2")

    # a page using the default holder() fetches the current state once on load
    other = await bob_context.new_page()
    await other.goto(site + "/once")
    await expect(other.locator("#count")).to_have_text("15")
    assert errors == []
    await alice_context.close()
    await bob_context.close()


async def test_a_cut_stream_is_retried_by_the_browser_and_resumes_with_the_current_state(
    datastar_js: Path, chromium: Any
) -> None:
    """The server restarts (its streams are cut), a change lands meanwhile: Datastar reconnects
    on its own and the page shows the state as it is now."""
    from playwright.async_api import expect

    sm = StarModel([Clicks, Mine], base_path="/sm", secret_key="browser-test")
    site = make_site(datastar_js, sm)
    context = await chromium.new_context()
    browser_page = await context.new_page()
    with run_server(site, lifespan="off") as url:  # the state outlives the server, in ``sm``
        port = int(url.rsplit(":", 1)[1])
        await browser_page.goto(url + "/")
        await expect(browser_page.locator("#count")).to_have_text("0")
    with run_server(site, port=port, lifespan="off") as url:
        async with httpx.AsyncClient(base_url=url) as api:
            for _ in range(3):
                await api.post("/sm/clicks/click", headers=JSON)
        await expect(browser_page.locator("#count")).to_have_text("3", timeout=15_000)
        await expect(browser_page.locator("#clicks-view")).to_have_text("Clicked 3 times")
        async with httpx.AsyncClient(base_url=url) as api:  # and it is live again
            await api.post("/sm/clicks/click", headers=JSON)
        await expect(browser_page.locator("#count")).to_have_text("4")
    await context.close()


PAYLOAD = "@post('/sm/boom') $clicks.count = 99 <b>\\u0040</b> ' \" `"


class Quote(Entity):
    """Stored text that looks like Datastar code."""

    model_config = {"scope": "global"}
    text: str = PAYLOAD


async def test_stored_text_that_looks_like_an_action_stays_text_in_the_holder(datastar_js: Path, chromium: Any) -> None:
    from playwright.async_api import expect

    sm = StarModel([Quote, Clicks], base_path="/sm", secret_key="browser-test")

    async def home(request: Request) -> HTMLResponse:
        holders = Quote.holder(sync=None) + Clicks.holder(sync=None)
        body = f'{holders}<p id="text" data-text="$quote.text"></p><p id="count" data-text="$clicks.count"></p>'
        return HTMLResponse(
            f"<!doctype html><html><head>{datastar_script('/static/datastar.js')}</head><body>{body}</body></html>"
        )

    async def script(request: Request) -> FileResponse:
        return FileResponse(datastar_js, media_type="text/javascript")

    site = Starlette(routes=[Route("/", home), Route("/static/datastar.js", script), Mount("/sm", sm)])
    with run_server(site) as url:
        context = await chromium.new_context()
        page = await context.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda request: requests.append(request.url))
        await page.goto(url + "/")
        await expect(page.locator("#text")).to_have_text(PAYLOAD)
        await expect(page.locator("#count")).to_have_text("0")  # the text did not run as an assignment
        assert not [r for r in requests if "boom" in r] and errors == []
        await context.close()


async def test_a_compressed_live_page_keeps_updating_across_quiet_times(datastar_js: Path, chromium: Any) -> None:
    """Chromium asks for zstd; at each keep-alive the stream ends its frame and frees its
    compressor, and the next change starts a new frame that the browser reads on."""
    from playwright.async_api import expect

    sm = StarModel([Clicks, Mine], base_path="/sm", secret_key="browser-test", keepalive=0.2)
    with run_server(make_site(datastar_js, sm)) as url:
        context = await chromium.new_context()
        viewer = await context.new_page()
        errors: list[str] = []
        viewer.on("pageerror", lambda exc: errors.append(str(exc)))
        encodings: list[str] = []
        viewer.on(
            "response",
            lambda r: encodings.append(r.headers.get("content-encoding", "")) if "/sm/clicks/live" in r.url else None,
        )
        await viewer.goto(url + "/")
        await expect(viewer.locator("#count")).to_have_text("0")
        async with httpx.AsyncClient(base_url=url) as api:
            for n in range(1, 4):
                await viewer.wait_for_timeout(600)  # quiet: keep-alives end the frame
                await api.post("/sm/clicks/click", headers=JSON)
                await expect(viewer.locator("#count")).to_have_text(str(n))
                await expect(viewer.locator("#clicks-view")).to_have_text(f"Clicked {n} times")
        assert encodings and set(encodings) == {"zstd"}
        assert errors == []
        await context.close()

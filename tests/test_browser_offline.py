"""A page whose Datastar client did not load says so: ``datastar_script()`` adds a notice that
Datastar switches off once it runs (headless Chromium; the CDN blocked, local copies served)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from starmodel_asgi import Entity, StarModel, datastar_script, event
from starmodel_asgi.pages import DATASTAR_CDN, OFFLINE_NOTICE
from tests.support.datastar import page_site, script_route
from tests.support.servers import run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio

NOTICE = "getComputedStyle(document.body, '::before')"


class Tally(Entity):
    model_config = {"name": "offline_tally"}
    n: int = 0

    @event
    def add(self) -> None:
        self.n += 1


def script_app(client: Path, cors: bool) -> Starlette:
    """Serves the Datastar client alone, as a static server on another port would."""
    middleware = [Middleware(CORSMiddleware, allow_origins=["*"])] if cors else []
    return Starlette(routes=[script_route(client, "/datastar.js")], middleware=middleware)


def site(client: Path, url: str | None) -> Starlette:
    """A page loading Datastar from ``url`` (``None``: ``STARMODEL_DATASTAR_URL``, else the CDN)."""
    sm = StarModel([Tally], base_path="/sm", secret_key="offline")
    return page_site(
        client,
        sm,
        lambda: (
            f"""<!doctype html><html><head>{datastar_script(url, delay=0.5)}</head>
<body>{Tally.holder(sync=None)}<b id="n" data-text="{Tally.signal.n}">0</b>
<button id="add" data-on:click="{Tally.add()}">add</button></body></html>"""
        ),
    )


async def notice_shown(page: Any) -> bool:
    await page.wait_for_timeout(800)  # past the notice's delay
    shown = await page.evaluate(f"{NOTICE}.visibility === 'visible' && {NOTICE}.content")
    return bool(shown) and OFFLINE_NOTICE in shown


async def test_a_page_without_its_cdn_says_so(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STARMODEL_DATASTAR_URL", raising=False)
    with run_server(site(datastar_js, None)) as url:
        context = await chromium.new_context()
        await context.route(DATASTAR_CDN, lambda route: route.abort("internetdisconnected"))
        page = await context.new_page()
        await page.goto(url)
        assert await notice_shown(page)
        await page.click("#add")
        await page.wait_for_timeout(300)
        assert await page.text_content("#n") == "0"  # nothing works, and the page said why
        await context.close()


async def test_a_local_copy_hides_the_notice_and_the_page_works(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    with run_server(site(datastar_js, "/static/datastar.js")) as url:
        page = await (await chromium.new_context()).new_page()
        await page.goto(url)
        await page.click("#add")
        await expect(page.locator("#n")).to_have_text("1")
        assert not await notice_shown(page)
        assert await page.get_attribute("#starmodel-offline", "media") == "not all"


@pytest.mark.parametrize("cors", [False, True], ids=["no CORS", "CORS"])
async def test_a_copy_on_another_origin_needs_cors(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    cors: bool,
) -> None:
    with run_server(script_app(datastar_js, cors)) as static, run_server(site(datastar_js, None)) as url:
        monkeypatch.setenv("STARMODEL_DATASTAR_URL", f"{static}/datastar.js")  # as a deployment sets it
        page = await (await chromium.new_context()).new_page()
        await page.goto(url)
        assert await notice_shown(page) is not cors
        await page.click("#add")
        await page.wait_for_timeout(300)
        assert await page.text_content("#n") == ("1" if cors else "0")


def test_the_notice_can_be_left_out_or_reworded() -> None:
    assert datastar_script("/d.js", notice=None) == '<script type="module" src="/d.js"></script>'
    reworded = datastar_script("/d.js", notice='Offline: "reload" </style><script>')
    assert 'content:"Offline: \\22 reload\\22  \\3c \\2f style\\3e \\3c script\\3e "' in reworded
    assert reworded.count("</style>") == 1
    with pytest.raises(ValueError, match="delay=-1"):
        datastar_script(delay=-1)

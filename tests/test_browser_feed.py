"""A newest-first feed in headless Chromium with the real Datastar client: new posts appear on top
in both browsers, "load more" appends older ones that stay live, the window keeps its size, and the
page follows the server again after it restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import Entity, EventRequest, StarModel, event
from starmodel_asgi.pages import datastar_script
from tests.support.headers import JSON
from tests.support.servers import run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio


class Chirp(Entity):
    model_config = {"scope": "record", "client_writable": ["text"]}
    text: str = ""

    @event
    def edit(self, text: str) -> None:
        self.text = text

    def render(self) -> str:
        return f'<li id="{self.dom_id}">{self.text}</li>'


class Toot(Entity):
    """Rendered for each viewer: the delete button only on one's own posts."""

    model_config = {"scope": "record", "client_writable": ["text"]}
    text: str = ""
    owner: str = ""

    def on_create(self, request: EventRequest | None) -> None:
        self.owner = (request.user_id if request else None) or ""

    def render(self, viewer: EventRequest) -> str:
        delete = f"<button data-on:click=\"@delete('/sm/toot/{self.id}')\">delete</button>"
        return f'<li id="{self.dom_id}"><span>{self.text}</span>{delete if viewer.user_id == self.owner else ""}</li>'


def page(entity: type[Entity]) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{datastar_script("/static/datastar.js")}</head>
<body>
  {entity.live_list(limit=2, tag="ul", newest_first=True)}
  <button id="more" data-on:click="{entity.load_more()}">Older</button>
  <input id="text" data-bind:toot.text><button id="send" data-on:click="@post('/sm/toot')">send</button>
</body></html>"""


def make_site(client_js: Path, sm: StarModel, entity: type[Entity] = Chirp) -> Starlette:
    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page(entity))

    async def script(request: Request) -> FileResponse:
        return FileResponse(client_js, media_type="text/javascript")

    return Starlette(routes=[Route("/", home), Route("/static/datastar.js", script), Mount("/sm", sm)])


async def test_a_newest_first_feed_prepends_loads_older_posts_and_keeps_them_live(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    sm = StarModel([Chirp], base_path="/sm", secret_key="feed")
    site = make_site(datastar_js, sm)
    ids = {}
    for text in ("c1", "c2", "c3", "c4"):
        ids[text] = (await sm.create(Chirp, text=text)).id
    errors: list[str] = []
    contexts = [await chromium.new_context() for _ in range(2)]
    alice, bob = [await context.new_page() for context in contexts]
    for p in (alice, bob):
        p.on("pageerror", lambda exc: errors.append(str(exc)))
    with run_server(site, lifespan="off") as url:
        port = int(url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=url + "/sm") as api:
            for p in (alice, bob):
                await p.goto(url + "/")
                await expect(p.locator("#chirp-list li")).to_have_text(["c4", "c3"])

            # a new post appears on top for both; the oldest leaves the window of two
            await api.post("/chirp", json={"text": "c5"}, headers=JSON)
            for p in (alice, bob):
                await expect(p.locator("#chirp-list li")).to_have_text(["c5", "c4"])

            # alice loads older posts: appended below, her stream replaced (one per page)
            await alice.click("#more")
            await expect(alice.locator("#chirp-list li")).to_have_text(["c5", "c4", "c3", "c2"])
            await alice.click("#more")
            await expect(alice.locator("#chirp-list li")).to_have_text(["c5", "c4", "c3", "c2", "c1"])
            await expect(bob.locator("#chirp-list li")).to_have_text(["c5", "c4"])
            assert url.call(sm.live_streams) == {"chirp": 2}

            # the posts loaded that way are live: changed and deleted on her page
            await api.post(f"/chirp/{ids['c1']}/edit", json={"text": "C1"}, headers=JSON)
            await expect(alice.locator("#chirp-list li")).to_have_text(["c5", "c4", "c3", "c2", "C1"])
            await api.delete(f"/chirp/{ids['c2']}")
            await expect(alice.locator("#chirp-list li")).to_have_text(["c5", "c4", "c3", "C1"])
            await api.post("/chirp", json={"text": "c6"}, headers=JSON)
            await expect(alice.locator("#chirp-list li")).to_have_text(["c6", "c5", "c4", "c3", "C1"])
            await expect(bob.locator("#chirp-list li")).to_have_text(["c6", "c5"])

    # the server stops (its streams end quietly) and comes back: the pages follow it again
    with run_server(site, port=port, lifespan="off") as url:
        async with httpx.AsyncClient(base_url=url + "/sm") as api:
            await api.post("/chirp", json={"text": "c7"}, headers=JSON)
            await expect(bob.locator("#chirp-list li")).to_have_text(["c7", "c6"], timeout=15_000)
            # her window is the six records it grew to (two, and four more when she last asked)
            mine = ["c7", "c6", "c5", "c4", "c3", "C1"]
            await expect(alice.locator("#chirp-list li")).to_have_text(mine, timeout=15_000)
    assert errors == []
    for context in contexts:
        await context.close()


def user(request: Request) -> str | None:
    return request.headers.get("x-user")


async def test_each_browser_sees_the_delete_button_only_on_its_own_posts(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    sm = StarModel([Toot], base_path="/sm", secret_key="feed", get_user=user)
    errors: list[str] = []
    contexts = [await chromium.new_context(extra_http_headers={"x-user": name}) for name in ("alice", "bob")]
    alice, bob = [await context.new_page() for context in contexts]
    for p in (alice, bob):
        p.on("pageerror", lambda exc: errors.append(str(exc)))
    with run_server(make_site(datastar_js, sm, Toot)) as url:
        for p in (alice, bob):
            await p.goto(url + "/")
        for p, text in ((alice, "from alice"), (bob, "from bob")):
            await p.fill("#text", text)
            await p.click("#send")
            await expect(p.locator("#toot-list li span").first).to_have_text(text)
        for p in (alice, bob):
            await expect(p.locator("#toot-list li span")).to_have_text(["from bob", "from alice"])
        # the same list, rendered for each: a delete button only on one's own post
        await expect(alice.locator("#toot-list li button")).to_have_count(1)
        await expect(alice.locator("#toot-list li").filter(has_text="from alice").locator("button")).to_have_count(1)
        await expect(bob.locator("#toot-list li").filter(has_text="from bob").locator("button")).to_have_count(1)
        await expect(bob.locator("#toot-list li button")).to_have_count(1)
        await alice.locator("#toot-list li button").click()
        for p in (alice, bob):
            await expect(p.locator("#toot-list li span")).to_have_text(["from bob"])
        await expect(alice.locator("#toot-list li button")).to_have_count(0)
    assert errors == []
    for context in contexts:
        await context.close()

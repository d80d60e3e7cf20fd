"""TodoMVC's collection behaviours in headless Chromium with the real Datastar client: "N items
left" as an aggregate, "toggle all" and "clear completed" as collection events, and an "Active"
view as a filtered live list, in two browsers at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.pages import datastar_script
from tests.support.servers import run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio


class Chore(Entity):
    model_config = {
        "scope": "record",
        "indexes": ["done"],
        "aggregates": {"left": {"done": False}, "completed": {"done": True}},
    }
    title: Annotated[str, ClientWritable] = ""
    done: bool = False

    @event
    def toggle(self) -> None:
        self.done = not self.done

    @event
    @classmethod
    async def toggle_all(cls, request: EventRequest) -> None:
        app = request.app
        all_done = await app.count(cls, where={"done": False}) == 0
        for chore in await app.list(cls, limit=1000, where={"done": all_done}):
            async with app.edit(cls, chore.id) as editing:
                editing.done = not all_done

    @event
    @classmethod
    async def clear_completed(cls, request: EventRequest) -> None:
        for chore in await request.app.list(cls, limit=1000, where={"done": True}):
            await request.app.delete(cls, chore.id)

    def render(self) -> str:
        mark = "x" if self.done else " "
        toggle = Chore.toggle(id=self.id)
        button = f'<button class="toggle" data-on:click="{toggle}">[{mark}] {self.title}</button>'
        return f'<li id="{self.dom_id}">{button}</li>'


def page(active_only: bool) -> str:
    listed = Chore.live_list(tag="ul", where={"done": False} if active_only else None)
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{datastar_script("/static/datastar.js")}</head>
<body>
  <input id="title" data-bind:chore.title>
  <button id="add" data-on:click="@post('/sm/chore')">add</button>
  <button id="all" data-on:click="{Chore.toggle_all()}">toggle all</button>
  {listed}
  <p><span id="left" data-text="$chore._count.left"></span> items left</p>
  <button id="clear" data-show="$chore._count.completed > 0"
    data-on:click="{Chore.clear_completed()}">clear completed</button>
</body></html>"""


def make_site(client_js: Path) -> Starlette:
    sm = StarModel([Chore], base_path="/sm", secret_key="chores")

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page(request.query_params.get("view") == "active"))

    async def script(request: Request) -> FileResponse:
        return FileResponse(client_js, media_type="text/javascript")

    return Starlette(routes=[Route("/", home), Route("/static/datastar.js", script), Mount("/sm", sm)])


async def test_items_left_toggle_all_clear_completed_and_the_active_view_in_two_browsers(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    with run_server(make_site(datastar_js)) as url:
        everything_context, active_context = await chromium.new_context(), await chromium.new_context()
        everything, active = await everything_context.new_page(), await active_context.new_page()
        errors: list[str] = []
        for p in (everything, active):
            p.on("pageerror", lambda exc: errors.append(str(exc)))
        await everything.goto(url + "/")
        await active.goto(url + "/?view=active")
        for p in (everything, active):
            await expect(p.locator("#left")).to_have_text("0")
            await expect(p.locator("#clear")).to_be_hidden()

        for title in ("milk", "eggs", "bread"):
            await everything.fill("#title", title)
            await everything.click("#add")
            await expect(everything.locator("#chore-list li").last).to_have_text(f"[ ] {title}")
        for p in (everything, active):
            await expect(p.locator("#left")).to_have_text("3")
            await expect(p.locator("#chore-list li")).to_have_count(3)

        await everything.locator("#chore-list li .toggle").first.click()  # milk done
        await expect(active.locator("#chore-list li")).to_have_text(["[ ] eggs", "[ ] bread"])  # left the view
        for p in (everything, active):
            await expect(p.locator("#left")).to_have_text("2")
            await expect(p.locator("#clear")).to_be_visible()

        await active.click("#all")  # one event: every chore done
        await expect(active.locator("#chore-list li")).to_have_count(0)
        await expect(everything.locator("#chore-list li")).to_have_text(["[x] milk", "[x] eggs", "[x] bread"])
        await expect(everything.locator("#left")).to_have_text("0")
        await everything.click("#all")  # all were done: none is, and they join the active view again
        await expect(active.locator("#chore-list li")).to_have_text(["[ ] milk", "[ ] eggs", "[ ] bread"])

        await active.locator("#chore-list li .toggle").last.click()  # bread done
        await expect(everything.locator("#left")).to_have_text("2")
        await everything.click("#clear")
        await expect(everything.locator("#chore-list li")).to_have_text(["[ ] milk", "[ ] eggs"])
        for p in (everything, active):
            await expect(p.locator("#clear")).to_be_hidden()
            await expect(p.locator("#left")).to_have_text("2")
        assert errors == []
        await everything_context.close()
        await active_context.close()

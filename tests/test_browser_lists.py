"""A live list and presence in headless Chromium with the real Datastar client: two browsers see each
other's messages appear, change and go, and the number of people online."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field
from starlette.applications import Starlette

from starmodel_asgi import ClientWritable, Entity, StarModel, event
from starmodel_asgi.pages import datastar_script
from tests.support.datastar import page_site
from tests.support.servers import run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio


class Shout(Entity):
    model_config = {"scope": "record", "presence": True}
    text: Annotated[str, ClientWritable, Field(min_length=1, max_length=40, title="Message")] = ""
    likes: int = 0

    @event
    def like(self) -> None:
        self.likes += 1

    def render(self) -> str:
        return (
            f'<li id="{self.dom_id}"><span class="text">{self.text}</span> '
            f'<button class="like" data-on:click="{Shout.like(id=self.id)}">{self.likes} likes</button> '
            f'<button class="remove" data-on:click="@delete(\'/sm/shout/{self.id}\')">remove</button></li>'
        )


def page() -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{datastar_script("/static/datastar.js")}</head>
<body>
  <p><span id="online" data-text="$shout._viewers"></span> online</p>
  <ul>{Shout.live_list(limit=3, tag="div")}</ul>
  <input id="text" data-bind:shout.text>
  <button id="send" data-on:click="@post('/sm/shout')">send</button>
  <p id="error" data-text="$shout._errors.text"></p>
</body></html>"""


def make_site(client_js: Path) -> Starlette:
    sm = StarModel([Shout], base_path="/sm", secret_key="lists", datastar_error_status=200)
    return page_site(client_js, sm, page)


async def test_two_browsers_share_a_live_list_and_see_who_is_online(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    with run_server(make_site(datastar_js)) as url:
        alice_context, bob_context = await chromium.new_context(), await chromium.new_context()
        alice, bob = await alice_context.new_page(), await bob_context.new_page()
        errors: list[str] = []
        for p in (alice, bob):
            p.on("pageerror", lambda exc: errors.append(str(exc)))
        await alice.goto(url + "/")
        await expect(alice.locator("#online")).to_have_text("1")
        await bob.goto(url + "/")
        for p in (alice, bob):
            await expect(p.locator("#online")).to_have_text("2")

        # an empty message is refused next to the input, and nothing is added
        await alice.click("#send")
        await expect(alice.locator("#error")).to_have_text("Message cannot be empty.")
        await alice.fill("#text", "hello bob")
        await alice.click("#send")
        await expect(alice.locator("#error")).to_have_text("")
        await bob.fill("#text", "hi alice")
        await bob.click("#send")
        for p in (alice, bob):
            await expect(p.locator("#shout-list li .text")).to_have_text(["hello bob", "hi alice"])

        # a change is morphed in place, in both pages
        await bob.locator("#shout-list li").first.locator(".like").click()
        for p in (alice, bob):
            await expect(p.locator("#shout-list li").first.locator(".like")).to_have_text("1 likes")

        # the list keeps the newest three; a removal brings the older one back
        for text in ("three", "four"):
            await alice.fill("#text", text)
            await alice.click("#send")
            # the create's answer writes the saved text back into $shout.text: wait for it before
            # typing the next one, or it may land after the typing and be sent again
            await expect(alice.locator("#shout-list li .text").last).to_have_text(text)
        for p in (alice, bob):
            await expect(p.locator("#shout-list li .text")).to_have_text(["hi alice", "three", "four"])
        await alice.locator("#shout-list li").last.locator(".remove").click()
        for p in (alice, bob):
            await expect(p.locator("#shout-list li .text")).to_have_text(["hello bob", "hi alice", "three"])

        await bob_context.close()  # bob leaves
        await expect(alice.locator("#online")).to_have_text("1")
        assert errors == []
        await alice_context.close()

"""Typed text is never lost: an answer that empties a draft keeps what the user typed after
sending it (headless Chromium, the real Datastar client, a 600 ms event)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import pytest
from starlette.applications import Starlette

from starmodel_asgi import ClientWritable, Entity, StarModel, datastar_script, event
from starmodel_asgi.testing import Page
from tests.support.datastar import page_site
from tests.support.servers import run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio


class Chat(Entity):
    """README's draft-emptying pattern, with a slow round trip."""

    model_config = {"name": "typing_chat"}
    sent: list[str] = []
    saved: str = ""
    draft: Annotated[str, ClientWritable] = ""

    @event(selector="#sent", mode="append")
    async def send(self, pause: float = 0.6) -> str:
        await anyio.sleep(pause)
        self.sent = [*self.sent, self.draft]
        self.draft = ""
        return f"<li>{html.escape(self.sent[-1])}</li>"

    @event
    def fill(self) -> None:
        """Sets the draft, or types on it: the new value starts with the one the page sent."""
        self.draft = f"{self.draft}!" if self.draft else "hello"

    @event
    async def save(self) -> None:
        """Keeps the draft (saved as the page sent it): a live page gets it back from its stream."""
        await anyio.sleep(0.6)
        self.saved = self.draft


def site(client: Path, sync: Literal["live"] | None = None, pause: float = 0.6) -> Starlette:
    sm = StarModel([Chat], base_path="/sm", secret_key="typing")
    return page_site(
        client,
        sm,
        lambda: (
            f"""<!doctype html><html><head>{datastar_script("/static/datastar.js")}</head>
<body>{Chat.holder(sync=sync)}
<input id="draft" data-bind:{Chat.signal.draft.path} data-on:keydown="evt.key === 'Enter' && {Chat.send(pause=pause)}">
<button id="save" data-on:click="{Chat.save()}">save</button>
<button id="fill" data-on:click="{Chat.fill()}">fill</button><b id="saved" data-text="{Chat.signal.saved}"></b>
<ul id="sent"></ul><span id="count" data-text="{Chat.signal.sent}.length"></span></body></html>"""
        ),
    )


async def slow_network(route: Any) -> None:
    await anyio.sleep(0.6)  # the request waits 600 ms before it leaves, as on a slow network
    await route.continue_()


@pytest.mark.parametrize("slow", ["event", "network"])
async def test_text_typed_while_an_answer_is_on_its_way_survives_it(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
    slow: str,
) -> None:
    from playwright.async_api import expect

    with run_server(site(datastar_js, pause=0.6 if slow == "event" else 0)) as url:
        page = await (await chromium.new_context()).new_page()
        if slow == "network":
            await page.route("**/sm/typing_chat/send*", slow_network)
        errors: list[str] = []
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.location["url"] else None,
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        draft, sent = page.locator("#draft"), page.locator("#sent li")

        await draft.press_sequentially("hello")
        await draft.press("Enter")
        await draft.press_sequentially(" next")  # typed while the 600 ms answer is on its way
        await expect(sent).to_have_text(["hello"])
        await expect(page.locator("#count")).to_have_text("1")
        await page.wait_for_timeout(100)
        await expect(draft).to_have_value(" next")  # the sent part emptied, the new text kept

        await draft.fill("second")  # nothing typed meanwhile: the draft is emptied
        await draft.press("Enter")
        await expect(sent).to_have_text(["hello", "second"])
        await expect(draft).to_have_value("")

        await draft.fill("third")
        await draft.press("Enter")
        await draft.fill("rewritten")  # changed, not typed on: the page keeps what the user has
        await expect(sent).to_have_text(["hello", "second", "third"])
        await page.wait_for_timeout(100)
        await expect(draft).to_have_value("rewritten")
        assert await page.locator("[data-starmodel-guard]").count() == 0  # each guard removes itself
        assert errors == []  # the Datastar client took the guards without a complaint


async def test_a_live_page_keeps_what_was_typed_while_its_own_save_comes_back(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    from playwright.async_api import expect

    with run_server(site(datastar_js, sync="live")) as url:
        context = await chromium.new_context()
        page, other = await context.new_page(), await context.new_page()  # two tabs of one session
        await page.goto(url)
        with anyio.fail_after(5):  # the live stream gave the session
            while not await context.cookies():
                await anyio.sleep(0.05)
        await other.goto(url)
        draft = page.locator("#draft")
        await draft.press_sequentially("hello")
        await page.locator("#save").click()
        await draft.press("End")  # back in the input, after its text
        await draft.press_sequentially(" more")  # typed while the save is on its way
        await expect(page.locator("#saved")).to_have_text("hello")
        await expect(other.locator("#saved")).to_have_text("hello")
        await page.wait_for_timeout(200)
        await expect(draft).to_have_value("hello more")  # its stream's "hello" did not wipe it
        await expect(other.locator("#draft")).to_have_value("hello")  # the idle tab follows the saved draft

        await other.locator("#draft").fill("mine")  # typed in the other tab: a change from here leaves it
        await draft.fill("third")
        await page.locator("#save").click()
        await expect(other.locator("#saved")).to_have_text("third")
        await other.wait_for_timeout(200)
        await expect(other.locator("#draft")).to_have_value("mine")


async def test_a_value_the_live_stream_brought_first_is_not_added_twice(
    datastar_js: Path,  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    """The event's own live message usually reaches the page before its answer: the answer's
    compare-and-set then finds the new value there already, not text typed after the sent one."""
    from playwright.async_api import expect

    with run_server(site(datastar_js, sync="live")) as url:
        context = await chromium.new_context()
        page = await context.new_page()
        await page.goto(url)
        with anyio.fail_after(5):  # the live stream gave the session
            while not await context.cookies():
                await anyio.sleep(0.05)
        draft = page.locator("#draft")
        for expected in ("hello", "hello!", "hello!!", "hello!!!"):
            await page.locator("#fill").click()
            await expect(draft).to_have_value(expected)
            await page.wait_for_timeout(150)  # the answer after the stream, or the stream after it
            await expect(draft).to_have_value(expected)
        await draft.press("End")
        await draft.press_sequentially(" typed")
        await page.locator("#fill").click()
        await expect(draft).to_have_value("hello!!! typed!")
        await page.wait_for_timeout(150)
        await expect(draft).to_have_value("hello!!! typed!")


async def test_a_page_in_python_sees_the_draft_emptied() -> None:
    async with Page(StarModel([Chat], secret_key="typing")) as page:
        answer = await page.run(Chat.send(), typing_chat={"draft": "hello", "sent": []})
        assert answer.signals == {"typing_chat": {"sent": ["hello"], "draft": ""}}
        assert page.signals["typing_chat"]["draft"] == ""
        assert answer.elements == [("#sent", "append", "<li>hello</li>")]
        assert "data-starmodel-guard" in answer.text  # sent as a guard, not a plain patch

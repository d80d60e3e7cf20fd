"""The gallery (examples/gallery.py) in headless Chromium with the real Datastar client and a real
uvicorn: every page clicked through as a user would, two browsers where the page is shared, and a
screenshot of each page in ``tests/.screenshots/`` (git-ignored)."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from tests.support.gallery import load_gallery
from tests.support.servers import run_server
from tests.test_browser import chromium, datastar_js  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio

SHOTS = Path(__file__).resolve().parent / ".screenshots"
VIEWPORT = {"width": 1000, "height": 800}
SLOW = 15_000  # ms: the long task runs 20 steps of 0.25 s


@pytest.fixture
def gallery(tmp_path: Path, datastar_js: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # noqa: F811
    """The gallery served by uvicorn (its own lifespan runs: the dashboard's ticker) on a fresh SQLite
    file, with the Datastar client served from /static/datastar.js; yields the base URL."""
    monkeypatch.setenv("STARMODEL_DATASTAR_URL", "/static/datastar.js")  # read as each page renders
    app = load_gallery().build(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gallery.db'}", secret_key="gallery-browser", tick=0.3
    )

    async def script(request: Request) -> FileResponse:
        return FileResponse(datastar_js, media_type="text/javascript")

    # added to the gallery itself, not mounted around it: a mounted app's lifespan would not run
    app.router.routes.insert(0, Route("/static/datastar.js", script))
    with run_server(app) as url:
        yield url


class Browsers:
    """Contexts (separate browsers: own cookies, own session) whose page errors are collected."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.errors: list[str] = []
        self.contexts: list[Any] = []

    async def open(self, url: str) -> tuple[Any, Any]:
        context = await self.browser.new_context(viewport=VIEWPORT)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        await page.goto(url)
        return context, page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def browsers(chromium: Any) -> Any:  # noqa: F811
    opened = Browsers(chromium)
    try:
        yield opened
    finally:
        await opened.close()


async def screenshot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    # transitions (the poll's bars) are finished first: the picture shows where things settle
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def png(width: int = 2, height: int = 2) -> bytes:
    """A small valid PNG (white pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\xff\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# -- index ------------------------------------------------------------------------------------

EXAMPLES = [
    ("/counter", "Counter"),
    ("/chat", "Chat"),
    ("/todo", "Todo list"),
    ("/task", "Long task"),
    ("/form", "Form"),
    ("/dashboard", "Dashboard"),
    ("/poll", "Poll + API"),
]


async def test_index_links_to_every_example(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, page = await browsers.open(gallery + "/")
    await expect(page.locator("h1")).to_have_text("Live pages in Python")
    links = page.locator(".grid a")
    await expect(links).to_have_count(len(EXAMPLES))
    await expect(links.locator("b")).to_have_text([name for _, name in EXAMPLES])
    assert [await links.nth(i).get_attribute("href") for i in range(len(EXAMPLES))] == [h for h, _ in EXAMPLES]
    await screenshot(page, "index")

    for href, name in EXAMPLES:  # each card leads to its page, whose heading is the card's name
        await page.locator(".grid a", has=page.locator("b", has_text=re.compile(f"^{re.escape(name)}$"))).click()
        await page.wait_for_url(gallery + href)
        await expect(page.locator("h1")).to_have_text(name)
        await page.locator("header a").click()  # the header leads back home
        await page.wait_for_url(gallery + "/")
        await expect(page.locator("h1")).to_have_text("Live pages in Python")
    assert browsers.errors == []


# -- counter ----------------------------------------------------------------------------------


async def test_counter_counts_per_session_and_survives_a_reload(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, alice = await browsers.open(gallery + "/counter")
    count = alice.locator("#count")
    await expect(count).to_have_text("0")
    await alice.click("#inc")
    await expect(count).to_have_text("1")
    await alice.click("#inc")
    await expect(count).to_have_text("2")
    await alice.click("#inc10")
    await expect(count).to_have_text("12")

    await alice.reload()  # kept on the server for this browser's session
    await expect(count).to_have_text("12")

    # a second tab of the same browser shows the same count, and follows the first live
    second = await alice.context.new_page()
    await second.goto(gallery + "/counter")
    await expect(second.locator("#count")).to_have_text("12")
    await alice.click("#inc")
    await expect(second.locator("#count")).to_have_text("13")
    await second.click("#dec")
    await expect(count).to_have_text("12")
    await second.close()

    # another browser has its own count, and counting there does not touch the first one's
    _, bob = await browsers.open(gallery + "/counter")
    await expect(bob.locator("#count")).to_have_text("0")
    await bob.click("#inc")
    await expect(bob.locator("#count")).to_have_text("1")
    await alice.reload()
    await expect(count).to_have_text("12")

    await alice.click("#dec")
    await expect(count).to_have_text("11")
    await screenshot(alice, "counter")
    await alice.click("#reset")
    await expect(count).to_have_text("0")
    await alice.reload()
    await expect(count).to_have_text("0")
    await expect(bob.locator("#count")).to_have_text("1")
    assert browsers.errors == []


# -- chat -------------------------------------------------------------------------------------


async def test_chat_between_two_browsers(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, alice = await browsers.open(gallery + "/chat")
    await expect(alice.locator("#online")).to_have_text("1 online")
    bob_context, bob = await browsers.open(gallery + "/chat")
    for p in (alice, bob):
        await expect(p.locator("#online")).to_have_text("2 online")
        await expect(p.locator("#name")).to_have_value(re.compile(r"^Guest \d{3}$"))
    await alice.fill("#name", "alice")
    await bob.fill("#name", "bob")

    # a message is refused next to the input when empty or too long, and nothing is posted
    await alice.click("#send")
    await expect(alice.locator("#draft-error")).to_have_text("Message cannot be empty.")
    await alice.fill("#draft", "x" * 300)
    await alice.click("#send")
    await expect(alice.locator("#draft-error")).to_have_text("Message must be at most 280 characters long.")
    for p in (alice, bob):
        await expect(p.locator("#message-list .message")).to_have_count(0)

    # alice sends with the button: both see it; her draft is emptied and the message cleared
    await alice.fill("#draft", "hello bob")
    await alice.click("#send")
    for p in (alice, bob):
        await expect(p.locator("#message-list .message .text")).to_have_text(["hello bob"])
    await expect(alice.locator("#draft")).to_have_value("")
    await expect(alice.locator("#draft-error")).to_have_text("")

    # bob sends with Enter
    await bob.fill("#draft", "hi alice")
    await bob.press("#draft", "Enter")
    for p in (alice, bob):
        await expect(p.locator("#message-list .message .text")).to_have_text(["hello bob", "hi alice"])
        await expect(p.locator("#message-list .message b")).to_have_text(["alice", "bob"])
    await expect(bob.locator("#draft")).to_have_value("")
    await screenshot(alice, "chat")

    await bob_context.close()  # bob leaves
    await expect(alice.locator("#online")).to_have_text("1 online")
    assert browsers.errors == []


async def test_chat_rooms_follow_only_their_messages_and_senders_delete_their_own(
    gallery: str, browsers: Browsers
) -> None:
    from playwright.async_api import expect

    _, alice = await browsers.open(gallery + "/chat/python")
    _, bob = await browsers.open(gallery + "/chat/random")
    texts = lambda p: p.locator("#message-list .message .text")  # noqa: E731
    await expect(alice.locator("#rooms [aria-current=page]")).to_have_text("#python")
    await alice.fill("#draft", "pep 8 please")
    await alice.press("#draft", "Enter")
    await bob.fill("#draft", "anyone for tea")
    await bob.click("#send")
    await expect(texts(alice)).to_have_text(["pep 8 please"])
    await expect(texts(bob)).to_have_text(["anyone for tea"])
    await bob.wait_for_timeout(300)  # a negative: python's message never reaches random's page
    await expect(texts(bob)).to_have_text(["anyone for tea"])

    # bob walks into #python: alice's message, without a delete button (not his); alice has hers
    await bob.get_by_role("link", name="#python").click()
    await bob.wait_for_url(gallery + "/chat/python")
    await expect(texts(bob)).to_have_text(["pep 8 please"])
    await expect(bob.locator("#message-list .message .delete")).to_have_count(0)
    await expect(alice.locator("#message-list .message .delete")).to_have_count(1)
    await bob.fill("#draft", "agreed")
    await bob.press("#draft", "Enter")
    for p in (alice, bob):
        await expect(texts(p)).to_have_text(["pep 8 please", "agreed"])
    await expect(bob.locator("#message-list .message", has_text="agreed").locator(".delete")).to_have_count(1)
    await expect(alice.locator("#message-list .message", has_text="agreed").locator(".delete")).to_have_count(0)
    await screenshot(alice, "chat-rooms")

    # alice deletes her own: gone from both pages
    await alice.locator("#message-list .message", has_text="pep 8 please").locator(".delete").click()
    for p in (alice, bob):
        await expect(texts(p)).to_have_text(["agreed"])
    assert browsers.errors == []


# -- todo -------------------------------------------------------------------------------------


async def expect_todos(page: Any, titles: list[str]) -> None:
    """The list shows exactly these titles, in this order (each title is an input's value)."""
    from playwright.async_api import expect

    inputs = page.locator("#todo-list li.todo .title")
    await expect(inputs).to_have_count(len(titles))
    for i, title in enumerate(titles):
        await expect(inputs.nth(i)).to_have_value(title)


async def test_todo_list_shared_by_two_browsers(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, alice = await browsers.open(gallery + "/todo")
    _, bob = await browsers.open(gallery + "/todo")
    for p in (alice, bob):
        await expect_todos(p, [])
        await expect(p.locator("#left")).to_have_text("0 items left")
        await expect(p.locator("#clear")).to_be_hidden()  # nothing completed

    # one added with the button, one with Enter; the box empties after each
    await alice.fill("#new", "buy milk")
    await alice.click("#add")
    await expect_todos(alice, ["buy milk"])
    await expect(alice.locator("#new")).to_have_value("")
    await alice.fill("#new", "walk dog")
    await alice.press("#new", "Enter")
    await expect(alice.locator("#new")).to_have_value("")
    for p in (alice, bob):
        await expect_todos(p, ["buy milk", "walk dog"])
        await expect(p.locator("#left")).to_have_text("2 items left")

    # bob ticks the first: it is done in both, and one item is left
    await bob.locator("#todo-list li.todo").first.locator(".toggle").click()
    for p in (alice, bob):
        first = p.locator("#todo-list li.todo").first
        await expect(first).to_have_class(re.compile(r"\bdone\b"))
        await expect(first.locator(".toggle")).to_be_checked()
        await expect(p.locator("#todo-list li.todo").nth(1)).not_to_have_class(re.compile(r"\bdone\b"))
        await expect(p.locator("#left")).to_have_text("1 item left")
        await expect(p.locator("#clear")).to_be_visible()

    # alice renames the second (a change event: Enter in the input)
    second = alice.locator("#todo-list li.todo").nth(1).locator(".title")
    await second.fill("walk the dog")
    await second.press("Enter")
    for p in (alice, bob):
        await expect_todos(p, ["buy milk", "walk the dog"])
    await second.fill("")  # renamed to nothing: refused under the list, the other browser unchanged
    await second.press("Enter")
    await expect(alice.locator("#todo-error")).to_have_text("Title cannot be empty.")
    await expect_todos(bob, ["buy milk", "walk the dog"])
    await second.fill("walk the dog")
    await second.press("Enter")
    await expect(alice.locator("#todo-error")).to_have_text("")

    # an empty title is refused under the list
    await alice.click("#add")
    await expect(alice.locator("#todo-error")).to_have_text("Title cannot be empty.")
    await expect_todos(alice, ["buy milk", "walk the dog"])

    await alice.fill("#new", "call mum")  # a good add clears the message
    await alice.click("#add")
    await expect(alice.locator("#todo-error")).to_have_text("")
    for p in (alice, bob):
        await expect_todos(p, ["buy milk", "walk the dog", "call mum"])

    # bob looks at the Active view, alice at the Completed one: each follows only its own
    await bob.get_by_role("link", name="Active").click()
    await bob.wait_for_url(gallery + "/todo?show=active")
    await expect_todos(bob, ["walk the dog", "call mum"])
    await alice.get_by_role("link", name="Completed").click()
    await alice.wait_for_url(gallery + "/todo?show=completed")
    await expect_todos(alice, ["buy milk"])
    await screenshot(alice, "todo")

    # toggle all: some are active, so all become done; the Active view empties, Completed fills
    await bob.click("#toggle-all")
    await expect_todos(bob, [])
    await expect_todos(alice, ["buy milk", "walk the dog", "call mum"])
    for p in (alice, bob):
        await expect(p.locator("#left")).to_have_text("0 items left")
    await alice.click("#toggle-all")  # all done: all become active again
    await expect_todos(alice, [])
    await expect_todos(bob, ["buy milk", "walk the dog", "call mum"])
    for p in (alice, bob):
        await expect(p.locator("#left")).to_have_text("3 items left")
        await expect(p.locator("#clear")).to_be_hidden()

    # a delete, from the Active view: gone (a tick moves one to alice's Completed view)
    await bob.locator("#todo-list li.todo").nth(2).locator(".delete").click()
    await expect_todos(bob, ["buy milk", "walk the dog"])
    await bob.locator("#todo-list li.todo").first.locator(".toggle").click()
    await expect_todos(bob, ["walk the dog"])
    await expect_todos(alice, ["buy milk"])
    await expect(alice.locator("#left")).to_have_text("1 item left")

    # "Clear completed" removes the ticked one, in both views
    await alice.click("#clear")
    await expect_todos(alice, [])
    await expect(alice.locator("#clear")).to_be_hidden()
    await expect_todos(bob, ["walk the dog"])
    await bob.get_by_role("link", name="All", exact=True).click()
    await expect_todos(bob, ["walk the dog"])
    await expect(bob.locator("#left")).to_have_text("1 item left")
    assert browsers.errors == []


# -- long task --------------------------------------------------------------------------------

RUNNING_MIDWAY = """() => document.querySelector('#state').textContent === 'running'
    && /^[1-9][0-9]?%$/.test(document.querySelector('#percent').textContent)"""


async def test_long_task_runs_in_the_background_and_can_be_cancelled(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, page = await browsers.open(gallery + "/task")
    state, percent, pings = page.locator("#state"), page.locator("#percent"), page.locator("#pings")
    await expect(state).to_have_text("idle")
    await expect(percent).to_have_text("0%")

    await page.click("#start")
    await expect(state).to_have_text("running")
    await page.wait_for_function(RUNNING_MIDWAY, timeout=SLOW)  # progress between 5% and 95%, still running

    # other events are answered while the job runs
    await page.click("#ping")
    await expect(pings).to_have_text("1")
    await page.click("#ping")
    await expect(pings).to_have_text("2")
    await expect(state).to_have_text("running")
    await expect(page.locator("#progress")).not_to_have_attribute("value", "0")
    await screenshot(page, "task")

    await page.click("#cancel")
    await expect(state).to_have_text("cancelled")
    stopped_at = await percent.text_content()
    assert stopped_at is not None and re.fullmatch(r"[0-9]{1,2}%", stopped_at), stopped_at
    # a negative: nothing should move for a while (three steps of the job) after the cancel
    await page.wait_for_timeout(750)
    await expect(percent).to_have_text(stopped_at)
    await expect(state).to_have_text("cancelled")
    await expect(pings).to_have_text("2")

    await page.click("#start")
    await expect(state).to_have_text("running")
    await expect(percent).to_have_text("100%", timeout=SLOW)
    await expect(state).to_have_text("done")
    await expect(page.locator("#progress")).to_have_attribute("value", "100")
    await expect(pings).to_have_text("2")
    assert browsers.errors == []


# -- form -------------------------------------------------------------------------------------


async def test_form_validates_uploads_saves_and_redirects(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, page = await browsers.open(gallery + "/form")
    await expect(page.locator("h1")).to_have_text("Form")
    await page.click("#new-profile")
    await page.wait_for_url(re.compile(r"/form/[^/]+/edit$"))
    await expect(page.locator("h1")).to_have_text("Edit profile")
    edit_url = page.url

    # bad values: a sentence next to each field, nothing saved, the page stays
    await page.fill("#name", "A")
    await page.fill("#email", "nope")
    await page.fill("#age", "7")
    await page.click("#save")
    await expect(page.locator("#name-error")).to_have_text("Name must be at least 2 characters long.")
    await expect(page.locator("#email-error")).to_have_text("Enter an email address like ada@example.com.")
    await expect(page.locator("#age-error")).to_have_text("Enter an age between 13 and 120.")
    assert page.url == edit_url
    await screenshot(page, "form")

    # an upload that is not an image is refused next to the file input
    await page.set_input_files("#avatar-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
    await page.click("#send")
    await expect(page.locator("#avatar-error")).to_have_text("Choose an image file (PNG, JPEG, GIF or WebP).")
    await expect(page.locator("#avatar")).to_have_text("nothing yet")

    # an image: its name and size come back into the page
    image = png()
    await page.set_input_files("#avatar-file", files=[{"name": "dot.png", "mimeType": "image/png", "buffer": image}])
    await page.click("#send")
    await expect(page.locator("#avatar")).to_have_text(f"dot.png ({len(image):,} bytes)")
    await expect(page.locator("#avatar-error")).to_have_text("")

    # good values: saved, and the record's own page
    await page.fill("#name", "Ada Lovelace")
    await page.fill("#email", "ada@example.com")
    await page.fill("#age", "36")
    await page.click("#save")
    await page.wait_for_url(edit_url.removesuffix("/edit"))
    await expect(page.locator("h1")).to_have_text("Ada Lovelace")
    await expect(page.locator("#email")).to_have_text("ada@example.com")
    await expect(page.locator("#age")).to_have_text("36")
    await expect(page.locator("#profile")).to_contain_text("Avatar: dot.png")

    # and the edit page shows what was saved
    await page.get_by_role("link", name="Edit again").click()
    await page.wait_for_url(edit_url)
    await expect(page.locator("#name")).to_have_value("Ada Lovelace")
    await expect(page.locator("#email")).to_have_value("ada@example.com")
    await expect(page.locator("#age")).to_have_value("36")
    await expect(page.locator("#avatar")).to_have_text("dot.png")
    assert browsers.errors == []


# -- dashboard --------------------------------------------------------------------------------

SPARK_POINTS = "() => (document.querySelector('#spark polyline')?.getAttribute('points') || '').trim().split(/\\s+/)"


async def test_dashboard_follows_the_apps_own_task(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, page = await browsers.open(gallery + "/dashboard")
    clock, uptime = page.locator("#clock"), page.locator("#uptime_text")
    await expect(clock).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    first = await clock.text_content()
    await expect(clock).not_to_have_text(first or "")  # it moves by itself
    await expect(uptime).to_have_text(re.compile(r"^\d+:\d\d:\d\d$"))
    started = await uptime.text_content()
    await expect(uptime).not_to_have_text(started or "")
    await expect(page.locator("#memory_mb")).to_have_text(re.compile(r"^[1-9]\d*(\.\d+)?$"))
    await expect(page.locator("#cpu")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))

    # the sparkline is re-rendered with each tick: a point more each time
    spark = page.locator("#spark polyline")
    await expect(spark).to_have_attribute("points", re.compile(r"\d"))
    seen = len(await page.evaluate(SPARK_POINTS))
    await page.wait_for_function(f"() => ({SPARK_POINTS})().length >= {seen + 3}")
    await screenshot(page, "dashboard")
    assert browsers.errors == []


# -- poll + API -------------------------------------------------------------------------------


async def test_poll_votes_from_the_page_and_the_json_api(gallery: str, browsers: Browsers) -> None:
    from playwright.async_api import expect

    _, page = await browsers.open(gallery + "/poll")
    rust, total = page.locator('.n[data-choice="Rust"]'), page.locator("#total")
    await expect(total).to_have_text("0 votes")
    await page.locator("button.vote", has_text="Rust").click()
    await expect(rust).to_have_text("1")
    await expect(total).to_have_text("1 vote")  # one vote, not "1 votes"

    async with httpx.AsyncClient(base_url=gallery) as api:
        r = await api.post("/sm/poll/vote", json={"choice": "Rust"}, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json() == {"votes": {"Rust": 2}, "total": 2}
        await expect(rust).to_have_text("2")  # without a reload
        await expect(total).to_have_text("2 votes")

        r = await api.post("/sm/poll/vote", json={"choice": "Cobol"}, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == {"choice": "Choice must be one of 'Python', 'Rust', 'Go' or 'TypeScript'."}
        await expect(total).to_have_text("2 votes")  # nothing counted

    await page.locator("button.vote", has_text="Go").click()
    await expect(page.locator('.n[data-choice="Go"]')).to_have_text("1")
    await expect(total).to_have_text("3 votes")
    await expect(rust).to_have_text("2")
    await expect(page.locator('.n[data-choice="Python"]')).to_have_text("0")
    bars = page.locator("#poll .bar span")  # Python, Rust, Go, TypeScript: each choice's share
    for i, width in enumerate(["0%", "67%", "33%", "0%"]):
        await expect(bars.nth(i)).to_have_attribute("style", f"width:{width}")
    await screenshot(page, "poll")
    assert browsers.errors == []

"""The gallery's pages driven in-process with ``starmodel_asgi.testing.Page``, as a user tests their own."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from starmodel_asgi.testing import Page
from tests.support.gallery import load_gallery

pytestmark = pytest.mark.anyio

gallery = load_gallery()
PATHS = ["/", "/counter", "/chat", "/todo", "/task", "/form", "/dashboard", "/poll"]


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    app = gallery.build(database_url=f"sqlite+aiosqlite:///{tmp_path}/gallery.db", tick=0.1)
    async with Page(app) as page:  # runs the gallery's lifespan: the dashboard's task
        yield page


async def test_every_page_opens_with_its_state(page: Page) -> None:
    for path in PATHS:
        answer = await page.open(path)
        assert answer.status == 200, path
        shown = re.sub(r"<(style|script|pre)\b.*?</\1>|<[^>]+>", " ", answer.text, flags=re.S)
        assert '{"' not in shown and "$" not in shown, f"{path} shows raw JSON or signal names: {shown}"
    index = await page.open("/")
    assert all(f'href="{path}"' in index.text for path in PATHS[1:])


async def test_the_counter_is_kept_for_the_session(page: Page) -> None:
    await page.open("/counter")
    for amount in (1, 1, 10):
        await page.run(gallery.Counter.increment(amount=amount))
    assert page.signals["counter"]["count"] == 12
    assert '<p class="big" id="count" data-text="$counter.count">12</p>' in (await page.open("/counter")).text
    await page.run(gallery.Counter.reset())
    assert page.signals["counter"]["count"] == 0
    stranger = Page(page.app)
    assert (await stranger.open("/counter")).status == 200 and stranger.signals["counter"]["count"] == 0


async def test_chat_refuses_empty_and_long_messages_and_posts_the_rest_to_every_page(page: Page) -> None:
    await page.open("/chat")
    name = page.signals["chat"]["name"]
    assert name.startswith("Guest ")
    for draft, message in [
        ("", "Message cannot be empty."),
        ("   ", "Message cannot be empty."),
        ("x" * 281, "Message must be at most 280 characters long."),
    ]:
        answer = await page.run(gallery.ChatBox.send(), chat={"draft": draft})
        assert answer.signals["chat"]["_errors"]["draft"] == message  # shown next to the input
    reader = Page(page.app)
    await reader.open("/chat")
    async with reader.live("/sm/message/live?room=lobby") as stream:
        assert (await stream.next()).elements == [("#message-list", "inner", "")]
        answer = await page.run(gallery.ChatBox.send(), chat={"draft": "  hello <b>all</b> "})
        assert answer.signals == {"chat": {"draft": "", "_error": "", "_errors": {"draft": "", "name": "", "room": ""}}}
        arrived = await stream.until(lambda a: bool(a.elements))
        (selector, mode, html) = arrived.elements[0]
        assert (selector, mode) == ("#message-list", "append")
        assert f"<b>{name}</b>" in html and "hello &lt;b&gt;all&lt;/b&gt;" in html
        assert "delete" not in html  # the reader did not send it


async def test_each_room_follows_only_its_messages_and_senders_delete_their_own(page: Page) -> None:
    ChatBox = gallery.ChatBox
    assert (await page.open("/chat/python")).status == 200
    assert "@get('/sm/message/live?room=python&amp;limit=50'" in (await page.open("/chat/python")).text
    assert (await page.open("/chat/cobol")).status == 404
    refused = await page.run(ChatBox.send(room="cobol"), chat={"draft": "hi"})
    assert "room" in refused.signals["chat"]["_errors"]
    other = Page(page.app)
    await other.open("/chat/random")
    async with (
        page.live("/sm/message/live?room=python") as python,
        other.live("/sm/message/live?room=random") as random,
    ):
        await python.next(), await random.next()
        await other.run(ChatBox.send(room="random"), chat={"draft": "in random"})
        arrived = await random.until(lambda a: bool(a.elements))
        assert "in random" in arrived.elements[0][2] and "delete" in arrived.elements[0][2]  # the sender's own
        await page.run(ChatBox.send(room="python"), chat={"draft": "in python"})
        arrived = await python.until(lambda a: bool(a.elements))
        assert "in python" in arrived.elements[0][2]
        assert not any("in random" in html for _, _, html in arrived.elements)  # python never saw random's
    messages = {m["text"]: m for m in (await page.request("GET", "/sm/message")).json()}
    assert {(t, m["room"]) for t, m in messages.items()} == {("in random", "random"), ("in python", "python")}
    assert "owner" not in messages["in python"]  # the sender's session is never sent
    mine, theirs = messages["in python"]["id"], messages["in random"]["id"]
    assert (await page.request("DELETE", f"/sm/message/{theirs}")).status == 403  # not the sender
    assert (await page.request("DELETE", f"/sm/message/{mine}")).status == 204
    assert [m["text"] for m in (await page.request("GET", "/sm/message")).json()] == ["in random"]


async def test_todos_are_added_ticked_renamed_filtered_and_cleared(page: Page) -> None:
    Todo = gallery.Todo
    add = Todo.create_action().options(contentType="form")
    await page.open("/todo")
    for title in ("", " "):
        refused = await page.submit(add, {"title": title})
        assert refused.signals["todo"]["_errors"]["title"] == "Title cannot be empty."
    assert (await page.request("POST", "/sm/todo", b"{}")).status == 422  # no title at all
    for title in ("buy milk", "walk the dog", "call mum"):
        assert (await page.submit(add, {"title": title})).signals["todo"]["title"] == title
    ids = {t["title"]: t["id"] for t in (await page.request("GET", "/sm/todo")).json()}
    first, second = ids["buy milk"], ids["walk the dog"]
    await page.run(Todo.toggle(id=first))
    renamed = await page.run(f"@post('/sm/todo/{second}/rename?title=walk%20the%20cat')")
    assert renamed.signals["todo"]["title"] == "walk the cat"
    emptied = await page.run(Todo.rename(id=second, title=""))
    assert emptied.signals["todo"]["_errors"]["title"] == "Title cannot be empty."  # shown under the list
    assert "@get('/sm/todo/live?done=false&amp;limit=100'" in (await page.open("/todo?show=active")).text
    async with page.live("/sm/todo/live?done=true") as completed:
        first_view = await completed.next()
        assert [e[0] for e in first_view.elements] == ["#todo-list"] and "buy milk" in first_view.elements[0][2]
        assert page.signals["todo"]["_count"] == {"left": 2, "completed": 1}  # "2 items left"
        await page.run(Todo.toggle_all())  # some are active: all become done
        await completed.until(lambda a: page.signals["todo"]["_count"] == {"left": 0, "completed": 3})
        await page.run(Todo.toggle_all())  # all done: all become active again
        await completed.until(lambda a: page.signals["todo"]["_count"] == {"left": 3, "completed": 0})
    assert (await page.request("GET", "/sm/todo/count?done=false")).json() == {"count": 3}
    await page.run(Todo.toggle(id=first))
    await page.run(Todo.clear_completed())
    left = (await page.request("GET", "/sm/todo")).json()
    assert [(t["title"], t["done"]) for t in left] == [("walk the cat", False), ("call mum", False)]
    assert (await page.run(Todo.delete_action(second))).status == 204
    assert [t["title"] for t in (await page.request("GET", "/sm/todo")).json()] == ["call mum"]


async def test_ticking_a_todo_keeps_a_rename_made_in_another_tab(page: Page) -> None:
    """After an add, the page's ``$todo`` holds that todo's title; a tick must not write it back."""
    Todo = gallery.Todo
    other = Page(page.app)
    await page.open("/todo")
    await other.open("/todo")
    added = await page.submit(Todo.create_action().options(contentType="form"), {"title": "first"})
    todo = added.signals["todo"]["id"]
    await other.run(Todo.rename(id=todo, title="renamed"))
    (tick,) = re.findall(r'class="toggle"[^>]*data-on:change="([^"]+)"', Todo(id=todo, title="x").render())
    await page.run(html.unescape(tick), todo=page.signals["todo"])  # the action the page's checkbox runs
    assert (await page.request("GET", f"/sm/todo/{todo}")).json() | {"id": ""} == {
        "id": "",
        "title": "renamed",
        "done": True,
    }


async def test_the_long_task_lets_other_events_through_and_can_be_cancelled(page: Page) -> None:
    Job = gallery.Job
    await page.open("/task")
    async with anyio.create_task_group() as tg:
        tg.start_soon(page.run, Job.start(step=0.05))
        state = await poll_until(page, "/sm/job", lambda s: s["progress"] > 0)
        assert state["state"] == "running"
        pinged = await page.run(Job.ping())  # goes through while the job runs
        assert pinged.signals["job"]["pings"] == 1
        await page.run(Job.cancel())
    state = (await page.request("GET", "/sm/job")).json()
    assert state["state"] == "cancelled" and 0 < state["progress"] < 100
    await page.run(Job.start(step=0.01))
    assert (await page.request("GET", "/sm/job")).json() == {"progress": 100, "state": "done", "pings": 1}


async def test_a_long_task_whose_page_goes_away_says_stopped(page: Page) -> None:
    await page.open("/task")
    async with anyio.create_task_group() as tg:
        tg.start_soon(page.run, gallery.Job.start(step=0.05))
        await poll_until(page, "/sm/job", lambda s: s["progress"] > 0)
        tg.cancel_scope.cancel()  # the caller leaves: the event is cancelled with it
    state = (await page.request("GET", "/sm/job")).json()
    assert state["state"] == "stopped" and state["progress"] < 100  # not stuck at "running"


async def test_the_form_validates_uploads_and_redirects(page: Page) -> None:
    Profile = gallery.Profile
    created = await page.request("POST", "/form", b"", "application/x-www-form-urlencoded", accept="text/html")
    assert created.status == 303 and created.redirect is not None
    await page.open(created.redirect)
    pid = page.signals["profile"]["id"]
    save = Profile.save(id=pid).options(contentType="form")
    bad = await page.submit(save, {"name": "A", "email": "nope", "age": "7"})
    assert bad.signals["profile"]["_errors"] | {"avatar": "", "avatar_size": ""} == {
        "name": "Name must be at least 2 characters long.",
        "email": "Enter an email address like ada@example.com.",
        "age": "Enter an age between 13 and 120.",
        "avatar": "",
        "avatar_size": "",
    }
    upload = Profile.upload(id=pid).options(contentType="form")
    text = await page.submit(upload, {}, files={"avatar": ("notes.txt", b"hello", "text/plain")})
    assert text.signals["profile"]["_errors"]["avatar"] == "Choose an image file (PNG, JPEG, GIF or WebP)."
    image = await page.submit(upload, {}, files={"avatar": ("me.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")})
    assert image.elements == [("#avatar", "inner", "me.png (108 bytes)")]
    good = await page.submit(save, {"name": "Ada", "email": "ada@example.com", "age": "36"})
    assert good.redirect == f"/form/{pid}"
    shown = await page.open(good.redirect)
    assert "ada@example.com" in shown.text and "me.png" in shown.text
    for missing in ("/form/nope", "/form/nope/edit"):
        assert (await page.open(missing)).status == 404


async def test_the_dashboard_changes_by_itself(page: Page) -> None:
    await page.open("/dashboard")
    async with page.live("@get('/sm/stats/live')") as stream:
        await stream.until(lambda a: "#spark" in {e[0] for e in a.elements}, timeout=5)
        uptime = page.signals["stats"]["uptime"]
        await stream.until(lambda a: a.signals.get("stats", {}).get("uptime", uptime) > uptime, timeout=5)
    assert "history" not in page.signals["stats"]  # drawn on the server, never sent


async def test_the_poll_is_a_json_api_and_a_live_page(page: Page) -> None:
    await page.open("/poll")
    async with page.live("@get('/sm/poll/live')") as stream:
        await stream.next()
        voted = await page.request("POST", "/sm/poll/vote", json.dumps({"choice": "Rust"}).encode())
        assert (voted.status, voted.json()) == (200, {"votes": {"Rust": 1}, "total": 1})
        arrived = await stream.until(lambda a: bool(a.elements))
        assert '<span class="n" data-choice="Rust">1</span>' in arrived.elements[0][2]
    assert ">1 vote</span>" in (await page.open("/poll")).text  # one vote, not "1 votes"
    refused = await page.request("POST", "/sm/poll/vote", b'{"choice": "Cobol"}')
    assert refused.status == 422 and "choice" in refused.json()["errors"]
    await page.run(gallery.Poll.vote(choice="Go"))
    assert page.signals["poll"]["total"] == 2


async def poll_until(page: Page, path: str, done: Any, timeout: float = 5.0) -> Any:
    with anyio.fail_after(timeout):
        while not done(state := (await page.request("GET", path)).json()):
            await anyio.sleep(0.01)
    return state


async def test_records_change_only_through_the_pages_events(page: Page) -> None:
    sender = Page(page.app)
    await sender.open("/chat")
    await sender.run(gallery.ChatBox.send(), chat={"draft": "hi"})
    (message,) = (await page.request("GET", "/sm/message")).json()  # reading is open to all
    created = await page.request("POST", "/form", b"", "application/x-www-form-urlencoded", accept="text/html")
    profile = created.redirect.split("/")[2] if created.redirect else ""
    refused = [
        ("POST", "/sm/message", b'{"text": ""}'),  # would skip ChatBox.send's validation
        ("DELETE", f"/sm/message/{message['id']}", None),  # another visitor's message
        ("GET", "/sm/profile", None),  # every profile's email
        ("POST", "/sm/profile", b"{}"),
        ("DELETE", f"/sm/profile/{profile}", None),
    ]
    for method, path, body in refused:
        assert (await page.request(method, path, body)).status == 403, (method, path)
    assert (await page.request("GET", f"/sm/profile/{profile}")).status == 200  # its link is the key
    assert [m["text"] for m in (await page.request("GET", "/sm/message")).json()] == ["hi"]

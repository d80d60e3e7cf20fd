"""The gallery: one app, one page per example, on embedded defaults (a SQLite file, in-memory broadcast).

pip install -e ".[demo]" && python examples/gallery.py      # then open http://127.0.0.1:8000

Each page is plain HTML written with the entity helpers; the Datastar client comes from the CDN
(or ``STARMODEL_DATASTAR_URL``). Open two tabs to see the live pages agree.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal, get_args

import anyio
import uvicorn
from pydantic import BaseModel, Field, StringConstraints, computed_field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from starmodel_asgi import (
    ClientWritable,
    Entity,
    EventError,
    EventRequest,
    Message,
    Redirect,
    ServerOnly,
    SessionCookieMiddleware,
    StarModel,
    UploadFile,
    event,
)
from starmodel_asgi.pages import datastar_script

logger = logging.getLogger("gallery")

Text = Annotated[str, StringConstraints(strip_whitespace=True)]

# -- counter: per browser session ---------------------------------------------------------


class Counter(Entity):
    """One count per browser session: it survives a reload, and another browser has its own."""

    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event
    def reset(self) -> None:
        self.count = 0


# -- chat: rooms of records, live lists filtered by room, presence ------------------------

Room = Literal["lobby", "python", "random"]
ROOMS: tuple[str, ...] = get_args(Room)


class ChatMessage(Entity):
    model_config = {"scope": "record", "store": "sql", "name": "message", "presence": True, "indexes": ["room"]}
    room: str = "lobby"
    author: str = ""
    text: str = ""
    sent: float = Field(default_factory=time.time)
    owner: Annotated[str, ServerOnly] = ""  # the sender's session: only they see "delete"

    def render(self, viewer: EventRequest) -> str:
        at = datetime.fromtimestamp(self.sent).strftime("%H:%M")
        mine = self.owner and self.owner == viewer.session_id
        delete = f' <button class="delete" data-on:click="{ChatMessage.delete_action(self.id)}">delete</button>'
        return (
            f'<div id="{self.dom_id}" class="message"><b>{html.escape(self.author)}</b> '
            f'<span class="text">{html.escape(self.text)}</span> <time>{at}</time>{delete if mine else ""}</div>'
        )


class ChatBox(Entity):
    """Each visitor's name and draft; ``send`` posts the draft to a room as a message and clears it."""

    # in SQL, so a draft survives a restart: send() writes two SQL entities in one unit of work
    model_config = {"name": "chat", "store": "sql"}
    name: Annotated[str, ClientWritable, Field(max_length=24, title="Name")] = Field(
        default_factory=lambda: f"Guest {secrets.randbelow(900) + 100}"
    )
    draft: Annotated[str, ClientWritable, Field(max_length=500)] = ""

    @event
    async def send(
        self,
        request: EventRequest,
        draft: Annotated[Text, Field(min_length=1, max_length=280, title="Message")],
        room: Room = "lobby",
    ) -> None:
        author = self.name.strip() or "Guest"
        await request.app.create(ChatMessage, room=room, author=author, text=draft, owner=request.session_id or "")
        self.draft = ""


# -- todo: records in SQL, edited by everyone -----------------------------------------------


class Todo(Entity):
    """TodoMVC's list: created and deleted through the record routes, "toggle all" and "clear
    completed" act on the collection, "N items left" is an aggregate every live list follows."""

    model_config = {
        "scope": "record",
        "store": "sql",
        "indexes": ["done"],
        "aggregates": {"left": {"done": False}, "completed": {"done": True}},
    }
    title: Annotated[Text, ClientWritable, Field(min_length=1, max_length=120, title="Title")] = ""
    done: bool = False

    def on_create(self, request: EventRequest | None) -> None:
        if not self.title:  # a POST without a title at all (an empty one is refused by the field)
            raise EventError(422, "Title cannot be empty.", errors={"title": "Title cannot be empty."})

    @event
    def toggle(self) -> None:
        self.done = not self.done

    @event
    def rename(self, title: Annotated[Text, Field(min_length=1, max_length=120, title="Title")]) -> None:
        self.title = title

    @event
    @classmethod
    async def toggle_all(cls, request: EventRequest) -> None:
        all_done = await request.app.count(cls, where={"done": False}) == 0
        for todo in await request.app.list(cls, limit=10_000, where={"done": all_done}):
            async with request.app.edit(cls, todo.id) as editing:
                editing.done = not all_done

    @event
    @classmethod
    async def clear_completed(cls, request: EventRequest) -> None:
        for todo in await request.app.list(cls, limit=10_000, where={"done": True}):
            await request.app.delete(cls, todo.id)

    def render(self) -> str:
        title = html.escape(self.title, quote=True)
        rename = f"@post('{Todo.rename.url(self.id)}?title=' + encodeURIComponent(el.value))"
        # none of the page's $todo: after an add it holds that todo's title, stale once another tab renames it
        toggle = Todo.toggle(id=self.id).options(filterSignals={"include": "^$"})
        return (
            f'<li id="{self.dom_id}" class="todo{" done" if self.done else ""}">'
            f'<input type="checkbox" class="toggle" aria-label="done"{" checked" if self.done else ""}'
            f' data-on:change="{toggle}">'
            f'<input class="title" value="{title}" aria-label="title" data-on:change="{rename}">'
            f'<button class="delete" title="delete" data-on:click="{Todo.delete_action(self.id)}">'
            "&times;</button></li>"
        )


# -- long task: a background event --------------------------------------------------------


class Job(Entity):
    """A slow job per session. ``start`` runs in the background: ``ping`` and ``cancel`` go through meanwhile."""

    progress: int = 0
    state: Literal["idle", "running", "cancelled", "done", "stopped"] = "idle"
    run: Annotated[str, ServerOnly] = ""  # which start is current
    pings: int = 0

    @event(background=True)
    async def start(self, step: float = 0.25) -> None:
        token = secrets.token_hex(4)
        async with self:
            self.progress, self.state, self.run = 0, "running", token
        try:
            for done in range(5, 101, 5):
                await anyio.sleep(min(max(step, 0.01), 1.0))
                async with self:
                    if self.run != token or self.state != "running":
                        return  # cancelled, or started again
                    self.progress = done
                    if done == 100:
                        self.state = "done"
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):  # the page went away: say so rather than look stuck
                async with self:
                    if self.run == token and self.state == "running":
                        self.state = "stopped"
            raise

    @event
    def cancel(self) -> None:
        if self.state == "running":
            self.state = "cancelled"

    @event
    def ping(self) -> None:
        self.pings += 1


# -- form: a record edited with validation, an upload, a redirect --------------------------


class ProfileForm(BaseModel):
    name: Annotated[Text, Field(min_length=2, max_length=60)]
    email: Annotated[
        Text, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), Message("Enter an email address like ada@example.com.")
    ]
    age: Annotated[int, Field(ge=13, le=120), Message("Enter an age between 13 and 120.")]


class Profile(Entity):
    model_config = {"scope": "record", "store": "sql"}
    name: str = ""
    email: str = ""
    age: int = 18
    avatar: str = ""
    avatar_size: int = 0

    @event
    def save(self, form: ProfileForm) -> Redirect:
        self.name, self.email, self.age = form.name, form.email, form.age
        return Redirect(f"/form/{self.id}")

    @event(selector="#avatar", mode="inner")
    async def upload(self, avatar: UploadFile) -> str:
        if not (avatar.content_type or "").startswith("image/"):
            raise EventError(422, "Not an image", errors={"avatar": "Choose an image file (PNG, JPEG, GIF or WebP)."})
        size = len(await avatar.read())
        self.avatar, self.avatar_size = avatar.filename or "avatar", size
        return f"{html.escape(self.avatar)} ({size:,} bytes)"


# -- dashboard: fed by a background task through sm.edit -----------------------------------


class Stats(Entity):
    """Written once a second by the app's own task (``sm.edit``), read live by every dashboard."""

    model_config = {"scope": "global"}
    clock: str = ""
    uptime: int = 0
    cpu: float = 0.0
    memory_mb: float = 0.0
    history: Annotated[list[float], ServerOnly] = []  # drawn by render(), not sent as a signal

    @computed_field  # type: ignore[prop-decorator]
    @property
    def uptime_text(self) -> str:
        minutes, seconds = divmod(self.uptime, 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"

    def render(self) -> str:
        """The last minute of CPU use as a sparkline."""
        top = max([5.0, *self.history])
        points = " ".join(f"{i * 5},{40 - 38 * v / top:.1f}" for i, v in enumerate(self.history))
        return (
            f'<svg id="spark" viewBox="0 0 300 40" preserveAspectRatio="none" role="img" aria-label="CPU, last minute">'
            f'<polyline fill="none" stroke="#4f46e5" stroke-width="2" points="{points}"/></svg>'
        )


def memory_mb() -> float:
    """The process's resident memory (Linux), else its peak (macOS and BSD); 0 where neither is known."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes on macOS, KiB elsewhere


async def feed_dashboard(sm: StarModel, every: float) -> None:
    started, last_cpu, last_at = time.monotonic(), time.process_time(), time.monotonic()
    while True:
        await anyio.sleep(every)
        now, cpu = time.monotonic(), time.process_time()
        percent = round(100 * (cpu - last_cpu) / max(now - last_at, 1e-6), 1)
        last_cpu, last_at = cpu, now
        try:
            async with sm.edit(Stats) as stats:
                stats.clock = datetime.now().strftime("%H:%M:%S")
                stats.uptime = int(now - started)
                stats.cpu = percent
                stats.memory_mb = round(memory_mb(), 1)
                stats.history = [*stats.history, percent][-61:]
        except Exception:
            logger.exception("the dashboard could not be updated; trying again in %s s", every)


# -- poll: the page's events are also a JSON API ---------------------------------------------

Choice = Literal["Python", "Rust", "Go", "TypeScript"]
CHOICES: tuple[str, ...] = get_args(Choice)


class Poll(Entity):
    """Votes from the page, from ``curl``, from another service: the same event, one live result."""

    model_config = {"scope": "global", "store": "sql"}
    votes: dict[str, int] = {}

    @event
    def vote(self, choice: Choice) -> None:
        self.votes = {**self.votes, choice: self.votes.get(choice, 0) + 1}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return sum(self.votes.values())

    def render(self) -> str:
        rows = []
        for choice in CHOICES:
            count = self.votes.get(choice, 0)
            share = 100 * count / self.total if self.total else 0
            rows.append(
                f'<div class="row"><button class="vote" data-on:click="{Poll.vote(choice=choice)}">{choice}</button>'
                f'<span class="bar"><span style="width:{share:.0f}%"></span></span>'
                f'<span class="n" data-choice="{choice}">{count}</span></div>'
            )
        return f'<div id="poll">{"".join(rows)}</div>'


ENTITIES: list[type[Entity]] = [Counter, ChatMessage, ChatBox, Todo, Job, Profile, Stats, Poll]

# -- pages -----------------------------------------------------------------------------------

STYLE = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #4f46e5; --bad: #b91c1c; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0;
  background: #f9fafb; }
header { background: white; border-bottom: 1px solid var(--line); padding: .8rem 1.5rem; }
header a { color: var(--accent); text-decoration: none; font-weight: 600; }
main { max-width: 44rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; } .lead { color: var(--muted); margin-top: 0; }
.card { background: white; border: 1px solid var(--line); border-radius: .6rem; padding: 1rem 1.2rem; margin: 1rem 0; }
button { font: inherit; padding: .35rem .9rem; border-radius: .4rem; border: 1px solid var(--accent);
  background: var(--accent); color: white; cursor: pointer; }
button.quiet { background: white; color: var(--accent); }
input { font: inherit; padding: .35rem .5rem; border: 1px solid #d1d5db; border-radius: .4rem; }
.error { color: var(--bad); font-size: .9rem; min-height: 1.2rem; }
.big { font-size: 3rem; font-weight: 700; margin: .2rem 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .8rem; }
.grid a { display: block; background: white; border: 1px solid var(--line); border-radius: .6rem; padding: .8rem 1rem;
  color: var(--ink); text-decoration: none; } .grid a:hover { border-color: var(--accent); }
.grid b { display: block; color: var(--accent); }
.messages { height: 18rem; overflow-y: auto; display: flex; flex-direction: column; gap: .3rem; }
.message time { color: var(--muted); font-size: .8rem; }
.message .delete { padding: 0 .4rem; font-size: .75rem; background: white; color: var(--bad);
  border-color: var(--line); }
nav a { color: var(--accent); margin-right: .4rem; } nav a[aria-current] { font-weight: 700; text-decoration: none; }
.row { display: flex; gap: .5rem; align-items: center; margin: .4rem 0; }
.todos { list-style: none; padding: 0; } .todo { display: flex; gap: .5rem; align-items: center; margin: .3rem 0; }
.todo .title { flex: 1; border-color: transparent; }
.todo.done .title { text-decoration: line-through; color: var(--muted); }
.todo .delete { background: white; color: var(--bad); border-color: var(--line); }
progress { width: 100%; height: 1.4rem; accent-color: var(--accent); }
.stats { display: grid; grid-template-columns: repeat(4, 1fr); gap: .8rem; text-align: center; }
.stats strong { display: block; font-size: 1.6rem; } .stats span { color: var(--muted); font-size: .85rem; }
svg { width: 100%; height: 4rem; background: #eef2ff; border-radius: .4rem; }
.bar { flex: 1; background: #eef2ff; border-radius: .4rem; height: 1.4rem; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--accent); transition: width .3s; }
.vote { width: 8rem; } code { background: #f3f4f6; padding: .1rem .3rem; border-radius: .3rem; font-size: .85rem; }
pre { background: #111827; color: #e5e7eb; padding: .8rem; border-radius: .5rem; white-space: pre-wrap;
  font-size: .85rem; }
label { display: block; margin: .7rem 0 .2rem; font-weight: 600; }
"""

EXAMPLES = [
    ("/counter", "Counter", "Session state: buttons, reset, survives a reload."),
    ("/chat", "Chat", "Rooms: live lists filtered by room, who is online, delete your own messages."),
    ("/todo", "Todo list", "TodoMVC in SQL: items left, toggle all, clear completed, filters, live in every tab."),
    ("/task", "Long task", "A background event fills a progress bar; cancel it; other events keep working."),
    ("/form", "Form", "Validation next to each field, a file upload, a redirect after saving."),
    ("/dashboard", "Dashboard", "Fed every second by the app's own task through sm.edit."),
    ("/poll", "Poll + API", "The page's events are also a JSON API: vote with curl, watch the page move."),
]


def layout(title: str, body: str, lead: str = "") -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · starmodel_asgi gallery</title>{datastar_script()}<style>{STYLE}</style></head>
<body><header><a href="/">starmodel_asgi gallery</a></header>
<main><h1>{html.escape(title)}</h1>{f'<p class="lead">{lead}</p>' if lead else ""}
{body}
</main></body></html>""")


def pages(sm: StarModel) -> list[Route]:
    async def index(request: Request) -> HTMLResponse:
        cards = "".join(f'<a href="{href}"><b>{name}</b>{text}</a>' for href, name, text in EXAMPLES)
        return layout(
            "Live pages in Python",
            f'<div class="grid">{cards}</div>',
            "Every example is one Pydantic class or two and a page of HTML. Open two tabs.",
        )

    async def counter(request: Request) -> HTMLResponse:
        mine = await sm.current(Counter, request)
        return layout(
            "Counter",
            f"""{Counter.holder(mine, sync="live")}<div class="card">
  <p class="big" id="count" data-text="{Counter.signal.count}">{mine.count}</p>
  <div class="row"><button id="dec" class="quiet" data-on:click="{Counter.increment(amount=-1)}">&minus;1</button>
  <button id="inc" data-on:click="{Counter.increment()}">+1</button>
  <button id="inc10" data-on:click="{Counter.increment(amount=10)}">+10</button>
  <button id="reset" class="quiet" data-on:click="{Counter.reset()}">reset</button></div></div>""",
            "Kept on the server for your browser session: reload, or open a second tab, the count follows.",
        )

    async def chat(request: Request) -> HTMLResponse:
        room = request.path_params.get("room", "lobby")
        if room not in ROOMS:
            raise HTTPException(404, f"No room {room!r}: the rooms are {', '.join(ROOMS)}")
        me = await sm.current(ChatBox, request)
        send = ChatBox.send(room=room)
        rooms = " ".join(f'<a href="/chat/{r}"{" aria-current=page" if r == room else ""}>#{r}</a>' for r in ROOMS)
        return layout(
            "Chat",
            f"""{ChatBox.holder(me, sync=None)}<div class="card">
  <div class="row"><nav id="rooms" style="flex:1">{rooms}</nav>
  <strong id="online" data-text="$message._viewers + ' online'">1 online</strong></div>
  {ChatMessage.live_list(limit=50, class_="messages", where={"room": room})}
  <div class="row"><input id="name" size="10" maxlength="24" aria-label="your name" data-bind:chat.name>
  <input id="draft" style="flex:1" placeholder="Say something" aria-label="message" data-bind:chat.draft
    data-on:keydown="evt.key === 'Enter' && {send}">
  <button id="send" data-on:click="{send}">Send</button></div>
  <div id="draft-error" class="error"
    data-text="$chat._errors.draft || $chat._errors.name || $chat._errors.room"></div></div>""",
            "Messages are records in SQLite; each room's page follows only its own messages, live in every tab.",
        )

    async def todo(request: Request) -> HTMLResponse:
        show = request.query_params.get("show", "all")
        where = {"active": {"done": False}, "completed": {"done": True}}.get(show)
        add = f"{Todo.create_action().options(contentType='form')}.then(() => el.reset())"
        left = "$todo._count.left"
        views = " ".join(
            f'<a href="/todo?show={v}"{" aria-current=page" if v == show else ""}>{v.title()}</a>'
            for v in ("all", "active", "completed")
        )
        return layout(
            "Todo list",
            f"""<div class="card"><form id="add-form" class="row" data-on:submit="{add}">
  <button id="toggle-all" type="button" class="quiet" data-on:click="{Todo.toggle_all()}">Toggle all</button>
  <input id="new" name="title" style="flex:1" maxlength="120" placeholder="What needs doing?" aria-label="new todo">
  <button id="add">Add</button></form>
  {Todo.live_list(limit=100, tag="ul", class_="todos", where=where)}
  <div id="todo-error" class="error" data-text="$todo._errors.title"></div>
  <div class="row"><span id="left" data-text="{left} + ({left} === 1 ? ' item left' : ' items left')"></span>
  <nav id="views" style="flex:1">{views}</nav><button id="clear" class="quiet" data-show="$todo._count.completed > 0"
    data-on:click="{Todo.clear_completed()}">Clear completed</button></div></div>""",
            "One list for everyone, kept in SQL. Tick, rename (edit the text), delete: every tab follows.",
        )

    async def task(request: Request) -> HTMLResponse:
        job = await sm.current(Job, request)
        return layout(
            "Long task",
            f"""{Job.holder(job, sync="live")}<div class="card">
  <progress id="progress" max="100" value="{job.progress}" data-attr:value="{Job.signal.progress}"></progress>
  <p><span id="percent" data-text="{Job.signal.progress} + '%'">{job.progress}%</span> ·
  <span id="state" data-text="{Job.signal.state}">{job.state}</span></p>
  <div class="row"><button id="start" data-on:click="{Job.start()}">Start</button>
  <button id="cancel" class="quiet" data-on:click="{Job.cancel()}">Cancel</button></div></div>
<div class="card"><p>Meanwhile, the same entity answers other events at once:</p>
  <div class="row"><button id="ping" class="quiet" data-on:click="{Job.ping()}">Ping</button>
  <span>pings: <strong id="pings" data-text="{Job.signal.pings}">{job.pings}</strong></span></div></div>""",
            "@event(background=True): the job runs without holding your state; each step is saved and pushed live.",
        )

    async def form_start(request: Request) -> Response:
        if request.method == "POST":
            profile = await sm.create(Profile, name="", email="")
            return RedirectResponse(f"/form/{profile.id}/edit", status_code=303)
        return layout(
            "Form",
            """<div class="card"><form method="post" action="/form"><p>Make a profile to edit.</p>
  <button id="new-profile">New profile</button></form></div>""",
            "A record edited with validation next to each field, a file upload, and a redirect after saving.",
        )

    async def profile(request: Request) -> Profile:
        try:
            return await sm.current(Profile, request, id=request.path_params["id"])
        except LookupError:
            raise HTTPException(404, "No such profile") from None

    async def form_edit(request: Request) -> HTMLResponse:
        p = await profile(request)
        save = Profile.save(id=p.id).options(contentType="form")
        upload = Profile.upload(id=p.id).options(contentType="form")

        def field(name: str, label: str, value: object, kind: str = "text") -> str:
            return f"""<label for="{name}">{label}</label>
  <input id="{name}" name="{name}" type="{kind}" value="{html.escape(str(value), quote=True)}">
  <div id="{name}-error" class="error" data-text="$profile._errors.{name}"></div>"""

        return layout(
            "Edit profile",
            f"""{Profile.holder(p, sync=None)}<div class="card">
<form id="edit" novalidate data-on:submit="{save}">
  {field("name", "Name", p.name)}{field("email", "Email", p.email, "email")}{field("age", "Age", p.age, "number")}
  <button id="save">Save</button></form></div>
<div class="card"><form id="upload" enctype="multipart/form-data" data-on:submit="{upload}">
  <label for="avatar-file">Avatar</label><input id="avatar-file" type="file" name="avatar">
  <button id="send">Upload</button>
  <div id="avatar-error" class="error" data-text="$profile._errors.avatar || $profile._error"></div></form>
  <p>Uploaded: <span id="avatar">{html.escape(p.avatar) or "nothing yet"}</span></p></div>""",
        )

    async def form_show(request: Request) -> HTMLResponse:
        p = await profile(request)
        return layout(
            p.name or "Profile",
            f"""<div class="card" id="profile"><p>Email: <strong id="email">{html.escape(p.email)}</strong></p>
  <p>Age: <strong id="age">{p.age}</strong></p><p>Avatar: {html.escape(p.avatar) or "none"}</p>
  <p><a href="/form/{p.id}/edit">Edit again</a></p></div>""",
            "Saved.",
        )

    async def dashboard(request: Request) -> HTMLResponse:
        stats = await sm.current(Stats, request)
        tiles = [("clock", "clock"), ("uptime_text", "uptime"), ("cpu", "CPU %"), ("memory_mb", "memory, MB")]
        cells = "".join(
            f'<div><strong id="{name}" data-text="{Stats.signal(name)}">{getattr(stats, name)}</strong>'
            f"<span>{label}</span></div>"
            for name, label in tiles
        )
        return layout(
            "Dashboard",
            f"""{Stats.holder(stats, sync="live")}<div class="card"><div class="stats">{cells}</div></div>
<div class="card"><p>This server's CPU use, last minute</p>{stats.render()}</div>""",
            "No event here: a task of the app writes with sm.edit(Stats) every second; every open dashboard follows.",
        )

    async def poll(request: Request) -> HTMLResponse:
        current, total = await sm.current(Poll, request), Poll.signal.total
        votes = f"{current.total} vote" if current.total == 1 else f"{current.total} votes"
        here = html.escape(f"{request.url.scheme}://{request.url.netloc}")
        return layout(
            "Poll + API",
            f"""{Poll.holder(current, sync="live")}<div class="card"><p>Which language for your next backend?
  <span id="total" data-text="{total} + ({total} === 1 ? ' vote' : ' votes')">{votes}</span></p>{current.render()}</div>
<div class="card"><p>The same event is a typed JSON API (<a href="/sm/openapi.json">OpenAPI</a>).
  Vote from a terminal and watch this page:</p>
<pre>curl -X POST {here}/sm/poll/vote -H 'Content-Type: application/json' -d '{{"choice": "Rust"}}'
curl {here}/sm/poll</pre>
<p>A bad choice is a <code>422</code> naming it, validated as the page's votes are.</p></div>""",
            "One class: a live page, a JSON API with validation, and an OpenAPI description.",
        )

    return [
        Route("/", index),
        Route("/counter", counter),
        Route("/chat", chat),
        Route("/chat/{room}", chat),
        Route("/todo", todo),
        Route("/task", task),
        Route("/form", form_start, methods=["GET", "POST"]),
        Route("/form/{id}/edit", form_edit),
        Route("/form/{id}", form_show),
        Route("/dashboard", dashboard),
        Route("/poll", poll),
    ]


def authorize(request: EventRequest, entity: type[Entity], event: str | None, record: Entity | None) -> bool:
    """Messages are posted only by ``ChatBox.send`` (which validates them) and deleted only by their
    sender; profiles are created only by the /form page and never listed (their emails): a
    profile's unguessable id is its edit link."""
    if entity is ChatMessage:
        mine = isinstance(record, ChatMessage) and record.owner == request.session_id
        return request.method == "GET" or (event == "delete" and mine)
    if entity is Profile:  # asked about each record a list or create concerns, with its id: not in their path
        return request.path_params.get("id") in request.path.split("/") and event != "delete"
    return True


def build(database_url: str | None = None, secret_key: str | None = None, tick: float = 1.0) -> Starlette:
    """The gallery app; ``tick`` is how often the dashboard's task writes."""
    sm = StarModel(
        entities=ENTITIES,
        secret_key=secret_key or os.environ.get("STARMODEL_SECRET_KEY", "gallery-demo-only-secret"),
        database_url=database_url,
        max_body_size=5 * 1024 * 1024,  # room for avatars
        datastar_error_status=200,  # the Datastar client shows only 200 answers: let it show messages
        authorize=authorize,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sm.lifespan(), anyio.create_task_group() as tg:
            tg.start_soon(feed_dashboard, sm, tick)
            yield
            tg.cancel_scope.cancel()

    routes: list[Route | Mount] = [*pages(sm), Mount("/sm", app=sm)]
    # the page gives a first visit its session, so the chat's live list knows whose messages are whose
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SessionCookieMiddleware, sm=sm)])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(build(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

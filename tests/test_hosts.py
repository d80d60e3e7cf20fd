"""What each host adds on top of the contract suite: its own routes beside ours, its lifespan
closing what the app opened, its users for ``scope="user"``, and FastHTML elements."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.routing import Mount

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.broadcast.memory import MemoryBroadcast
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.hosts import HOST_SESSIONS, HOSTS, configure_django
from tests.support.servers import read_live
from tests.support.sse import parse_sse

pytestmark = pytest.mark.anyio


class Tally(Entity):
    count: int = 0

    @event
    def add(self, amount: int = 1) -> None:
        self.count += amount


class Wallet(Entity):
    model_config = {"scope": "user"}  # type: ignore[typeddict-unknown-key]
    balance: int = 0

    @event
    def deposit(self, amount: int) -> None:
        self.balance += amount


def client_for(app: Any, prefix: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(app), base_url=f"http://testserver{prefix}")


async def lifespan_cycle(app: Any) -> None:
    """Starts and stops ``app`` through the ASGI lifespan protocol, as uvicorn does."""
    to_app_send, to_app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, to_app_receive.receive, from_app_send.send)
            await to_app_send.send({"type": "lifespan.startup"})
            assert (await from_app_receive.receive())["type"] == "lifespan.startup.complete"
            await to_app_send.send({"type": "lifespan.shutdown"})
            assert (await from_app_receive.receive())["type"] == "lifespan.shutdown.complete"


# -- mounting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["starlette", "fastapi", "fasthtml", "litestar", "django"])
async def test_host_keeps_serving_its_own_pages(host: str) -> None:
    app, prefix = HOSTS[host](StarModel([Tally], secret_key="k"))
    async with client_for(app, "") as c:
        r = await c.get("/")
        assert r.status_code == 200 and "host" in r.text
        r = await c.post(f"{prefix}/tally/add?amount=2", headers=JSON)
        assert r.status_code == 200 and r.json() == {"count": 2}


async def test_django_mount_takes_only_its_prefix() -> None:
    app, _ = HOSTS["django"](StarModel([Tally], secret_key="k"))
    async with client_for(app, "") as c:
        r = await c.get("/smx/tally", headers=JSON)  # Django's own 404 page, not ours
        assert r.status_code == 404 and not r.headers["content-type"].startswith("application/json")
        r = await c.get("/sm/tally", headers=JSON)
        assert r.status_code == 200 and r.json() == {"count": 0}


@pytest.mark.parametrize(
    ("path", "root_path"),
    [("/site/sm/tally/add", "/site"), ("/sm/tally/add", "/site")],
    ids=["path-includes-root-path", "path-excludes-root-path"],
)
async def test_django_mount_under_a_server_root_path(path: str, root_path: str) -> None:
    app, _ = HOSTS["django"](StarModel([Tally], secret_key="k"))
    transport = StreamingTransport(app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.post(path, headers=JSON)
        assert r.status_code == 200 and r.json() == {"count": 1}


@pytest.mark.parametrize("host", sorted(HOSTS))
async def test_session_cookie_gives_each_browser_its_own_state(host: str) -> None:
    sm = StarModel([Tally], secret_key="k")
    app, prefix = HOSTS[host](sm)
    async with client_for(app, prefix) as alice, client_for(app, prefix) as bob:
        for _ in range(3):
            assert (await alice.post("/tally/add", headers=DATASTAR)).status_code == 200
        await bob.post("/tally/add?amount=10", headers=DATASTAR)
        assert (await alice.get("/tally", headers=JSON)).json() == {"count": 3}
        assert (await bob.get("/tally", headers=JSON)).json() == {"count": 10}


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` on a real uvicorn at a free port (as the host serves it in production)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(5):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True


@pytest.mark.parametrize("host", sorted(HOSTS))
async def test_live_stream_through_the_host(host: str) -> None:
    broadcast = MemoryBroadcast()
    app, prefix = HOSTS[host](StarModel([Tally], secret_key="k", broadcast=broadcast))
    async with serving(app) as url, httpx.AsyncClient(base_url=url + prefix, timeout=5) as c:
        await c.post("/tally/add", headers=JSON)  # gets the session cookie
        with anyio.fail_after(5):
            async with read_live(c, "/tally/live") as live:
                assert live.status == 200
                assert (await live.next()).signals == {"tally": {"count": 1}}
                await c.post("/tally/add?amount=4", headers=DATASTAR)
                assert (await live.next()).signals == {"tally": {"count": 5}}
            while broadcast.subscriber_count():  # the host passed the disconnect on
                await anyio.sleep(0.01)


async def test_host_session_carries_the_app_session() -> None:
    (host,) = HOST_SESSIONS
    app, prefix = HOSTS[host](StarModel([Tally], secret_key="k"))
    async with client_for(app, prefix) as alice:
        await alice.post("/tally/add?amount=3", headers=JSON)
        assert set(alice.cookies) == {"session_"}  # FastHTML's signed session, no sm_session
        stolen = alice.cookies["session_"]
        assert (await alice.get("/tally", headers=JSON)).json() == {"count": 3}
    async with client_for(app, prefix) as mallory:
        mallory.cookies.set("session_", "A" + stolen[1:])
        assert (await mallory.get("/tally", headers=JSON)).json() == {"count": 0}


# -- lifespan -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", sorted(HOSTS))
class ClosedStore(MemoryStore):
    """The memory store, saying whether it was closed (closing it releases nothing to see)."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


async def test_host_shutdown_closes_stores_and_broadcast(host: str) -> None:
    store, broadcast = ClosedStore(), MemoryBroadcast()
    sm = StarModel([Tally], secret_key="k", stores={"memory": store}, broadcast=broadcast)
    app, prefix = HOSTS[host](sm)
    async with client_for(app, prefix) as c:  # works before (and without) any lifespan
        assert (await c.post("/tally/add", headers=JSON)).json() == {"count": 1}
    async with broadcast.subscribe("sm:tally:x"):
        assert not store.closed and broadcast.subscriber_count() == 1
        await lifespan_cycle(app)
        assert store.closed and broadcast.subscriber_count() == 0
    assert len(store) == 1  # the memory store keeps its state: a closed app used again finds it


# -- users --------------------------------------------------------------------------------------


class HeaderAuth(AuthenticationBackend):
    """Stands in for a host's real login: the user named by ``X-User``."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


async def test_user_scope_under_starlette_authentication_middleware() -> None:
    sm = StarModel([Wallet], secret_key="k")  # no get_user: scope["user"] from the middleware
    app = Starlette(
        routes=[Mount("/sm", app=sm)], middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())]
    )
    async with client_for(app, "/sm") as c:
        await c.post("/wallet/deposit?amount=5", headers={**JSON, "X-User": "alice"})
        await c.post("/wallet/deposit?amount=7", headers={**JSON, "X-User": "bob"})
        await c.post("/wallet/deposit?amount=1", headers={**JSON, "X-User": "alice"})
        assert (await c.get("/wallet", headers={**JSON, "X-User": "alice"})).json() == {"balance": 6}
        assert (await c.get("/wallet", headers={**JSON, "X-User": "bob"})).json() == {"balance": 7}
        r = await c.post("/wallet/deposit?amount=1", headers=JSON)
        assert r.status_code == 401
    async with client_for(app, "/sm") as other_browser:
        r = await other_browser.get("/wallet", headers={**JSON, "X-User": "alice"})
        assert r.json() == {"balance": 6}


def django_login(username: str) -> str:
    """A session cookie value for a Django user logged in by Django's own auth."""
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(username=username)
    client = Client()
    client.force_login(user)
    return str(client.cookies["sessionid"].value)


async def test_user_scope_under_django_authentication() -> None:
    from django.core.asgi import get_asgi_application

    from starmodel_asgi.contrib.django import django_user, mount

    configure_django()
    with ThreadPoolExecutor(1) as pool:  # Django's ORM refuses to run in the event loop's thread
        alice, bob = pool.submit(django_login, "alice").result(), pool.submit(django_login, "bob").result()
    sm = StarModel([Wallet], secret_key="k", get_user=django_user)
    app = mount(get_asgi_application(), sm)

    def as_user(session: str | None) -> httpx.AsyncClient:
        client = client_for(app, "/sm")
        if session is not None:
            client.cookies.set("sessionid", session)
        return client

    async with as_user(alice) as a, as_user(bob) as b, as_user(alice) as a2, as_user("forged") as f, as_user(None) as n:
        await a.post("/wallet/deposit?amount=5", headers=DATASTAR)
        await b.post("/wallet/deposit?amount=7", headers=JSON)
        await a2.post("/wallet/deposit?amount=1", headers=JSON)  # alice again, from another browser
        assert (await a.get("/wallet", headers=JSON)).json() == {"balance": 6}
        assert (await b.get("/wallet", headers=JSON)).json() == {"balance": 7}
        assert (await f.post("/wallet/deposit?amount=1", headers=JSON)).status_code == 401
        assert (await n.post("/wallet/deposit?amount=1", headers=JSON)).status_code == 401


# -- FastHTML -------------------------------------------------------------------------------------


class Panel(Entity):
    count: int = 0

    @event(selector="#panel", mode="inner")
    def show(self, amount: int = 1) -> Any:
        from fasthtml.common import Div, P

        self.count += amount
        return Div(P(f"count is {self.count}"), id="panel")


async def test_fasthtml_elements_returned_from_events_are_patched() -> None:
    app, prefix = HOSTS["fasthtml"](StarModel([Panel], secret_key="k"))
    async with client_for(app, prefix) as c:
        r = await c.post("/panel/show?amount=2", headers=DATASTAR)
    events = parse_sse(r.text)
    assert [e.event for e in events] == ["datastar-patch-signals", "datastar-patch-elements"]
    assert events[1].elements == '<div id="panel"><p>count is 2</p></div>'
    assert events[1].get("selector") == "#panel" and events[1].get("mode") == "inner"


def test_fasthtml_action_attributes_use_datastar_colon_syntax() -> None:
    from fasthtml.common import Button, to_xml

    from starmodel_asgi.contrib.fasthtml import on

    StarModel([Panel], base_path="/sm", secret_key="k")
    # FastHTML's own spelling gives data-on-click, which Datastar 1.0 does not read
    assert 'data-on-click="' in to_xml(Button("+", data_on_click=Panel.show(amount=1)))
    html = to_xml(Button("+", **on(click=Panel.show(amount=1), datastar_fetch="$err = 1")))
    assert """data-on:click="@post('/sm/panel/show?amount=1')\"""" in html
    assert 'data-on:datastar-fetch="$err = 1"' in html


def test_fasthtml_keyword_attributes_after_use_datastar_attrs() -> None:
    from fasthtml.common import Button, Div, Input, to_xml
    from fasthtml.components import fh_cfg

    from starmodel_asgi.contrib.fasthtml import use_datastar_attrs

    StarModel([Panel], base_path="/sm", secret_key="k")
    before = fh_cfg["attrmap"]
    try:
        use_datastar_attrs()
        html = to_xml(Button("+", data_on_click=Panel.show(amount=1), hx_get="/x", cls="big"))
        assert "data-on:click=\"@post('/sm/panel/show?amount=1')\"" in html
        assert 'hx-get="/x"' in html and 'class="big"' in html  # FastHTML's own mapping still holds
        html = to_xml(Input(data_bind_draft=True, data_on_keydown__debounce_300ms="@post('/x')"))
        assert "data-bind:draft" in html and "data-on:keydown__debounce.300ms=" in html
        html = to_xml(Div(data_on_intersect="$seen = true", data_signals='{"a": 1}', data_text="$a"))
        assert 'data-on-intersect="' in html and "data-signals=" in html and 'data-text="$a"' in html
        html = to_xml(Div(data_on_datastar_fetch="$e = 1", data_class_hidden="$off"))
        assert 'data-on:datastar-fetch="$e = 1"' in html and 'data-class:hidden="$off"' in html
    finally:
        fh_cfg["attrmap"] = before


async def test_host_url_for_walks_past_the_mount(tmp_path: Path) -> None:
    """A host route's url_for looks through every mount, ours included (a StaticFiles mount after
    it is FastAPI's most common layout): the app's routes must be something it can walk."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    (tmp_path / "site.css").write_text("body {}")
    sm = StarModel([Tally], secret_key="k")
    host = FastAPI()

    @host.get("/")
    async def home(request: Request) -> dict[str, str]:
        return {"css": str(request.url_for("static", path="site.css"))}

    host.mount("/sm", sm)  # unnamed, as README shows: url_for looks inside it
    host.mount("/static", StaticFiles(directory=tmp_path), name="static")
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t") as client:
        answer = await client.get("/")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"css": "http://t/static/site.css"}
        assert (await client.get("/static/site.css")).text == "body {}"
        assert (await client.get("/sm/tally", headers={"accept": "application/json"})).status_code == 200

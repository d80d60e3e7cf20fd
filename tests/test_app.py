"""The app object itself: lazy start, lifespan, cookies under HTTPS, host sessions, page helpers."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import StarModel
from tests.conftest import JSON
from tests.entities import ENTITIES, Counter, Shared

pytestmark = pytest.mark.anyio


class Closing:
    """A broadcast backend that records being closed (any object with the protocol plugs in)."""

    def __init__(self) -> None:
        self.closed = False

    async def publish(self, channel: str, message: str) -> None:
        pass

    def subscribe(self, channel: str):  # pragma: no cover - not used here
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed = True


def test_import_and_construction_start_nothing(tmp_path: Path) -> None:
    code = (
        "import threading, starmodel_asgi, tests.entities as e\n"
        "n = threading.active_count()\n"
        "starmodel_asgi.StarModel(entities=e.ENTITIES, secret_key='k')\n"
        "assert threading.active_count() == n, 'a thread was started'\n"
    )
    root = Path(__file__).parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, env={"PYTHONPATH": str(root)})
    assert list(tmp_path.iterdir()) == []  # no database file until a sql entity is used
    assert threading.active_count() >= 1


async def test_asgi_lifespan_shutdown_closes_the_backends() -> None:
    backend = Closing()
    sm = StarModel(entities=ENTITIES, secret_key="k", broadcast=backend)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    await sm({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert backend.closed


async def test_host_lifespan_hook_closes_the_backends() -> None:
    backend = Closing()
    sm = StarModel(entities=ENTITIES, secret_key="k", broadcast=backend)
    async with sm.lifespan(None):
        assert not backend.closed
    assert backend.closed


async def test_cookie_is_secure_under_https() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sm), base_url="https://t") as c:
        r = await c.post("/counter/increment", headers=JSON)
        assert "; Secure" in r.headers["set-cookie"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sm), base_url="http://t") as c:
        r = await c.post("/counter/increment", headers=JSON)
        assert "Secure" not in r.headers["set-cookie"]


async def test_sessions_survive_a_restart_with_the_same_secret_and_not_with_another() -> None:
    first = StarModel(entities=ENTITIES, secret_key="k1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://t") as c:
        await c.post("/counter/increment", headers=JSON)
        cookie = c.cookies["sm_session"]
    assert StarModel(entities=ENTITIES, secret_key="k1").signer.unsign(cookie)
    assert StarModel(entities=ENTITIES, secret_key="k2").signer.unsign(cookie) is None


async def test_host_session_is_used_when_there_is_one() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")
    host = Starlette(routes=[Mount("/sm", app=sm)], middleware=[Middleware(SessionMiddleware, secret_key="host")])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://t/sm") as c:
        r = await c.post("/counter/increment?amount=2", headers=JSON)
        assert "sm_session" not in r.headers.get("set-cookie", "")
        assert "session=" in r.headers["set-cookie"]  # the host's own cookie carries our session
        assert (await c.get("/counter", headers=JSON)).json()["count"] == 2
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://t/sm") as other:
        assert (await other.get("/counter", headers=JSON)).json()["count"] == 0


async def test_current_gives_a_host_page_the_callers_instance() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")

    async def page(request: Request) -> HTMLResponse:
        counter = await sm.current(Counter, request)
        shared = await sm.current(Shared, request)
        return HTMLResponse(Counter.holder(counter) + Shared.holder(shared))

    host = Starlette(routes=[Route("/", page), Mount("/sm", app=sm)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://t") as c:
        assert "&quot;count&quot;:0" in (await c.get("/")).text  # no session yet: defaults
        await c.post("/sm/counter/increment?amount=3", headers=JSON)
        await c.post("/sm/shared/bump", headers=JSON)
        html = (await c.get("/")).text
        assert "&quot;count&quot;:3" in html and "&quot;total&quot;:1" in html

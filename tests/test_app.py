"""The app object itself: lazy start, lifespan, cookies under HTTPS, host sessions, page helpers."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import SimpleUser, UnauthenticatedUser
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from starmodel_asgi import Entity, EventRequest, SessionCookieMiddleware, StarModel
from starmodel_asgi.broadcast.memory import MemoryBroadcast
from starmodel_asgi.identity import default_user
from starmodel_asgi.spec import spec_of
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.testing import StreamingTransport
from tests.support.entities import ENTITIES, Counter, Shared
from tests.support.headers import JSON

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
        "import threading, starmodel_asgi, tests.support.entities as e\n"
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
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="https://t") as c:
        r = await c.post("/counter/increment", headers=JSON)
        assert "; Secure" in r.headers["set-cookie"]
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        r = await c.post("/counter/increment", headers=JSON)
        assert "Secure" not in r.headers["set-cookie"]


async def test_sessions_survive_a_restart_with_the_same_secret_and_not_with_another() -> None:
    first = StarModel(entities=ENTITIES, secret_key="k1")
    async with httpx.AsyncClient(transport=StreamingTransport(first), base_url="http://t") as c:
        await c.post("/counter/increment", headers=JSON)
        cookie = c.cookies["sm_session"]
    assert StarModel(entities=ENTITIES, secret_key="k1").sessions.signer.unsign(cookie)
    assert StarModel(entities=ENTITIES, secret_key="k2").sessions.signer.unsign(cookie) is None


async def test_host_session_is_used_when_there_is_one() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")
    host = Starlette(routes=[Mount("/sm", app=sm)], middleware=[Middleware(SessionMiddleware, secret_key="host")])
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t/sm") as c:
        r = await c.post("/counter/increment?amount=2", headers=JSON)
        assert "sm_session" not in r.headers.get("set-cookie", "")
        assert "session=" in r.headers["set-cookie"]  # the host's own cookie carries our session
        assert (await c.get("/counter", headers=JSON)).json()["count"] == 2
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t/sm") as other:
        assert (await other.get("/counter", headers=JSON)).json()["count"] == 0


async def test_current_gives_a_host_page_the_callers_instance() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")

    async def page(request: Request) -> HTMLResponse:
        counter = await sm.current(Counter, request)
        shared = await sm.current(Shared, request)
        return HTMLResponse(Counter.holder(counter) + Shared.holder(shared))

    host = Starlette(routes=[Route("/", page), Mount("/sm", app=sm)])
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t") as c:
        assert "&quot;count&quot;:0" in (await c.get("/")).text  # no session yet: defaults
        await c.post("/sm/counter/increment?amount=3", headers=JSON)
        await c.post("/sm/shared/bump", headers=JSON)
        html = (await c.get("/")).text
        assert "&quot;count&quot;:3" in html and "&quot;total&quot;:1" in html


async def test_authorize_may_be_async_and_guards_every_scope() -> None:
    seen: list[tuple[str, str | None]] = []

    async def authorize(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        seen.append((spec_of(entity).name, event))
        return request.headers.get("x-role") == "admin"

    sm = StarModel(entities=ENTITIES, secret_key="k", authorize=authorize)
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        assert (await c.post("/shared/bump", headers=JSON)).status_code == 403
        assert (await c.get("/counter", headers=JSON)).status_code == 403
        assert (await c.post("/shared/bump", headers={**JSON, "x-role": "admin"})).json() == {"total": 1}
    assert ("shared", "bump") in seen and ("counter", None) in seen


async def test_authorize_returning_a_non_bool_is_a_server_error() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k", authorize=lambda request, entity, event: "yes")  # type: ignore[arg-type, return-value]
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        assert (await c.post("/shared/bump", headers=JSON)).status_code == 500
        assert (await c.get("/shared", headers=JSON)).status_code == 500


def test_default_user_never_keys_by_display_name() -> None:
    class Named:
        is_authenticated = True
        display_name = "Sam"

    class WithId(Named):
        id = 7

    assert default_user({"user": WithId()}) == "7"
    assert default_user({"user": "ada"}) == "ada"
    assert default_user({"user": UnauthenticatedUser()}) is None
    assert default_user({"user": SimpleUser("sam@example.com")}) == "sam@example.com"
    with pytest.raises(TypeError, match="get_user"):
        default_user({"user": Named()})


async def test_websockets_are_closed_politely() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await sm({"type": "websocket", "path": "/counter", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


class Unavailable:
    """A store that is down: every call fails."""

    async def get(self, entity: type[Entity], key: str) -> None:
        raise ConnectionError("store is down")

    def hold(self, entity: type[Entity], key: str):  # type: ignore[no-untyped-def]
        raise ConnectionError("store is down")

    async def list(self, entity: type[Entity], limit: int, offset: int) -> list:
        raise ConnectionError("store is down")

    async def aclose(self) -> None:
        raise ConnectionError("store is down")


class ClosingMemory(MemoryBroadcast):
    closed = False

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


async def test_a_store_that_is_down_gives_clear_errors_and_shutdown_still_closes_the_rest() -> None:
    backend = ClosingMemory()
    sm = StarModel(entities=ENTITIES, secret_key="k", stores={"memory": Unavailable()}, broadcast=backend)  # type: ignore[dict-item]
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        r = await c.post("/counter/increment", headers=JSON)
        assert r.status_code == 500 and "down" not in r.text
        assert (await c.get("/counter", headers=JSON)).status_code == 500
        r = await c.get("/counter/live", headers={"Datastar-Request": "true"})
        assert r.status_code == 503 and "_error" in r.text and "down" not in r.text
    await sm.aclose()
    assert backend.closed


async def test_session_cookie_middleware_gives_the_first_page_its_session() -> None:
    sm = StarModel(entities=ENTITIES, secret_key="k")

    async def page(request: Request) -> HTMLResponse:
        counter = await sm.current(Counter, request)
        return HTMLResponse(Counter.holder(counter))

    host = Starlette(
        routes=[Route("/", page), Mount("/sm", app=sm)],
        middleware=[Middleware(SessionCookieMiddleware, sm=sm)],
    )
    async with httpx.AsyncClient(transport=StreamingTransport(host), base_url="http://t") as c:
        first = await c.get("/")
        assert first.headers["set-cookie"].startswith("sm_session=")
        session = c.cookies["sm_session"]

        # the page's requests, fired at once, all land in the page's session
        async def click() -> None:
            assert (await c.post("/sm/counter/increment", headers=JSON)).status_code == 200

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(click)
        assert c.cookies["sm_session"] == session
        assert "&quot;count&quot;:5" in (await c.get("/")).text
        assert "set-cookie" not in (await c.get("/")).headers  # a known session is left alone


class FullDisk(MemoryStore):
    """A store whose writes fail, as a full disk or a lost database would."""

    def _write(self, entity: type[Entity], key: tuple[str, str], state: dict) -> None:
        raise OSError("no space left on device")


async def test_a_failed_save_is_a_500_and_nothing_is_published() -> None:
    backend = ClosingMemory()
    sm = StarModel(entities=ENTITIES, secret_key="k", stores={"memory": FullDisk()}, broadcast=backend)
    async with backend.subscribe("sm:shared:global") as messages:
        async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
            r = await c.post("/shared/bump", headers=JSON)
            assert r.status_code == 500 and "space" not in r.text
            assert (await c.get("/shared", headers=JSON)).json() == {"total": 0}
        with anyio.move_on_after(0.2) as waited:
            await anext(aiter(messages))
        assert waited.cancelled_caught  # no message came

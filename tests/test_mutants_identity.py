"""Sessions and users as a caller sees them: the behaviours mutation testing (issue 19 point 11) found
no test for in ``identity.py``: which attribute keys a user, the cookie's ``Secure`` flag, bytes keys,
a host session holding a stray value, and ``SessionCookieMiddleware`` passing everything else through."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from itsdangerous import Signer
from starlette.applications import Starlette
from starlette.authentication import BaseUser
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from starmodel_asgi import Entity, SessionCookieMiddleware, StarModel, event
from starmodel_asgi.identity import default_user
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON

pytestmark = pytest.mark.anyio


class Visits(Entity):
    count: int = 0

    @event
    def visit(self) -> None:
        self.count += 1


def transport(app: Any, base_url: str = "http://t") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(app), base_url=base_url)


# -- which attribute of scope["user"] keys scope="user" entities --------------------------------------


class User:
    """A host's user object with whichever of the keying attributes a test gives it."""

    is_authenticated = True

    def __init__(self, **attrs: Any) -> None:
        for name, value in attrs.items():
            setattr(self, name, value)


class NoIdentity(BaseUser):
    """Starlette's BaseUser leaves ``identity`` unimplemented (it raises NotImplementedError)."""

    is_authenticated = True  # type: ignore[assignment]
    id = 5


class Plain:
    """A user object that does not say whether it is authenticated: it counts as a user."""

    id = 3


def test_the_user_is_keyed_by_identity_then_pk_then_id_then_username() -> None:
    assert default_user({"user": User(identity="i", pk="p", id="d", username="u")}) == "i"
    assert default_user({"user": User(pk="p", id="d", username="u")}) == "p"
    assert default_user({"user": User(id="d", username="u")}) == "d"
    assert default_user({"user": User(username="u")}) == "u"


def test_an_empty_or_unimplemented_attribute_falls_through_to_the_next() -> None:
    assert default_user({"user": User(identity="", id=9)}) == "9"
    assert default_user({"user": NoIdentity()}) == "5"
    assert default_user({"user": Plain()}) == "3"


def test_a_user_with_nothing_to_key_by_is_told_how_to_fix_it() -> None:
    class Anonymous:
        is_authenticated = True

    with pytest.raises(TypeError) as raised:
        default_user({"user": Anonymous()})
    assert str(raised.value) == (
        "Anonymous has no identity, pk, id or username to key scope='user' entities by: "
        "give it one, or pass StarModel(get_user=...)"
    )


# -- the session cookie ----------------------------------------------------------------------------


async def test_a_bytes_secret_key_signs_sessions() -> None:
    sm = StarModel([Visits], secret_key=b"bytes-key")
    async with transport(sm) as c:
        assert (await c.post("/visits/visit", headers=JSON)).json() == {"count": 1}
        assert (await c.post("/visits/visit", headers=JSON)).json() == {"count": 2}


def test_an_empty_secret_key_is_refused_with_the_reason() -> None:
    for empty in ("", [], ["k", b""]):
        with pytest.raises(ValueError) as raised:
            StarModel([Visits], secret_key=empty)
        assert str(raised.value) == "secret_key must be a non-empty key, or a list of them (newest first)"


def test_cookies_are_signed_the_documented_way_and_no_other() -> None:
    """Cookies from an earlier deployment with the same key keep their session (HMAC-SHA256, salt
    ``starmodel-session``); a value signed with the same key for another purpose (itsdangerous'
    default salt, or SHA-1) is no session."""
    signer = StarModel([Visits], secret_key="k").sessions.signer
    ours = Signer(b"k", salt="starmodel-session", digest_method=hashlib.sha256).sign("abc").decode()
    assert signer.unsign(ours) == "abc"
    assert signer.sign("abc") == ours
    for other in (
        Signer(b"k", digest_method=hashlib.sha256),
        Signer(b"k", salt="starmodel-session"),
        Signer(b"k"),
    ):
        assert signer.unsign(other.sign("abc").decode()) is None


@pytest.mark.parametrize(
    ("cookie_secure", "base_url", "secure"),
    [
        (None, "https://t", True),  # unset: follows the request's scheme
        (None, "http://t", False),
        (False, "https://t", False),  # set: as set, whatever the scheme
        (True, "http://t", True),
    ],
)
async def test_the_cookie_is_secure_as_configured_or_as_the_scheme_says(
    cookie_secure: bool | None, base_url: str, secure: bool
) -> None:
    sm = StarModel([Visits], secret_key="k", cookie_secure=cookie_secure)
    async with transport(sm, base_url) as c:
        response = await c.post("/visits/visit", headers=JSON)
    header = response.headers["set-cookie"]
    assert header.endswith("; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400" + ("; Secure" if secure else ""))


async def test_a_host_session_holding_a_non_string_id_gets_a_new_session() -> None:
    """A host session whose ``starmodel_sid`` is not a string (another app wrote it) is no session:
    a new id is made, kept in the host session, and used from then on."""
    sm = StarModel([Visits], secret_key="k")
    session: dict[str, Any] = {"starmodel_sid": 12345}

    async def with_host_session(scope: Scope, receive: Receive, send: Send) -> None:
        await sm({**scope, "session": session}, receive, send)

    async with transport(with_host_session) as c:
        first = await c.post("/visits/visit", headers=JSON)
        assert first.json() == {"count": 1} and "set-cookie" not in first.headers
        sid = session["starmodel_sid"]
        assert isinstance(sid, str) and sid
        assert (await c.post("/visits/visit", headers=JSON)).json() == {"count": 2}
        assert session["starmodel_sid"] == sid


# -- SessionCookieMiddleware -----------------------------------------------------------------------


async def probe(request: Request) -> JSONResponse:
    body = (await request.body()).decode()
    return JSONResponse({"cookies": request.cookies, "probe": request.headers.get("x-probe"), "body": body})


def host_with_middleware() -> tuple[StarModel, Starlette]:
    sm = StarModel([Visits], secret_key="k")
    host = Starlette(
        routes=[Route("/probe", probe, methods=["POST"]), Mount("/sm", app=sm)],
        middleware=[Middleware(SessionCookieMiddleware, sm=sm)],
    )
    return sm, host


async def test_the_middleware_keeps_the_first_requests_cookies_headers_and_body() -> None:
    """A first visit that already has other cookies: the page sees them, its other headers and its
    body unchanged, plus the new session cookie that the answer then sets."""
    sm, host = host_with_middleware()
    async with transport(host) as c:
        response = await c.post("/probe", content=b"a=1", headers={"x-probe": "here", "cookie": "theme=dark; lang=fr"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"  # the page's own headers are kept
    seen = response.json()
    assert seen["probe"] == "here" and seen["body"] == "a=1"
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith("sm_session=")
    given = set_cookie.split(";", 1)[0].split("=", 1)[1]
    assert seen["cookies"] == {"theme": "dark", "lang": "fr", "sm_session": given}
    assert sm.sessions.signer.unsign(given) is not None


async def test_the_middleware_passes_lifespan_and_host_sessions_through_untouched() -> None:
    sm = StarModel([Visits], secret_key="k")
    seen: list[tuple[Scope, Message]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        seen.append((scope, message))
        if scope["type"] == "lifespan":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    wrapped = SessionCookieMiddleware(inner, sm=sm)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    lifespan: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

    async def startup() -> Message:
        return {"type": "lifespan.startup"}

    await wrapped(lifespan, startup, send)
    assert seen == [(lifespan, {"type": "lifespan.startup"})]
    assert sent == [{"type": "lifespan.startup.complete"}]

    seen.clear()
    sent.clear()
    http: Scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "session": {}}

    async def request() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await wrapped(http, request, send)
    assert seen == [(http, {"type": "http.request", "body": b"", "more_body": False})]
    assert sent[0] == {"type": "http.response.start", "status": 204, "headers": []}  # no cookie of ours


async def test_the_middleware_sets_the_cookie_on_an_answer_that_has_no_headers() -> None:
    """ASGI lets ``http.response.start`` leave out ``headers``: the cookie is still set."""
    sm = StarModel([Visits], secret_key="k")

    async def bare_page(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": json.dumps("ok").encode()})

    async with transport(SessionCookieMiddleware(bare_page, sm=sm)) as c:
        response = await c.get("/")
    assert response.json() == "ok"
    assert sm.sessions.signer.unsign(c.cookies["sm_session"]) is not None


async def test_the_middleware_hands_on_one_cookie_header_and_a_lowercase_set_cookie() -> None:
    """Several ``cookie`` headers (as HTTP/2 sends them) become one, the session's last; the answer's
    ``set-cookie`` name is lowercase, as ASGI and HTTP/2 want."""
    sm = StarModel([Visits], secret_key="k")
    seen: list[list[bytes]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append([v for k, v in scope["headers"] if k == b"cookie"])
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-page", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    wrapped = SessionCookieMiddleware(inner, sm=sm)
    for given in ([b"theme=dark", b"lang=fr"], []):
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)  # noqa: B023 (awaited before the loop moves on)

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        headers = [(b"host", b"t"), *[(b"cookie", value) for value in given]]
        await wrapped({"type": "http", "method": "GET", "path": "/", "headers": headers}, receive, send)
        (cookie_header,) = seen.pop()
        names = [name for name, _ in sent[0]["headers"]]
        assert names == [b"x-page", b"set-cookie"]
        set_cookie = dict(sent[0]["headers"])[b"set-cookie"].decode()
        pair = set_cookie.split(";", 1)[0].encode()
        assert cookie_header == b"; ".join([*given, pair])

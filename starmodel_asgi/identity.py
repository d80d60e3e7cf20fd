"""Who is calling: the app's own signed session cookie (or the host's session), its middleware, and
the default user hook for ``scope="user"``."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any, Protocol

from itsdangerous import BadSignature, Signer
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Our session id inside a host's session (``scope["session"]``), and the user it was made for.
HOST_SESSION_KEY = "starmodel_sid"
HOST_USER_KEY = "starmodel_user"


class SessionSigner:
    """Signs session ids with itsdangerous (HMAC-SHA256). ``secret_key`` may be a list, newest
    first: new cookies are signed with the first key, cookies signed with any of them verify (key
    rotation; a cookie signed with an older key is signed again with the first on its next answer,
    so the old key can be dropped once every visitor has been back). A value that does not verify
    is no session at all."""

    def __init__(self, secret_key: str | bytes | Sequence[str | bytes], cache_size: int = 10_000) -> None:
        given = [secret_key] if isinstance(secret_key, (str, bytes)) else list(secret_key)
        keys = [key.encode() if isinstance(key, str) else key for key in given]
        if not keys or not all(keys):
            raise ValueError("secret_key must be a non-empty key, or a list of them (newest first)")
        # itsdangerous takes the keys oldest first and signs with the last
        self._signer = Signer(list(reversed(keys)), salt="starmodel-session", digest_method=hashlib.sha256)
        self._rotator = Signer(keys[0], salt="starmodel-rotate", digest_method=hashlib.sha256)
        self._taggers = [Signer(key, salt="starmodel-user", digest_method=hashlib.sha256) for key in keys]
        self._tags: dict[str, tuple[str, ...]] = {}  # user id -> its tag under each key, newest first
        self._verified: dict[str, tuple[str, str, str]] = {}  # cookie value -> (sid, user, value now)
        self._cache_size = cache_size

    def sign(self, session_id: str) -> str:
        return self._signer.sign(session_id).decode()

    def unsign(self, value: str | None) -> str | None:
        verified = self.verify(value)
        return None if verified is None else verified[0]

    def verify(self, value: str | None) -> tuple[str, str, str] | None:
        """The session id a cookie value carries, the user tag it was made for, and the value
        to send back (the same, or signed again with the newest key); ``None`` when it does not
        verify."""
        if not value or "." not in value:
            return None
        known = self._verified.get(value)
        if known is not None:
            return known
        try:
            payload = self._signer.unsign(value).decode()
        except (BadSignature, UnicodeError):
            return None
        session_id, _, user = payload.partition(":")
        if not session_id:
            return None
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        known = self._verified[value] = (session_id, user, self.sign(payload))
        return known

    @staticmethod
    def new_session_id() -> str:
        return secrets.token_urlsafe(24)

    def user_tags(self, user_id: str | None) -> tuple[str, ...]:
        """What a session remembers of the user it was made for, under each key (newest first;
        ``("",)`` for nobody): a keyed hash, so a cookie does not tell whose it is."""
        if user_id is None:
            return ("",)
        tags = self._tags.get(user_id)
        if tags is None:
            if len(self._tags) >= self._cache_size:
                self._tags.clear()
            tags = self._tags[user_id] = tuple(t.get_signature(user_id).decode()[:24] for t in self._taggers)
        return tags

    def rotated(self, session_id: str, user: str) -> str:
        """The session id that follows ``session_id`` once ``user`` (a user tag) signs in or
        out: unguessable without the key, and the same for every request that finds the change, so
        a page's concurrent requests after a sign-in all land in one new session."""
        return self._rotator.get_signature(f"{session_id}:{user}").decode()


#: The caller's session: its id, the ``Set-Cookie`` to send (``None`` under a host session), and,
#: when the user changed since the session was made, the session it replaces and whether its
#: state goes along (a sign-in) or is dropped (a sign-out, another user).
Resolved = tuple[str, str | None, str | None, bool]


def default_user(scope: Mapping[str, Any]) -> str | None:
    """The user id from ``scope["user"]`` as host auth middleware sets it (Starlette's
    ``AuthenticationMiddleware``, Django's ``AuthMiddleware`` via ``contrib.django``, or a plain
    string). Unauthenticated users are no user."""
    user = scope.get("user")
    if user is None:
        return None
    if isinstance(user, str):
        return user or None
    if not getattr(user, "is_authenticated", True):
        return None
    for attr in ("identity", "pk", "id", "username"):  # never display_name: two users may share one
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:  # starlette's BaseUser leaves identity to subclasses
            continue
        if value not in (None, ""):
            return str(value)
    raise TypeError(
        f"{type(user).__name__} has no identity, pk, id or username to key scope='user' entities by: "
        "give it one, or pass StarModel(get_user=...)"
    )


class Connection(Protocol):
    """What sessions read of a request (Starlette's ``HTTPConnection`` has both)."""

    @property
    def scope(self) -> Scope: ...

    @property
    def cookies(self) -> Mapping[str, str]: ...


class Sessions:
    """The caller's session id: kept in the host's session when the host has one
    (``scope["session"]``, e.g. Starlette's ``SessionMiddleware``), else in our signed cookie."""

    def __init__(self, signer: SessionSigner, cookie_name: str, ttl: float | None, secure: bool | None) -> None:
        self.signer, self.cookie_name, self.ttl, self.secure = signer, cookie_name, ttl, secure

    def known(self, conn: Connection, user_id: str | EllipsisType | None = ...) -> str | None:
        """The caller's session id, if it has one already (given ``user_id``: not one made for
        another user, which the caller's next request replaces)."""
        sid, user = self._stored(conn)
        if sid is None or user_id is ... or user == "" or user in self.signer.user_tags(user_id):
            return sid
        return None

    def _stored(self, conn: Connection) -> tuple[str | None, str]:
        """The session id the caller brings and the user tag it was made for."""
        host_session = conn.scope.get("session")
        if isinstance(host_session, dict):
            sid, user = host_session.get(HOST_SESSION_KEY), host_session.get(HOST_USER_KEY, "")
            return (sid if isinstance(sid, str) else None), (user if isinstance(user, str) else "")
        verified = self.signer.verify(conn.cookies.get(self.cookie_name))
        return (None, "") if verified is None else verified[:2]

    def resolve(self, conn: Connection, user_id: str | None = None) -> Resolved:
        """The caller's session, made up if it has none, and replaced by a new one when the user
        changed since it was made (session fixation: whoever knew the old id does not know the
        new one). Every use renews the cookie, so its lifetime slides."""
        tags = self.signer.user_tags(user_id)
        user = tags[0]
        host_session = conn.scope.get("session")
        if isinstance(host_session, dict):
            sid, made_for = self._stored(conn)
            if sid is not None and made_for in tags:
                return sid, None, None, False
            new = SessionSigner.new_session_id() if sid is None else self.signer.rotated(sid, user)
            host_session[HOST_SESSION_KEY], host_session[HOST_USER_KEY] = new, user
            return new, None, sid, sid is not None and made_for == ""
        verified = self.signer.verify(conn.cookies.get(self.cookie_name))
        if verified is None:
            sid = SessionSigner.new_session_id()
            return sid, self.set_cookie(conn.scope, sid, user=user), None, False
        sid, made_for, value = verified
        if made_for in tags:
            return sid, self.set_cookie(conn.scope, sid, value), None, False
        new = self.signer.rotated(sid, user)
        return new, self.set_cookie(conn.scope, new, user=user), sid, made_for == ""

    def set_cookie(self, scope: Scope, sid: str, signed: str | None = None, user: str = "") -> str:
        """The ``Set-Cookie`` value carrying ``sid`` made for ``user`` (a user tag; ``signed``:
        the cookie value, when known)."""
        secure = self.secure
        if secure is None:
            secure = scope.get("scheme") in ("https", "wss")
        value = signed or self.signer.sign(f"{sid}:{user}" if user else sid)
        cookie = f"{self.cookie_name}={value}; Path=/; HttpOnly; SameSite=Lax"
        if self.ttl:
            cookie += f"; Max-Age={int(self.ttl)}"
        return cookie + ("; Secure" if secure else "")


class HasSessions(Protocol):
    sessions: Sessions


class SessionCookieMiddleware:
    """Host middleware that gives a browser the app's session cookie on the page itself.

    Without it, a first visit's page starts its requests (a holder's fetch, a live stream, a
    second holder) with no cookie at once, and each gets a session of its own. Add it to the host:
    ``Starlette(..., middleware=[Middleware(SessionCookieMiddleware, sm=sm)])``,
    ``app.add_middleware(SessionCookieMiddleware, sm=sm)``, or wrap any ASGI app with it.
    """

    def __init__(self, app: ASGIApp, sm: HasSessions) -> None:
        self.app, self.sessions = app, sm.sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or isinstance(scope.get("session"), dict):
            await self.app(scope, receive, send)
            return
        if self.sessions.known(HTTPConnection(scope)) is not None:
            await self.app(scope, receive, send)
            return
        sid = SessionSigner.new_session_id()
        pair = f"{self.sessions.cookie_name}={self.sessions.signer.sign(sid)}".encode("latin-1")
        raw = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")
        headers = [(k, v) for k, v in scope["headers"] if k != b"cookie"]  # the last value of a name wins
        scope = {**scope, "headers": [*headers, (b"cookie", raw + b"; " + pair if raw else pair)]}
        set_cookie = (b"set-cookie", self.sessions.set_cookie(scope, sid).encode("latin-1"))

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), set_cookie]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

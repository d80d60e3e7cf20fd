"""StarModel: the ASGI app that routes requests to entity events and answers them."""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starmodel_asgi.broadcast import Broadcast, broadcast_from_url
from starmodel_asgi.dispatch import Dispatcher
from starmodel_asgi.entity import GLOBAL_KEY, STORES, Entity
from starmodel_asgi.events import EventDescriptor
from starmodel_asgi.formatters import Formatter, default_formatters
from starmodel_asgi.http import EventError, EventRequest, Signals, Update
from starmodel_asgi.identity import SessionSigner, default_user
from starmodel_asgi.live import LiveResponse, Views
from starmodel_asgi.responses import UpdatesResponse
from starmodel_asgi.stores import Store

logger = logging.getLogger("starmodel_asgi")

#: ``get_user``: the caller's user id or ``None``; may be async (``contrib.django.django_user`` is).
UserGetter = Callable[[Request], str | Awaitable[str | None] | None]
#: ``authorize(request, entity, event)``: ``event`` is the event's name, ``"delete"``, or ``None`` for
#: reads, lists, creates and live streams; may be async. ``False`` answers 403.
Authorize = Callable[[EventRequest, type[Entity], str | None], bool | Awaitable[bool]]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
JSON_TYPES = ("application/json", "text/json")
HOST_SESSION_KEY = "starmodel_sid"  # our session id inside a host's session (scope["session"])


def record_key(entity: type[Entity], key: str) -> str:
    """A record id from the path: at most 200 printable characters, or no such record."""
    if len(key) > 200 or not key.isprintable():
        raise EventError(404, f"No {entity.entity_name()} with that id", entity.entity_name())
    return key


def not_allowed(entity: type[Entity], request: Request, allow: str) -> EventError:
    return EventError(405, f"{request.method} not allowed here", entity.entity_name(), headers={"Allow": allow})


class StarModel:
    """The ASGI app: mount it anywhere (``app.mount("/sm", StarModel(entities=[...]))``).

    ``database_url`` serves ``store="sql"`` (default: a SQLite file), ``redis_url`` serves
    ``store="redis"``, ``broadcast_url`` picks the live-update backend by scheme.
    ``datastar_error_status=200`` answers Datastar requests' errors with that status instead of
    4xx/5xx, so the browser applies the ``_error``/``_errors`` signals (it ignores non-200 bodies).
    """

    def __init__(
        self,
        entities: Iterable[type[Entity]],
        base_path: str = "/sm",
        secret_key: str | bytes | None = None,
        database_url: str | None = None,
        redis_url: str | None = None,
        broadcast_url: str | None = None,
        *,
        broadcast: Broadcast | None = None,
        stores: dict[str, Store] | None = None,
        formatters: Sequence[Formatter] | None = None,
        session_ttl: float | None = 24 * 3600,
        max_body_size: int = 1024 * 1024,
        cookie_name: str = "sm_session",
        cookie_secure: bool | None = None,
        get_user: UserGetter | None = None,
        authorize: Authorize | None = None,
        trusted_origins: Iterable[str] = (),
        keepalive: float = 15.0,
        list_limit: int = 100,
        datastar_error_status: int | None = None,
    ) -> None:
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.entities: dict[str, type[Entity]] = {}
        for entity in entities:
            self._register(entity)
        if secret_key is None:
            secret_key = os.environ.get("STARMODEL_SECRET_KEY")
        if secret_key is None:
            logger.warning(
                "StarModel has no secret_key: sessions are signed with a random key and will not "
                "survive a restart nor be shared between workers"
            )
            secret_key = SessionSigner.new_session_id()
        self.signer = SessionSigner(secret_key)
        self.database_url = (
            database_url or os.environ.get("STARMODEL_DATABASE_URL") or "sqlite+aiosqlite:///starmodel.db"
        )
        self.redis_url = redis_url or os.environ.get("STARMODEL_REDIS_URL") or "redis://127.0.0.1:6379/0"
        self.broadcast = broadcast or broadcast_from_url(broadcast_url or "memory://")
        self._stores: dict[str, Store] = dict(stores or {})
        self.formatters = list(formatters) if formatters is not None else default_formatters()
        self.session_ttl = session_ttl
        self.max_body_size = max_body_size
        self.cookie_name = cookie_name
        self.cookie_secure = cookie_secure
        self.get_user = get_user or (lambda request: default_user(request.scope))
        self.authorize = authorize
        self.trusted_origins = {o.rstrip("/") for o in trusted_origins}
        self.keepalive = keepalive
        self.list_limit = list_limit
        self.datastar_error_status = datastar_error_status
        self.live_views = Views()
        self.dispatcher = Dispatcher(self.store_for, self.broadcast)
        self.router = Router(
            [
                Route("/{entity}", self._guarded(self._root), methods=ALL_METHODS),
                Route("/{entity}/{a}", self._guarded(self._one), methods=ALL_METHODS),
                Route("/{entity}/{a}/{b}", self._guarded(self._two), methods=ALL_METHODS),
            ],
            default=self._not_found,
            redirect_slashes=False,
        )

    def _register(self, entity: type[Entity]) -> None:
        name = entity.entity_name()
        if name in self.entities:
            raise ValueError(f"two entities are named {name!r}")
        if entity.entity_store() not in STORES:
            raise ValueError(f"{entity.__name__}: store must be one of {STORES}")
        if entity.entity_scope() == "record" and entity.entity_store() == "client":
            raise ValueError(f"{entity.__name__}: record entities need a server store, not 'client'")
        for segment in entity.events():
            if "/" in segment or segment == "live":
                raise ValueError(f"{entity.__name__}: event path {segment!r} must be one URL segment, not 'live'")
        entity.__starmodel_base__ = self.base_path
        self.entities[name] = entity

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):  # /counter/increment/ (Litestar's mounts add it)
                scope = {**scope, "path": path[:-1]}
            await self.router(scope, receive, send)
        else:  # websockets: nothing here speaks them
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """For hosts that run a lifespan: ``FastAPI(lifespan=sm.lifespan)``. Everything also
        starts lazily without it; this only closes connections in order at shutdown."""
        try:
            yield
        finally:
            await self.aclose()

    async def current(self, entity: type[Entity], request: Request, id: str | None = None) -> Entity:
        """The instance the caller of a host page sees, to render it (``Counter.holder(instance)``)
        so the page starts in sync. A caller without a session yet sees the defaults."""
        scope = entity.entity_scope()
        if scope == "record":
            if id is None:
                raise TypeError(f"{entity.__name__} is a record entity: pass id=...")
            return await self.dispatcher.read(entity, id, must_exist=True)
        if scope == "global":
            return await self.dispatcher.read(entity, GLOBAL_KEY)
        key = await self._user_id(request) if scope == "user" else self.known_session(request)
        return entity() if key is None else await self.dispatcher.read(entity, key)

    async def aclose(self) -> None:
        """Close what the app opened: store connections and the broadcast backend."""
        backends: list[tuple[str, Store | Broadcast]] = [*self._stores.items(), ("broadcast", self.broadcast)]
        for name, closable in backends:
            try:
                await closable.aclose()
            except Exception:
                logger.exception("closing the %s backend failed", name)

    # -- stores ---------------------------------------------------------------------------

    def store_for(self, entity: type[Entity]) -> Store:
        kind = entity.entity_store()
        store = self._stores.get(kind)
        if store is None:
            store = self._stores[kind] = self._make_store(kind)
        return store

    def _make_store(self, kind: str) -> Store:
        if kind == "memory":
            from starmodel_asgi.stores.memory import MemoryStore

            return MemoryStore(default_ttl=self.session_ttl)
        if kind == "sql":
            from starmodel_asgi.stores.sql import SQLStore

            return SQLStore(self.database_url, default_ttl=self.session_ttl)
        if kind == "redis":
            from starmodel_asgi.stores.redis import RedisStore

            return RedisStore(self.redis_url, default_ttl=self.session_ttl)
        raise ValueError(f"no store {kind!r}")

    # -- routes ---------------------------------------------------------------------------

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self._error(request, EventError(404, "Not found"))
        await response(scope, receive, send)

    def _entity(self, request: Request) -> type[Entity]:
        name = request.path_params["entity"]
        entity = self.entities.get(name)
        if entity is None:
            raise EventError(404, f"No entity {name!r}")
        return entity

    def _guarded(self, handler: Callable[[Request, dict[str, str]], Awaitable[Response]]) -> Callable[..., Any]:
        """A route endpoint running ``handler``: errors become answers, and the headers the
        handler put in ``out`` (the session cookie) go on whatever the answer is."""

        async def endpoint(request: Request) -> Response:
            out: dict[str, str] = {}
            try:
                response = await handler(request, out)
            except EventError as exc:
                response = self._error(request, exc)
            except Exception:
                logger.exception("request %s %s failed", request.method, request.scope["path"])
                response = self._error(request, EventError(500, "Internal server error"))
            for name, value in out.items():
                response.raw_headers.append((name.encode("latin-1"), value.encode("latin-1")))
            return response

        return endpoint

    async def _root(self, request: Request, out: dict[str, str]) -> Response:
        entity = self._entity(request)
        method = request.method
        if entity.entity_scope() == "record":
            if method in ("GET", "HEAD"):
                return await self._list(request, entity)
            if method == "POST":
                call = await self._call(request, entity, out)
                await self._authorize(call, entity, None)
                instance = await self.dispatcher.create(entity, call)
                update = Update(entity.entity_name(), instance.public_state(), instance.public_state())
                # Datastar applies only 200 answers; JSON clients get the precise 201
                return self._answer(call, [update], status=200 if call.is_datastar else 201)
            raise not_allowed(entity, request, "GET, POST")
        if method not in ("GET", "HEAD"):
            raise not_allowed(entity, request, "GET")
        call = await self._call(request, entity, out)
        await self._authorize(call, entity, None)
        return await self._read(call, entity, self._key(entity, call))

    async def _one(self, request: Request, out: dict[str, str]) -> Response:
        entity = self._entity(request)
        segment = request.path_params["a"]
        if entity.entity_scope() == "record":
            if segment == "live":
                raise EventError(404, "Record streams are /{entity}/{id}/live", entity.entity_name())
            return await self._record(request, entity, record_key(entity, segment), out)
        if segment == "live":
            self._check_method(entity, request, "GET")
            call = await self._call(request, entity, out)
            await self._authorize(call, entity, None)
            return await self.live(call, entity, self._key(entity, call))
        descriptor = self._event(entity, segment, request)
        call = await self._call(request, entity, out, event=True)
        await self._authorize(call, entity, descriptor.info.name)
        return await self._run(call, entity, self._key(entity, call), descriptor)

    async def _two(self, request: Request, out: dict[str, str]) -> Response:
        entity = self._entity(request)
        if entity.entity_scope() != "record":
            raise EventError(404, "Not found", entity.entity_name())
        key, segment = record_key(entity, request.path_params["a"]), request.path_params["b"]
        if segment == "live":
            self._check_method(entity, request, "GET")
            call = await self._call(request, entity, out)
            await self._authorize(call, entity, None)
            await self.dispatcher.read(entity, key, must_exist=True)
            return await self.live(call, entity, key)
        descriptor = self._event(entity, segment, request)
        call = await self._call(request, entity, out, event=True)
        await self._authorize(call, entity, descriptor.info.name)
        return await self._run(call, entity, key, descriptor, must_exist=True)

    async def _record(self, request: Request, entity: type[Entity], key: str, out: dict[str, str]) -> Response:
        if request.method not in ("GET", "HEAD", "DELETE"):
            raise not_allowed(entity, request, "GET, DELETE")
        call = await self._call(request, entity, out)
        if request.method == "DELETE":
            await self._authorize(call, entity, "delete")
            await self.dispatcher.delete(entity, key)
            return Response(status_code=204)
        await self._authorize(call, entity, None)
        instance = await self.dispatcher.read(entity, key, must_exist=True)
        state = instance.public_state()
        return self._answer(call, [Update(entity.entity_name(), state, state)])

    async def _list(self, request: Request, entity: type[Entity]) -> Response:
        call = await self._call(request, entity, {})
        await self._authorize(call, entity, None)
        try:
            limit = int(request.query_params.get("limit", self.list_limit))
            offset = int(request.query_params.get("offset", 0))
        except ValueError:
            raise EventError(422, "limit and offset must be integers", entity.entity_name()) from None
        if not 0 < limit <= self.list_limit or offset < 0:
            raise EventError(422, f"limit must be 1..{self.list_limit}, offset >= 0", entity.entity_name())
        items = await self.dispatcher.list(entity, limit, offset)
        return Response(json.dumps([i.public_state() for i in items]), media_type="application/json")

    def _check_method(self, entity: type[Entity], request: Request, allowed: str) -> None:
        if request.method != allowed:
            raise not_allowed(entity, request, allowed)

    def _event(self, entity: type[Entity], segment: str, request: Request) -> EventDescriptor:
        descriptor = entity.events().get(segment)
        if descriptor is None:
            raise EventError(404, f"{entity.entity_name()} has no event {segment!r}", entity.entity_name())
        self._check_method(entity, request, descriptor.info.method)
        return descriptor

    async def _authorize(self, call: EventRequest, entity: type[Entity], event: str | None) -> None:
        if self.authorize is None:
            return
        allowed = self.authorize(call, entity, event)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if allowed is not True:
            if not isinstance(allowed, bool):
                raise TypeError(f"authorize must return a bool, not {type(allowed).__name__}")
            raise EventError(403, "Forbidden", entity.entity_name())

    def _key(self, entity: type[Entity], call: EventRequest) -> str:
        scope = entity.entity_scope()
        if scope == "global":
            return GLOBAL_KEY
        if scope == "user":
            if call.user_id is None:
                raise EventError(401, "Authentication required", entity.entity_name())
            return call.user_id
        assert call.session_id is not None
        return call.session_id

    # -- running ---------------------------------------------------------------------------

    async def _run(
        self,
        call: EventRequest,
        entity: type[Entity],
        key: str,
        descriptor: EventDescriptor,
        must_exist: bool = False,
    ) -> Response:
        formatter = self._formatter(call)
        updates = self.dispatcher.run(entity, key, descriptor, call, must_exist=must_exist)
        try:
            first = await updates.__anext__()
        except BaseException:
            await updates.aclose()
            raise
        if formatter.streams and (descriptor.is_async_gen or descriptor.is_sync_gen):
            return UpdatesResponse(formatter, [first], updates)
        collected = [first]
        async with aclosing(updates):
            async for update in updates:
                collected.append(update)
        return self._answer(call, collected)

    async def _read(self, call: EventRequest, entity: type[Entity], key: str) -> Response:
        if entity.entity_store() == "client":
            instance = self.dispatcher.from_client(entity, call)
        else:
            instance = await self.dispatcher.read(entity, key)
        state = instance.public_state()
        return self._answer(call, [Update(entity.entity_name(), state, state)])

    async def live(self, call: EventRequest, entity: type[Entity], key: str) -> Response:
        """``GET /{entity}/live``: the current state, then every change (see ``live.py``)."""
        if entity.entity_store() == "client":
            name = entity.entity_name()
            raise EventError(404, f"{name} lives in the browser: there is nothing to stream", name)
        formatter = self._formatter(call)
        return LiveResponse(self, formatter, entity, key)

    def _formatter(self, call: EventRequest) -> Formatter:
        for formatter in self.formatters:
            if formatter.matches(call):
                return formatter
        raise EventError(406, "No answer format for this request")

    def _answer(self, call: EventRequest, updates: list[Update], status: int = 200) -> Response:
        formatter = self._formatter(call)
        return Response(formatter.format(updates), status, formatter.headers, formatter.media_type)

    def _error(self, request: Request, error: EventError) -> Response:
        call = EventRequest(request.method, request.scope["path"], request.headers)
        try:
            formatter = self._formatter(call)
        except EventError:
            return Response(error.message, error.status, error.headers, "text/plain")
        status = error.status
        if self.datastar_error_status is not None and call.is_datastar:
            status = self.datastar_error_status  # so the Datastar client applies the error signals
        return Response(formatter.format_error(error), status, error.headers, formatter.media_type)

    # -- requests ---------------------------------------------------------------------------

    async def _call(
        self, request: Request, entity: type[Entity], out: dict[str, str], *, event: bool = False
    ) -> EventRequest:
        """Checks the origin, reads the signals and the caller's identity into an ``EventRequest``."""
        if event or request.method not in SAFE_METHODS:
            self._check_origin(request)
        signals = await self._signals(request)
        call = EventRequest(
            method=request.method,
            path=request.scope["path"],
            headers=request.headers,
            query={k: request.query_params.getlist(k) for k in request.query_params if k != "datastar"},
            signals=signals,
            raw=request,
        )
        if entity.entity_scope() == "record" and "a" in request.path_params:
            call.path_params = {"id": request.path_params["a"]}
        if entity.entity_scope() == "user":
            call.user_id = await self._user_id(request)
        if entity.entity_scope() == "session":
            call.session_id = self._session(request, out)
        return call

    async def _user_id(self, request: Request) -> str | None:
        user = self.get_user(request)
        return await user if inspect.isawaitable(user) else user

    def known_session(self, request: Request) -> str | None:
        """The caller's session id, if it has one: in the host's session, or our signed cookie."""
        host_session = request.scope.get("session")
        if isinstance(host_session, dict):
            sid = host_session.get(HOST_SESSION_KEY)
            return sid if isinstance(sid, str) else None
        return self.signer.unsign(request.cookies.get(self.cookie_name))

    def _session(self, request: Request, out: dict[str, str]) -> str:
        host_session = request.scope.get("session")
        if isinstance(host_session, dict):
            sid = self.known_session(request)
            if sid is None:
                sid = host_session[HOST_SESSION_KEY] = SessionSigner.new_session_id()
            return sid
        value = request.cookies.get(self.cookie_name)
        sid = self.signer.unsign(value)
        if sid is None:
            sid, value = SessionSigner.new_session_id(), None
        out["set-cookie"] = self._cookie(request.scope, sid, value)  # every use renews it: the TTL slides
        return sid

    def _cookie(self, scope: Scope, sid: str, signed: str | None = None) -> str:
        """The ``Set-Cookie`` value carrying ``sid`` (``signed``: its cookie value, when known)."""
        secure = self.cookie_secure
        if secure is None:
            secure = scope.get("scheme") in ("https", "wss")
        cookie = f"{self.cookie_name}={signed or self.signer.sign(sid)}; Path=/; HttpOnly; SameSite=Lax"
        if self.session_ttl:
            cookie += f"; Max-Age={int(self.session_ttl)}"
        return cookie + ("; Secure" if secure else "")

    def _check_origin(self, request: Request) -> None:
        """Refuses requests that may change state and come from another site. A cross-site form or
        link can fire a simple POST or GET; it cannot send Datastar's header or JSON without a CORS
        preflight, which this app never grants."""
        if request.headers.get("datastar-request", "").lower() == "true":
            return
        if request.headers.get("content-type", "").split(";")[0].strip() in JSON_TYPES:
            return
        origin = request.headers.get("origin")
        if origin is None:
            if request.headers.get("sec-fetch-site") == "cross-site":
                raise EventError(403, "Cross-site request refused")
            return
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc == host or origin.rstrip("/") in self.trusted_origins:
            return
        raise EventError(403, "Cross-site request refused")

    async def _signals(self, request: Request) -> Signals:
        if request.method in ("GET", "HEAD", "DELETE"):
            raw = request.query_params.get("datastar")
            return self._parse_json(raw.encode()) if raw else Signals()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_size:
            raise EventError(413, f"Request body over {self.max_body_size} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_size:
                raise EventError(413, f"Request body over {self.max_body_size} bytes")
        if not body.strip():
            return Signals()
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type == "application/x-www-form-urlencoded":
            return Signals(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return self._parse_json(bytes(body))

    @staticmethod
    def _parse_json(body: bytes) -> Signals:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise EventError(400, f"Malformed JSON: {exc}") from None
        if not isinstance(value, dict):
            raise EventError(400, "The body must be a JSON object of signals")
        return Signals(value)


class SessionCookieMiddleware:
    """Host middleware that gives a browser the app's session cookie on the page itself.

    Without it, a first visit's page starts its requests (a holder's fetch, a live stream, a
    second holder) with no cookie at once, and each gets a session of its own. Add it to the host:
    ``Starlette(..., middleware=[Middleware(SessionCookieMiddleware, sm=sm)])``,
    ``app.add_middleware(SessionCookieMiddleware, sm=sm)``, or wrap any ASGI app with it.
    """

    def __init__(self, app: ASGIApp, sm: StarModel) -> None:
        self.app, self.sm = app, sm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or isinstance(scope.get("session"), dict):
            await self.app(scope, receive, send)
            return
        if self.sm.known_session(Request(scope)) is not None:
            await self.app(scope, receive, send)
            return
        sid = SessionSigner.new_session_id()
        pair = f"{self.sm.cookie_name}={self.sm.signer.sign(sid)}".encode("latin-1")
        raw = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")
        headers = [(k, v) for k, v in scope["headers"] if k != b"cookie"]  # the last value of a name wins
        scope = {**scope, "headers": [*headers, (b"cookie", raw + b"; " + pair if raw else pair)]}
        set_cookie = (b"set-cookie", self.sm._cookie(scope, sid).encode("latin-1"))

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), set_cookie]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

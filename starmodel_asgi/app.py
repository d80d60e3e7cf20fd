"""StarModel: the ASGI app. Settings, the entities it serves, the route table, and its lifespan."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from starmodel_asgi.broadcast import Broadcast, broadcast_from_url
from starmodel_asgi.changes import Subscriber, Subscribers
from starmodel_asgi.compression import Compression
from starmodel_asgi.copying import Copying
from starmodel_asgi.depends import Provider
from starmodel_asgi.dispatch import Dispatcher
from starmodel_asgi.endpoints import Endpoints, UserGetter
from starmodel_asgi.entity import Entity, entity_class
from starmodel_asgi.errors import EventError
from starmodel_asgi.events import ActionBuilder
from starmodel_asgi.formatters import Formatter, default_formatters
from starmodel_asgi.guard import Authorize, Guard
from starmodel_asgi.health import Health
from starmodel_asgi.identity import SessionCookieMiddleware, Sessions, SessionSigner
from starmodel_asgi.incoming import Incoming
from starmodel_asgi.live import Live
from starmodel_asgi.logs import APP, get_logger
from starmodel_asgi.openapi import openapi_json
from starmodel_asgi.operations import Operations, observer
from starmodel_asgi.outbox import Outbox
from starmodel_asgi.presence import Presence
from starmodel_asgi.records import Records, records
from starmodel_asgi.responses import Answers
from starmodel_asgi.routing import Wiring, route_path
from starmodel_asgi.settings import SETTINGS, UNSET, SchemaMode, Settings, settings
from starmodel_asgi.spec import GLOBAL_KEY, EntitySpec, StoreKind, build_spec, instance_key, serve
from starmodel_asgi.stores import Store, store_from_kind

__all__ = ["SessionCookieMiddleware", "StarModel"]

logger = get_logger(APP)

E = TypeVar("E", bound=Entity)


class StarModel(Operations, Copying, Records):
    """The ASGI app: mount it anywhere (``app.mount("/sm", StarModel(entities=[...]))``).

    Each setting is described in the [App settings](../settings.md) page of the docs
    (``docs/settings.md``). Every one is checked here: a bad entity, a bad value or a missing extra
    fails when the app is built, not on a request.
    """

    def __init__(
        self,
        entities: type[Entity] | Iterable[type[Entity]],
        base_path: str = "/sm",
        secret_key: str | bytes | Sequence[str | bytes] | None = UNSET,
        database_url: str | None = UNSET,
        redis_url: str | None = UNSET,
        broadcast_url: str | None = UNSET,
        *,
        broadcast: Broadcast | None = None,
        stores: dict[str, Store] | None = None,
        formatters: Sequence[Formatter] | None = None,
        session_ttl: float | None = UNSET,
        max_body_size: int = UNSET,
        body_timeout: float = UNSET,
        send_timeout: float = UNSET,
        cookie_name: str = "sm_session",
        cookie_secure: bool | None = None,
        get_user: UserGetter | None = None,
        authorize: Authorize | None = None,
        trusted_origins: Iterable[str] = UNSET,
        keepalive: float = UNSET,
        presence_interval: float = UNSET,
        compress: bool | None = UNSET,
        list_limit: int = UNSET,
        datastar_error_status: int | None = None,
        nested_wait: float = 2.0,
        max_background: int = UNSET,
        slow_event: float | None = UNSET,
        health_timeout: float = UNSET,
        metrics: bool | Any = UNSET,
        tracing: bool | None = UNSET,
        schema: SchemaMode = UNSET,
    ) -> None:
        given = locals()  # the deployment settings as given in code (the others: environment, defaults)
        self.settings = s = settings(**{name: given[name] for name in SETTINGS})
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.list_limit, self.database_url, self.redis_url = s.list_limit, s.database_url, s.redis_url
        self.session_ttl = s.session_ttl
        self.specs: dict[str, EntitySpec] = {}
        for entity in entity_classes(entities):
            self._register(entity)
        self.entities: dict[str, type[Entity]] = {name: entity_class(spec) for name, spec in self.specs.items()}
        self._stores = _stores(stores or {}, {spec.store for spec in self.specs.values() if not spec.in_browser}, s)
        self.broadcast = _linked(self._stores.values(), broadcast or broadcast_from_url(s.broadcast_url))
        self.sessions = Sessions(_signer(s.secret_key), cookie_name, s.session_ttl, cookie_secure)
        #: ``sm.dependency_overrides[get_mailer] = fake``: a provider replaced (tests, ``testing.Page``)
        self.dependency_overrides: dict[Provider, Provider] = {}
        subscribers = Subscribers(self.dependency_overrides)
        self.dispatcher = Dispatcher(self.store_for, self.broadcast, subscribers, nested_wait, s.max_background)
        self.presence = Presence(self.broadcast, s.presence_interval)
        self.endpoints = Endpoints(
            dispatcher=self.dispatcher,
            live=Live(self.dispatcher, self.broadcast, s.keepalive, presence=self.presence),
            answers=Answers(
                formatters if formatters is not None else default_formatters(),
                datastar_error_status,
                Compression(s.compress),
                s.send_timeout,
            ),
            sessions=self.sessions,
            get_user=get_user,
            guard=Guard(authorize),
            trusted_origins=s.trusted_origins,
            max_body_size=s.max_body_size,
            body_timeout=s.body_timeout,
            session_specs=[spec for spec in self.specs.values() if spec.scope == "session" and not spec.in_browser],
            list_limit=s.list_limit,
            app=self,
            overrides=self.dependency_overrides,
        )
        self.route_table = self.endpoints.routes(self.specs.values())
        self.observer = observer(s, self.endpoints)
        #: ``await sm.health()``: what ``GET /health`` answers (an entity named ``health`` takes that path)
        self.health = Health(self._stores, self.broadcast, s.health_timeout, shadowed="health" in self.specs)
        self._openapi: dict[str, bytes] = {}  # GET /openapi.json by mount path, built on first use
        self.wiring = Wiring(self.base_path)  # mistakes seen in requests, logged once with their fix

    def _register(self, entity: type[Entity]) -> None:
        spec = build_spec(entity, self.base_path, self.list_limit)
        if spec.name in self.specs:
            raise ValueError(f"two entities are named {spec.name!r}: give one model_config name=...")
        self.specs[spec.name] = spec
        serve(entity, spec)  # the class-level action builder points here

    @property
    def routes(self) -> list[Any]:
        """Nothing for a host's tooling to walk: Starlette's ``Mount`` (and ``url_for``, and
        instrumentation that lists routes) looks here; this app resolves its own paths."""
        return []

    def spec(self, entity: type[Entity]) -> EntitySpec:
        """The spec this app serves ``entity`` with."""
        spec = next((spec for spec in self.specs.values() if spec.entity is entity), None)
        if spec is None:
            raise LookupError(f"{entity.__name__} is not one of this app's entities: add it to StarModel(entities=...)")
        return spec

    def store_for(self, spec: EntitySpec) -> Store:
        """The store that keeps ``spec``'s entity (given in ``stores=`` or built from the URLs);
        ``LookupError`` for ``store="client"`` entities, whose state is kept in the page."""
        store = self._stores.get(spec.store)
        if store is None:
            raise LookupError(f'{spec.entity.__name__}: store="{spec.store}" is kept in the page, not on the server')
        return store

    def action(self, builder: ActionBuilder[...], id: str | int | None = None, **params: Any) -> str:
        """``sm.action(Counter.increment, amount=1)``: the action as this app serves it, for an
        entity class that several apps serve (``Counter.increment(amount=1)`` does the usual case)."""
        spec = self.spec(event_owner(builder))
        return builder.at(spec)(id, **params)

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.aclose)
        elif scope["type"] == "http":
            incoming = Incoming(scope, receive)
            self.wiring.check_mount(scope)
            path = route_path(scope)
            if path == "/openapi.json":
                root = scope.get("root_path", "")
                if root not in self._openapi:
                    self._openapi = {
                        **dict(list(self._openapi.items())[-7:]),
                        root: openapi_json(self.specs.values(), root),
                    }
                await Response(self._openapi[root], media_type="application/json")(scope, receive, send)
                return
            found = self.route_table.resolve(path)
            if found is not None:
                await self.observer(incoming, *found, receive, send)
                return
            if path == "/health" and incoming.method in ("GET", "HEAD"):
                response = await self.health.response()
            else:
                response = self.endpoints.error(incoming, self.wiring.not_found(self.specs, path))
            await response(scope, receive, send)
        else:  # websockets: nothing here speaks them
            await send({"type": "websocket.close", "code": 1000})

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """For hosts that run a lifespan: ``FastAPI(lifespan=sm.lifespan)``. Everything also
        starts lazily without it; this only closes connections in order at shutdown."""
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close what the app opened, in order: waiting live messages, presence, stores, broadcast."""
        backends: list[tuple[str, Store | Broadcast | Presence | Outbox]] = [
            ("outbox", self.dispatcher.outbox),
            ("presence", self.presence),
            *self._stores.items(),
            ("broadcast", self.broadcast),
        ]
        for name, closable in backends:
            try:
                await closable.aclose()
            except Exception:
                logger.exception("closing the %s backend failed", name)

    # -- host pages ---------------------------------------------------------------------

    async def current(self, entity: type[E], request: Request, id: str | None = None) -> E:
        """The instance the caller of a host page sees, to render it (``Counter.holder(instance)``)
        so the page starts in sync. A caller without a session yet sees the defaults."""
        spec = self.spec(entity)
        if spec.is_record and id is None:
            raise TypeError(f"{entity.__name__} is a record entity: pass id=...")
        user = await self.endpoints.user_id(request) if spec.scope in ("user", "session") else None
        key = instance_key(spec, id, user, self.sessions.known(request, user) if spec.scope == "session" else None)
        if key is None:
            return entity()
        try:
            instance = await self.dispatcher.read(spec, key, must_exist=spec.is_record)
        except EventError as exc:
            raise LookupError(exc.message) from None
        assert isinstance(instance, entity)
        return instance

    # -- the server side: the same locks, stores, validation, live pushes and subscribers as events

    @asynccontextmanager
    async def edit(self, entity: type[E], key: str | None = None) -> AsyncIterator[E]:
        """``async with sm.edit(Counter) as counter: counter.count += 1``: the instance under the
        lock its events use; saved and pushed live on a clean exit, untouched if the block raises.
        ``key`` is the session id, user id or record id (``None`` for a global entity); a missing
        record raises ``LookupError``."""
        spec = self.spec(entity)
        async with self.dispatcher.edit(spec, _key(spec, key, "edit")) as instance:
            assert isinstance(instance, entity)
            yield instance

    async def get(self, entity: type[E], key: str | None = None) -> E:
        """The instance as saved (defaults for a session or user that has none yet)."""
        spec = self.spec(entity)
        instance = await self.dispatcher.read(spec, _key(spec, key, "get"), must_exist=spec.is_record)
        assert isinstance(instance, entity)
        return instance

    async def create(self, entity: type[E], **fields: Any) -> E:
        """``await sm.create(Product, name="Lamp")``: a new record, validated and saved, with its ``id``
        (made up, or ``id="..."`` when moving data in: ``ValueError``, 409 over HTTP, if it exists)."""
        spec = records(self.spec(entity), "create")
        instance = await self.dispatcher.create(spec, **fields)
        assert isinstance(instance, entity)
        return instance

    async def delete(self, entity: type[E], key: str) -> None:
        """Deletes a record (its live pages are told); ``LookupError`` if there is none."""
        await self.dispatcher.delete(records(self.spec(entity), "delete"), key)

    def on(self, entity: type[Entity] | None = None, event: str | None = None) -> Callable[[Subscriber], Subscriber]:
        """``@sm.on(Task)``, ``@sm.on(Task, "toggle")`` or ``@sm.on()`` (every entity): ``fn(change)``,
        sync or async, is called once per committed change (of that event only, if named), after
        the commit, in the process that made it (at most once); its exceptions are logged."""
        if entity is None and event is not None:
            raise ValueError(f"sm.on(event={event!r}) needs the entity whose event it is")
        spec = None if entity is None else self.spec(entity)
        if spec is not None and event is not None and event not in {d.info.name for d in spec.events.values()}:
            raise ValueError(f"sm.on: {spec.entity.__name__} has no event {event!r}")

        def register(subscriber: Subscriber) -> Subscriber:
            self.dispatcher.subscribers.add(entity, event, subscriber)
            return subscriber

        return register

    def known_session(self, request: Request, user_id: str | None = None) -> str | None:
        """The caller's session id, if it has one made for ``user_id`` (``None``: signed out)."""
        return self.sessions.known(request, user_id)


def entity_classes(entities: type[Entity] | Iterable[type[Entity]]) -> list[type[Entity]]:
    """``StarModel(entities=...)``: a list of Entity classes, or one; anything else is named."""
    if isinstance(entities, (type, BaseModel)):
        return entity_classes([entities])  # one class (or an instance, named below)
    if isinstance(entities, (str, bytes)) or not isinstance(entities, Iterable):
        raise TypeError(f"StarModel(entities=...) takes Entity classes, as a list or one class: not {entities!r}")
    classes = list(entities)
    for given in classes:
        if isinstance(given, Entity):
            raise TypeError(f"StarModel(entities=[...]) takes classes: give {type(given).__name__}, not an instance")
        if not (isinstance(given, type) and issubclass(given, Entity)):
            raise TypeError(f"StarModel(entities=[...]) takes Entity subclasses, not {given!r} (class X(Entity): ...)")
    return classes


def event_owner(builder: ActionBuilder[...] | Callable[..., Any]) -> type[Entity]:
    """The entity class whose event ``builder`` is (``Counter.increment``); a method without
    ``@event`` is named with the fix."""
    owner = getattr(builder, "_owner", None)
    if isinstance(owner, type) and issubclass(owner, Entity):
        return owner
    if inspect.isfunction(builder):
        name = builder.__qualname__
        raise TypeError(f"sm.action({name}): {name} is not an event: add @event above def {builder.__name__}")
    raise TypeError("sm.action takes an event of an entity class: sm.action(Counter.increment, ...)")


def _key(spec: EntitySpec, key: str | None, doing: str) -> str:
    if spec.scope == "global":
        return GLOBAL_KEY if key is None else key
    if key is None:
        what = {"record": "record id", "user": "user id", "session": "session id"}[spec.scope]
        raise TypeError(f"sm.{doing}({spec.entity.__name__}, key=...) needs the {what}")
    return key


def _linked(stores: Iterable[Store], broadcast: Broadcast) -> Broadcast:
    """``broadcast``, once each store that can publish its own changes (Redis) knows it."""
    for store in stores:
        publish_through = getattr(store, "publish_through", None)
        if publish_through is not None:
            publish_through(broadcast)
    return broadcast


def _stores(given: Mapping[str, Store], kinds: set[StoreKind], s: Settings) -> dict[str, Store]:
    """The stores given (one without its own schema mode takes the app's), and one of each other
    kind the entities use, made from the settings."""
    stores = dict(given)
    for store in stores.values():
        if getattr(store, "schema", "") is None:
            store.schema = s.schema  # type: ignore[attr-defined]
    for kind in sorted(kinds - stores.keys()):
        stores[kind] = store_from_kind(
            kind, database_url=s.database_url, redis_url=s.redis_url, ttl=s.session_ttl, schema=s.schema
        )
    return stores


async def _lifespan(receive: Receive, send: Send, close: Callable[[], Awaitable[None]]) -> None:
    """The ASGI lifespan, for servers that run it on this app itself: ``close`` at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _signer(secret_key: str | bytes | Sequence[str | bytes] | None) -> SessionSigner:
    """The session signer; without a key, a random one (refused when ``STARMODEL_ENV=production``)."""
    if secret_key is None:
        if os.environ.get("STARMODEL_ENV", "").lower() == "production":
            raise RuntimeError(
                "StarModel needs a secret_key in production (STARMODEL_ENV=production): pass "
                "StarModel(secret_key=...) or set STARMODEL_SECRET_KEY, the same in every worker"
            )
        logger.warning(
            "StarModel has no secret_key: sessions are signed with a random key and will not "
            "survive a restart nor be shared between workers"
        )
        secret_key = SessionSigner.new_session_id()
    return SessionSigner(secret_key)

"""The app's endpoints: each request becomes an ``EventRequest`` (origin checked, signals read, caller
identified), then one handler per URL shape reads, runs, lists, creates, deletes or streams."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from starmodel_asgi.aggregates import Tallies
from starmodel_asgi.collection import run_collection
from starmodel_asgi.depends import Provider, provided
from starmodel_asgi.dispatch import Dispatcher, attributed, move_session
from starmodel_asgi.entity import Entity, entity_class
from starmodel_asgi.errors import EventError, internal_error
from starmodel_asgi.events import EventDescriptor
from starmodel_asgi.formatters import Formatter
from starmodel_asgi.guard import Guard
from starmodel_asgi.identity import Sessions, default_user
from starmodel_asgi.incoming import EMPTY, Incoming, large_body, read_input
from starmodel_asgi.lists import ListStream, Windows, newest_first_of, paging
from starmodel_asgi.live import Live
from starmodel_asgi.origins import SAFE_METHODS, check_origin
from starmodel_asgi.page_errors import errors_shown, remember_errors
from starmodel_asgi.query import from_request
from starmodel_asgi.responses import Answers
from starmodel_asgi.routing import MethodHandler, Route, RouteTable
from starmodel_asgi.spec import EntitySpec, instance_key
from starmodel_asgi.values import App, EventRequest, Update

#: ``get_user``: the caller's user id or ``None``; may be async (``contrib.django.django_user`` is).
UserGetter = Callable[[Request], str | Awaitable[str | None] | None]


@dataclass
class Endpoints:
    dispatcher: Dispatcher
    live: Live
    answers: Answers
    sessions: Sessions
    get_user: UserGetter | None  # None: the user host auth middleware put in the scope
    guard: Guard
    trusted_origins: Collection[str]
    max_body_size: int
    list_limit: int
    app: App  # the StarModel, handed to events as ``request.app``
    body_timeout: float = 30.0
    session_specs: Sequence[EntitySpec] = ()  # the server-side session entities, moved together
    overrides: dict[Provider, Provider] = field(default_factory=dict)  # sm.dependency_overrides
    windows: Windows = field(default_factory=Windows)
    tallies: Tallies = field(default_factory=Tallies)

    def routes(self, specs: Collection[EntitySpec]) -> RouteTable:
        """Every URL shape of every entity, each with its one handler."""
        table = RouteTable()
        for spec in specs:
            if spec.is_record:
                table.add(spec, "", "GET", MethodHandler(partial(self.list, spec)))
                create = MethodHandler(partial(self.create, spec), changes_state=True, checks_new_record=True)
                table.add(spec, "", "POST", create)
                table.add(spec, "", "GET", MethodHandler(partial(self.read_record, spec)), with_id=True)
                table.add(spec, "", "DELETE", MethodHandler(partial(self.delete, spec), True, "delete"), with_id=True)
                table.add(spec, "live", "GET", MethodHandler(partial(self.live_record, spec)), with_id=True)
                table.add(spec, "live", "GET", MethodHandler(partial(self.live_list, spec)))
                table.add(spec, "count", "GET", MethodHandler(partial(self.count, spec), event="count"))
            else:
                table.add(spec, "", "GET", MethodHandler(partial(self.read, spec)))
                table.add(spec, "live", "GET", MethodHandler(partial(self.stream, spec)))
            for segment, descriptor in spec.events.items():
                run = self.run if descriptor.injected.depends else self._run  # no providers: one frame less
                action = MethodHandler(partial(run, spec, descriptor), True, descriptor.info.name)
                with_id = spec.is_record and not descriptor.info.collection
                table.add(spec, segment, descriptor.info.method, action, with_id=with_id)
        return table

    async def serve(self, incoming: Incoming, route: Route, params: Mapping[str, str]) -> Response:
        """Runs the route's handler for the request's method; any failure becomes an answer, and
        the session cookie goes on whatever the answer is."""
        set_cookie: str | None = None
        body = EMPTY
        shown = errors_shown(incoming)
        failed: EventError | None = None
        method = incoming.method
        try:
            action = route.handler_for(method)
            if action is None:
                raise EventError(405, f"{method} not allowed here", route.spec.name, {}, {"Allow": route.allow})
            if action.changes_state or method not in SAFE_METHODS:
                check_origin(incoming.headers, self.trusted_origins, incoming.scope.get("scheme", "http"))
            # who asks, and whether they may, before any body is read: a refused or anonymous
            # caller never gets to make this process buffer or spool what it sends
            call, set_cookie = await self.call(incoming, route.spec, params, shown)
            # a large body or an upload for a record is received only once the record exists and
            # its owner check says yes (as saved; a change asks again under its lock)
            large = "id" in params and action.changes_state and large_body(incoming)
            if self.guard.with_record and "id" in params:
                if not action.changes_state or large:
                    record = await self.dispatcher.read(route.spec, params["id"], must_exist=True)
                    await self.guard.check(call, route.spec, action.event, record)
            elif not (self.guard.with_record and action.checks_new_record):
                await self.guard.check(call, route.spec, action.event)
                if large:
                    await self.dispatcher.read(route.spec, params["id"], must_exist=True)
            body = await read_input(incoming, self.max_body_size, self.body_timeout)
            if body is not EMPTY:
                call.signals, call.form = body.signals, body.form
            response = await action.handler(call)
        except Exception as exc:
            failed = attributed(internal_error(exc, f"{method} {incoming.path}"), route.spec)
            response = self.error(incoming, failed)
        if set_cookie is not None:
            response.raw_headers.append((b"set-cookie", set_cookie.encode("latin-1")))
        if shown or failed is not None:
            remember_errors(incoming, response, route.spec.name, shown, failed)
        if body.uploads is not None:  # uploaded files live until the answer is sent
            response.background = _after(response.background, body.aclose)
        return response

    def error(self, incoming: Incoming, error: EventError) -> Response:
        return self.answers.error(EventRequest(incoming.method, incoming.path, incoming.headers), error)

    async def call(
        self,
        incoming: Incoming,
        spec: EntitySpec,
        params: Mapping[str, str],
        shown: frozenset[str] = frozenset(),
    ) -> tuple[EventRequest, str | None]:
        """The request as the core sees it (its signals and form come once the body is read), and
        the ``Set-Cookie`` to send (a session's only)."""
        if "id" in params and (len(params["id"]) > 200 or not params["id"].isprintable()):
            raise EventError(404, f"No {spec.name} with that id", spec.name)
        query = incoming.query
        if "datastar" in query:
            query = {k: v for k, v in query.items() if k != "datastar"}
        call = EventRequest(
            method=incoming.method,
            path=incoming.path,
            headers=incoming.headers,
            query=query,
            path_params=params,
            errors_shown=spec.name in shown,
            raw=incoming.request,
            app=self.app,
        )
        set_cookie = None
        # on every request, for authorize and events
        call.user_id = default_user(incoming.scope) if self.get_user is None else await self.user_id(incoming.request)
        if spec.scope == "session":
            call.session_id, set_cookie, moved, keep = self.sessions.resolve(incoming, call.user_id)
            if moved is not None:  # signed in or out since the session was made
                await move_session(self.dispatcher, self.session_specs, moved, call.session_id, keep)
        else:  # the caller's session if it has one (for authorize, a viewer's render, a change); none is made
            call.session_id = self.sessions.known(incoming, call.user_id)
        return call, set_cookie

    async def user_id(self, request: Request) -> str | None:
        if self.get_user is None:
            return default_user(request.scope)
        user = self.get_user(request)
        return await user if inspect.isawaitable(user) else user

    def key(self, spec: EntitySpec, call: EventRequest) -> str:
        """Which instance the caller means."""
        key = instance_key(spec, call.path_params.get("id"), call.user_id, call.session_id)
        if key is None:  # a user entity, and no user
            raise EventError(401, "Authentication required", spec.name)
        return key

    # -- handlers -------------------------------------------------------------------------

    async def read(self, spec: EntitySpec, call: EventRequest) -> Response:
        instance = await self.dispatcher.read(spec, self.key(spec, call), request=call)
        return self.answers.state(call, spec.name, instance.public_state())

    async def read_record(self, spec: EntitySpec, call: EventRequest) -> Response:
        instance = await self.dispatcher.read(spec, self.key(spec, call), must_exist=True)
        return self.answers.state(call, spec.name, instance.public_state())

    async def run(self, spec: EntitySpec, descriptor: EventDescriptor, call: EventRequest) -> Response:
        """The event, its ``Depends`` providers first; theirs cleanups once the answer is sent (or
        at once, told of the failure, when the event fails)."""
        if not descriptor.injected.depends:
            return await self._run(spec, descriptor, call)
        stack = AsyncExitStack()
        call.services = await stack.enter_async_context(provided(descriptor.injected.depends, call, self.overrides))
        try:
            response = await self._run(spec, descriptor, call)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        response.background = BackgroundTask(stack.aclose)
        return response

    async def _run(self, spec: EntitySpec, descriptor: EventDescriptor, call: EventRequest) -> Response:
        if descriptor.info.collection:
            return self.answers.answer(call, [await run_collection(self.dispatcher, spec, descriptor, call)])
        if descriptor.info.background:
            if self.guard.with_record and spec.is_record:  # it holds nothing: the record as saved
                record = await self.dispatcher.read(spec, self.key(spec, call), must_exist=True)
                await self.guard.check(call, spec, descriptor.info.name, record)
            updates = await self.dispatcher.run_background(spec, self.key(spec, call), descriptor, call)
            return await self.answers.background(call, updates)
        key = self.key(spec, call)
        check = self.guard.record_check(call, spec, descriptor.info.name)
        if descriptor.is_async_gen or descriptor.is_sync_gen:
            updates = self.dispatcher.run(spec, key, descriptor, call, must_exist=spec.is_record, check=check)
            return await self.answers.updates(call, updates, streams=True)
        update = await self.dispatcher.apply(spec, key, descriptor, call, must_exist=spec.is_record, check=check)
        if update.gone and not call.is_datastar:  # the event deleted its own record
            return Response(status_code=204)
        return self.answers.answer(call, [update])

    async def stream(self, spec: EntitySpec, call: EventRequest) -> Response:
        if spec.in_browser:
            raise EventError(404, f"{spec.name} lives in the browser: there is nothing to stream", spec.name)
        viewer = call if spec.renders_per_viewer else None
        return self.answers.streamed(
            call, self.live.response(self._streaming(call), spec, self.key(spec, call), viewer=viewer)
        )

    async def live_record(self, spec: EntitySpec, call: EventRequest) -> Response:
        key = self.key(spec, call)
        await self.dispatcher.read(spec, key, must_exist=True)
        allowed = partial(self.guard.allows_record, call, spec) if self.guard.with_record else None
        viewer = call if spec.renders_per_viewer else None
        return self.answers.streamed(call, self.live.response(self._streaming(call), spec, key, allowed, viewer))

    def _streaming(self, call: EventRequest) -> Formatter:
        formatter = self.answers.formatter(call)
        return formatter if formatter.streams else self.answers.streaming

    async def create(self, spec: EntitySpec, call: EventRequest) -> Response:
        async def check(record: Entity) -> None:
            if not await self.guard.allows_record(call, spec, record):
                raise EventError(403, "Forbidden", spec.name)

        instance = await self.dispatcher.create(spec, call, check if self.guard.with_record else None)
        state = instance.public_state()
        # Datastar applies only 200 answers (and clears the page's errors); JSON clients get the precise 201
        update = Update(spec.name, state, state, cleared=spec.no_errors if call.errors_shown else None)
        return self.answers.answer(call, [update], 200 if call.is_datastar else 201)

    async def delete(self, spec: EntitySpec, call: EventRequest) -> Response:
        await self.dispatcher.delete(spec, self.key(spec, call), self.guard.record_check(call, spec, "delete"), call)
        return Response(status_code=204)

    async def list(self, spec: EntitySpec, call: EventRequest) -> Response:
        limit, offset = paging(spec, call.query, self.list_limit)
        items = await self.dispatcher.list(spec, limit, offset, query=from_request(spec, call.query))
        if self.guard.with_record:
            items = [i for i in items if await self.guard.allows_record(call, spec, i)]
        return Response(json.dumps([i.public_state() for i in items]), media_type="application/json")

    async def count(self, spec: EntitySpec, call: EventRequest) -> Response:
        """``{"count": n}``: the records matching the query's filters (``authorize`` is asked with
        the event ``"count"``, never about each record)."""
        query = from_request(spec, {k: v for k, v in call.query.items() if k != "order"})
        return Response(json.dumps({"count": await self.dispatcher.count(spec, query)}), media_type="application/json")

    async def live_list(self, spec: EntitySpec, call: EventRequest) -> Response:
        if entity_class(spec).render is Entity.render:
            raise EventError(
                404, f"{spec.entity.__name__} has no render(): a live list sends each record's HTML", spec.name
            )
        limit, _ = paging(spec, call.query, self.list_limit)
        newest_first, shown = newest_first_of(spec, call.query, self.list_limit)
        checks = partial(self.guard.allows_record, call, spec) if self.guard.authorize is not None else None
        viewer = call if spec.renders_per_viewer else None
        query = from_request(spec, call.query)
        stream = ListStream(
            self.live,
            self.windows,
            self._streaming(call),
            spec,
            limit + shown,
            checks,
            viewer=viewer,
            newest_first=newest_first,
            query=query,
            tallies=self.tallies,
        )
        return self.answers.streamed(call, stream)


def _after(first: BackgroundTask | None, then: Callable[[], Awaitable[None]]) -> BackgroundTask:
    """``first`` (if any), then ``then``, once the answer is sent."""
    if first is None:
        return BackgroundTask(then)

    async def both() -> None:
        try:
            await first()
        finally:
            await then()

    return BackgroundTask(both)

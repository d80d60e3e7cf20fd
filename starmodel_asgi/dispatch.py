"""The unit of work: load -> run -> persist -> publish, with no web types in it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import anyio.to_thread
from pydantic import ValidationError

from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.entity import Entity
from starmodel_asgi.events import EventDescriptor, EventInfo
from starmodel_asgi.http import Element, EventError, EventRequest, Update, internal_error, invalid
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores import Slot, State, Store

logger = logging.getLogger("starmodel_asgi")

_MISSING = object()
_DONE = object()
#: published when a record is deleted; no field can be named ``_deleted`` (Pydantic keeps it private)
DELETED = json.dumps({"_deleted": True})


def entity_class(spec: EntitySpec) -> type[Entity]:
    return cast("type[Entity]", spec.entity)


def channel_name(spec: EntitySpec, key: str) -> str:
    return f"sm:{spec.name}:{key}"


def validation_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"]) or "body"
        errors.setdefault(name, err["msg"])
    return errors


def client_values(spec: EntitySpec, request: EventRequest) -> dict[str, Any]:
    """The entity's namespace in the request's signals (``{"counter": {...}}``)."""
    namespace = request.signals.get(spec.name)
    return namespace if isinstance(namespace, dict) else {}


def bind_params(descriptor: EventDescriptor, spec: EntitySpec, request: EventRequest) -> dict[str, Any]:
    """Event arguments by name from path, query, the entity's signal namespace, top-level signals."""
    model = descriptor.params_model
    sources: list[Any] = [
        request.path_params,
        {k: v if k in descriptor.sequence_params or len(v) > 1 else v[0] for k, v in request.query.items()},
        client_values(spec, request),
        request.signals,
    ]
    data: dict[str, Any] = {}
    for name in model.model_fields:
        for source in sources:
            if name in source:
                data[name] = source[name]
                break
    try:
        kwargs = dict(model.model_validate(data))
    except ValidationError as exc:
        raise invalid(spec.name, validation_errors(exc)) from None
    for name in descriptor.injected.request:
        kwargs[name] = request
    for name in descriptor.injected.host_request:
        kwargs[name] = request.raw
    for name in descriptor.injected.signals:
        kwargs[name] = request.signals
    return kwargs


def apply_client_writes(spec: EntitySpec, instance: Entity, request: EventRequest) -> None:
    """Sets the client-writable fields the page sent; each bad value is a 422 naming it."""
    values = client_values(spec, request)
    errors: dict[str, str] = {}
    for name in spec.writable & values.keys():
        try:
            setattr(instance, name, values[name])
        except ValidationError as exc:
            errors[name] = exc.errors()[0]["msg"]
    if errors:
        raise invalid(spec.name, errors)


def to_elements(result: Any, info: EventInfo | None = None) -> list[Element]:
    """What an event returned or yielded, as HTML elements (``None`` and entities are no HTML)."""
    if result is None or isinstance(result, Entity):
        return []
    if isinstance(result, Element):
        return [result]
    if isinstance(result, (list, tuple)):
        return [e for item in result for e in to_elements(item, info)]
    if hasattr(result, "__html__"):
        result = result.__html__()
    if isinstance(result, str):
        if info is None:
            return [Element(result)]
        return [Element(result, info.selector, info.mode, info.use_view_transition)]
    raise TypeError(f"{type(result).__name__} is not HTML: return a str, something with __html__, an Element or None")


def rendered(instance: Entity) -> list[Element]:
    """The instance's own ``render()``, as elements for live pushes."""
    return to_elements(instance.render())


async def invoke(instance: Entity, descriptor: EventDescriptor, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """Each result of the event: one for plain events, one per yield for generators. Sync code
    runs in a worker thread."""
    bound = descriptor.func.__get__(instance)
    if descriptor.is_async_gen:
        async for item in bound(**kwargs):
            yield item
    elif descriptor.is_sync_gen:
        gen: Iterator[Any] = bound(**kwargs)
        while (item := await anyio.to_thread.run_sync(next, gen, _DONE)) is not _DONE:
            yield item
    elif descriptor.is_coroutine:
        yield await bound(**kwargs)
    else:
        yield await anyio.to_thread.run_sync(partial(bound, **kwargs))


class Steps:
    """What the page sees of one instance during an event: each step carries the fields changed
    since the previous one, starting from what the page holds (the signals it sent, else the
    saved state)."""

    def __init__(self, spec: EntitySpec, instance: Entity, request: EventRequest, info: EventInfo) -> None:
        self.spec, self.instance, self.info = spec, instance, info
        self.original = instance.public_state()
        sent = {k: v for k, v in client_values(spec, request).items() if k in spec.public}
        self.baseline = {**self.original, **sent}
        self.count = 0

    def step(self, result: Any) -> Update:
        public = self.instance.public_state()
        changed = {k: v for k, v in public.items() if self.baseline.get(k, _MISSING) != v}
        self.baseline = public
        return Update(self.spec.name, changed, public, to_elements(result, self.info))

    def last(self) -> Update | None:
        """The changes made after the last yield (or by an event that never yielded)."""
        if not self.count or self.instance.public_state() != self.baseline:
            return self.step(None)
        return None


@dataclass
class Held:
    """An instance loaded under its lock, with what was saved (``slot`` is ``None`` for
    ``store="client"``: nothing is kept on the server)."""

    instance: Entity
    slot: Slot | None = None
    saved: State | None = None


class Dispatcher:
    """Runs events against stored instances; every change is saved, then published."""

    def __init__(self, store_for: Callable[[EntitySpec], Store], broadcast: Broadcast) -> None:
        self.store_for = store_for
        self.broadcast = broadcast

    async def read(
        self, spec: EntitySpec, key: str, *, must_exist: bool = False, request: EventRequest | None = None
    ) -> Entity:
        """The instance as saved (defaults when there is none). A ``store="client"`` instance is
        the state the page sent in ``request``."""
        if spec.in_browser:
            return self.from_client(spec, request)
        state = await self.store_for(spec).get(spec, key)
        return self._instance(spec, key, state, must_exist)

    async def run(
        self,
        spec: EntitySpec,
        key: str,
        descriptor: EventDescriptor,
        request: EventRequest,
        *,
        must_exist: bool = False,
    ) -> AsyncGenerator[Update, None]:
        """Yield one ``Update`` per result (one for plain events, one per yield for generators).

        The instance is held for the whole run; the changes are saved and published when the
        event has finished, and the last update is yielded once the instance is released. A
        failure saves and publishes nothing; once steps were sent, its error carries the saved
        state (``reset``) for the page. Close the iterator (``contextlib.aclosing``) when done.
        """
        kwargs = bind_params(descriptor, spec, request)
        async with self._hold(spec, key, request, must_exist) as held:
            steps = Steps(spec, held.instance, request, descriptor.info)
            apply_client_writes(spec, held.instance, request)
            try:
                async for result in invoke(held.instance, descriptor, kwargs):
                    steps.count += 1
                    yield steps.step(result)
                last = steps.last()
                await self._save(spec, held)
            except Exception as exc:  # a ValidationError here is the event's own bad assignment: a bug
                error = internal_error(exc, f"event {spec.name}.{descriptor.info.name}", spec.name)
                if steps.count:
                    error.reset = steps.original
                if error is exc:
                    raise
                raise error from exc
        if last is not None:
            yield last

    @asynccontextmanager
    async def _hold(self, spec: EntitySpec, key: str, request: EventRequest, must_exist: bool) -> AsyncIterator[Held]:
        if spec.in_browser:
            yield Held(self.from_client(spec, request))
            return
        async with self.store_for(spec).hold(spec, key) as slot:
            saved = await slot.load()
            yield Held(self._instance(spec, key, saved, must_exist), slot, saved)

    def _instance(self, spec: EntitySpec, key: str, state: State | None, must_exist: bool) -> Entity:
        if state is None and must_exist:
            raise EventError(404, f"{spec.name} {key!r} not found", spec.name)
        model = entity_class(spec)
        return model(id=key) if state is None else model.model_validate(state)

    async def _save(self, spec: EntitySpec, held: Held) -> None:
        if held.slot is None:
            return
        stored = held.instance.stored_state()
        if stored == held.saved:
            return
        await held.slot.save(stored)
        await self.publish(spec, held.instance.id, stored)

    def from_client(self, spec: EntitySpec, request: EventRequest | None) -> Entity:
        """A ``store="client"`` instance: the state the page sent, validated like any input."""
        values = client_values(spec, request) if request is not None else {}
        public = spec.public - {"id"}
        try:
            return entity_class(spec).model_validate({k: v for k, v in values.items() if k in public})
        except ValidationError as exc:
            raise invalid(spec.name, validation_errors(exc)) from None

    async def publish(self, spec: EntitySpec, key: str, state: State) -> None:
        """Tell live pages about a new state. A broadcast failure is logged, never fatal: the
        state is saved, and streams re-send the current state when they reconnect."""
        await self._send(spec, key, json.dumps(state))

    async def _send(self, spec: EntitySpec, key: str, message: str) -> None:
        try:
            await self.broadcast.publish(channel_name(spec, key), message)
        except Exception:
            logger.exception("could not publish %s %s", spec.name, key)

    async def create(self, spec: EntitySpec, request: EventRequest) -> Entity:
        key = uuid.uuid4().hex
        instance = entity_class(spec)(id=key)
        apply_client_writes(spec, instance, request)
        async with self.store_for(spec).hold(spec, key) as slot:
            await slot.save(instance.stored_state())
        return instance

    async def delete(self, spec: EntitySpec, key: str) -> None:
        async with self.store_for(spec).hold(spec, key) as slot:
            if await slot.load() is None:
                raise EventError(404, f"{spec.name} {key!r} not found", spec.name)
            await slot.delete()
            await self._send(spec, key, DELETED)

    async def list(self, spec: EntitySpec, limit: int, offset: int) -> list[Entity]:
        states = await self.store_for(spec).list(spec, limit, offset)
        return [self._instance(spec, s["id"], s, False) for s in states]

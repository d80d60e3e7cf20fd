"""The unit of work: load -> run -> persist -> publish, with no web types in it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import anyio.to_thread
from pydantic import ValidationError

from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.entity import Entity
from starmodel_asgi.events import EventDescriptor, EventInfo
from starmodel_asgi.http import Element, EventError, EventRequest, Update, invalid
from starmodel_asgi.stores import Slot, State, Store

logger = logging.getLogger("starmodel_asgi")

_MISSING = object()
#: published when a record is deleted; no field can be named ``_deleted`` (Pydantic keeps it private)
DELETED = json.dumps({"_deleted": True})
_DONE = object()


def channel_name(entity: type[Entity], key: str) -> str:
    return f"sm:{entity.entity_name()}:{key}"


def validation_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"]) or "body"
        errors.setdefault(name, err["msg"])
    return errors


def bind_params(descriptor: EventDescriptor, entity: type[Entity], request: EventRequest) -> dict[str, Any]:
    """Event arguments by name from path, query, the entity's signal namespace, top-level signals."""
    model = descriptor.params_model
    namespace = request.signals.get(entity.entity_name())
    sources: list[Any] = [
        request.path_params,
        {k: v if k in descriptor.sequence_params or len(v) > 1 else v[0] for k, v in request.query.items()},
        namespace if isinstance(namespace, dict) else {},
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
        raise invalid(entity.entity_name(), validation_errors(exc)) from None
    for name in descriptor.injected.request:
        kwargs[name] = request
    for name in descriptor.injected.host_request:
        kwargs[name] = request.raw
    for name in descriptor.injected.signals:
        kwargs[name] = request.signals
    return kwargs


def client_values(entity: type[Entity], request: EventRequest) -> dict[str, Any]:
    namespace = request.signals.get(entity.entity_name())
    return namespace if isinstance(namespace, dict) else {}


def apply_client_writes(instance: Entity, request: EventRequest) -> None:
    entity = type(instance)
    values = client_values(entity, request)
    errors: dict[str, str] = {}
    for name in entity.client_writable_fields() & values.keys():
        try:
            setattr(instance, name, values[name])
        except ValidationError as exc:
            errors[name] = exc.errors()[0]["msg"]
    if errors:
        raise invalid(entity.entity_name(), errors)


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


class Dispatcher:
    """Runs events against stored instances; every change is saved, then published."""

    def __init__(self, store_for: Callable[[type[Entity]], Store], broadcast: Broadcast) -> None:
        self.store_for = store_for
        self.broadcast = broadcast

    async def read(self, entity: type[Entity], key: str, *, must_exist: bool = False) -> Entity:
        if entity.entity_store() == "client":
            return entity(id=key)  # the browser holds the state; without its signals, the defaults
        state = await self.store_for(entity).get(entity, key)
        if state is None:
            if must_exist:
                raise EventError(404, f"{entity.entity_name()} {key!r} not found", entity.entity_name())
            return entity(id=key)
        return entity.model_validate(state)

    async def run(
        self,
        entity: type[Entity],
        key: str,
        descriptor: EventDescriptor,
        request: EventRequest,
        *,
        must_exist: bool = False,
    ) -> AsyncGenerator[Update, None]:
        """Yield one ``Update`` per result (one for plain events, one per yield for generators).

        The instance is held for the whole run; the changes are saved and published when the
        event has finished. Close the iterator (``contextlib.aclosing``) when done.
        """
        kwargs = bind_params(descriptor, entity, request)
        last: list[Update] = []  # the final step, sent once the instance is saved and released
        if entity.entity_store() == "client":
            instance = self.from_client(entity, request)
            async for update in self._steps(instance, descriptor, kwargs, request, None, last):
                yield update
        else:
            async with self.store_for(entity).hold(entity, key) as slot:
                saved = await slot.load()
                if saved is None and must_exist:
                    raise EventError(404, f"{entity.entity_name()} {key!r} not found", entity.entity_name())
                instance = entity(id=key) if saved is None else entity.model_validate(saved)
                async for update in self._steps(instance, descriptor, kwargs, request, (slot, saved), last):
                    yield update
        for update in last:
            yield update

    async def _steps(
        self,
        instance: Entity,
        descriptor: EventDescriptor,
        kwargs: dict[str, Any],
        request: EventRequest,
        persist: tuple[Slot, State | None] | None,
        last: list[Update],
    ) -> AsyncIterator[Update]:
        """Streams each result's changes to the caller as it comes; saves and publishes once, when
        the event has finished, and leaves the changes made after the last yield in ``last``.
        An event failing part-way saves and broadcasts nothing, and its error carries the saved
        state (``reset``) for the caller's page, which saw the steps."""
        entity = type(instance)
        original = instance.public_state()
        public_fields = entity.public_fields()
        baseline = {**original, **{k: v for k, v in client_values(entity, request).items() if k in public_fields}}
        apply_client_writes(instance, request)

        def step(result: Any) -> Update:
            nonlocal baseline
            public = instance.public_state()
            changed = {k: v for k, v in public.items() if baseline.get(k, _MISSING) != v}
            baseline = public
            return Update(entity.entity_name(), changed, public, to_elements(result, descriptor.info))

        steps = 0
        try:
            async for result in self._call(instance, descriptor, kwargs):
                steps += 1
                yield step(result)
            if persist is not None:
                await self._save(instance, *persist)
        except EventError as exc:
            if steps:
                exc.reset = original
            raise
        except Exception as exc:  # e.g. a result that is not HTML
            logger.exception(
                "event %s.%s failed; its changes were not saved", entity.entity_name(), descriptor.info.name
            )
            raise EventError(
                500,
                f"Internal error in event {entity.entity_name()}.{descriptor.info.name}",
                entity.entity_name(),
                reset=original if steps else None,
            ) from exc
        # a generator may change state after its last yield (or never yield): that counts too
        if not steps or instance.public_state() != baseline:
            last.append(step(None))

    async def _save(self, instance: Entity, slot: Slot, saved: State | None) -> None:
        stored = instance.stored_state()
        if stored == saved:
            return
        try:
            await slot.save(stored)
        except EventError:
            raise
        except Exception:
            logger.exception("saving %s %s failed", instance.entity_name(), instance.id)
            raise EventError(500, f"Could not save {instance.entity_name()}", instance.entity_name()) from None
        await self.publish(type(instance), instance.id, stored)

    async def _call(self, instance: Entity, descriptor: EventDescriptor, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        name = f"{instance.entity_name()}.{descriptor.info.name}"
        bound = descriptor.func.__get__(instance)
        try:
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
        except EventError:
            raise
        except Exception:  # a ValidationError here is the event's own bad assignment: a bug, not bad input
            logger.exception("event %s failed; its changes were not saved", name)
            raise EventError(500, f"Internal error in event {name}", instance.entity_name()) from None

    def from_client(self, entity: type[Entity], request: EventRequest) -> Entity:
        """A ``store="client"`` instance: the state the browser sent, validated like any input."""
        values = client_values(entity, request)
        public = entity.public_fields() - {"id"}
        try:
            return entity.model_validate({k: v for k, v in values.items() if k in public})
        except ValidationError as exc:
            raise invalid(entity.entity_name(), validation_errors(exc)) from None

    async def publish(self, entity: type[Entity], key: str, state: State) -> None:
        """Tell live pages about a new state. A broadcast failure is logged, never fatal: the
        state is saved, and streams re-send the current state when they reconnect."""
        await self._send(entity, key, json.dumps(state))

    async def _send(self, entity: type[Entity], key: str, message: str) -> None:
        try:
            await self.broadcast.publish(channel_name(entity, key), message)
        except Exception:
            logger.exception("could not publish %s %s", entity.entity_name(), key)

    async def create(self, entity: type[Entity], request: EventRequest) -> Entity:
        key = uuid.uuid4().hex
        instance = entity(id=key)
        apply_client_writes(instance, request)
        async with self.store_for(entity).hold(entity, key) as slot:
            await slot.save(instance.stored_state())
        return instance

    async def delete(self, entity: type[Entity], key: str) -> None:
        async with self.store_for(entity).hold(entity, key) as slot:
            if await slot.load() is None:
                raise EventError(404, f"{entity.entity_name()} {key!r} not found", entity.entity_name())
            await slot.delete()
            await self._send(entity, key, DELETED)

    async def list(self, entity: type[Entity], limit: int, offset: int) -> list[Entity]:
        states = await self.store_for(entity).list(entity, limit, offset)
        return [entity.model_validate(s) for s in states]

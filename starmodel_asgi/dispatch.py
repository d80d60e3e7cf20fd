"""The unit of work: load -> run -> persist -> publish, with no web types in it."""

from __future__ import annotations

import inspect
import json
import logging
import sys
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import anyio.to_thread
from pydantic import ValidationError

from starmodel_asgi.binding import apply_client_writes, bind_params, client_instance, client_values
from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.changes import Change, Subscribers
from starmodel_asgi.entity import EDITOR_KEY, Entity
from starmodel_asgi.events import EventDescriptor, EventInfo
from starmodel_asgi.http import (
    Element,
    EventError,
    EventRequest,
    NotFound,
    Redirect,
    Update,
    internal_error,
    invalid,
)
from starmodel_asgi.messages import readable_errors
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


def list_channel(spec: EntitySpec) -> str:
    """Where a record entity's live lists hear that one of its records was created, changed or
    deleted (each message is a fresh token: the lists re-read their window)."""
    return f"sm:{spec.name}"


def attributed(error: EventError, spec: EntitySpec) -> EventError:
    """The error shown in ``spec``'s namespace (unless it names another entity), replacing the
    messages an earlier failure left on the page."""
    error.entity = error.entity or spec.name
    if error.entity == spec.name:
        error.blank = spec.no_errors["_errors"]
    return error


def failed(exc: Exception, spec: EntitySpec, descriptor: EventDescriptor, reset: State | None = None) -> EventError:
    """What the caller is told of an event that raised: its own ``EventError`` (shown in the
    entity's namespace), else a logged 500 (the original stays its context); ``reset`` is the
    saved state when steps were sent."""
    error = attributed(internal_error(exc, f"event {spec.name}.{descriptor.info.name}"), spec)
    if reset is not None:
        error.reset = reset
    return error


def to_elements(result: Any, info: EventInfo | None = None) -> list[Element]:
    """What an event returned or yielded, as HTML elements (``None``, entities and redirects are
    no HTML). A list of HTML is one element of the joined HTML, so ``mode="inner"`` fills the
    target with all of it; ``Element``s keep their own targets."""
    if result is None or isinstance(result, (Entity, Redirect)):
        return []
    if isinstance(result, Element):
        return [result]
    if isinstance(result, (list, tuple)):
        parts = [e for item in result for e in to_elements(item, None)]
        if any(e.selector is not None or e.mode is not None for e in parts):
            return [e if e.selector or e.mode else _placed(e.html, info) for e in parts]
        return [_placed("".join(e.html for e in parts), info)] if parts else []
    if hasattr(result, "__html__"):
        result = result.__html__()
    if isinstance(result, str):
        return [_placed(result, info)]
    raise TypeError(
        f"{type(result).__name__} is not HTML: return a str, something with __html__, an Element, a Redirect or None"
    )


def _placed(html: str, info: EventInfo | None) -> Element:
    if info is None:
        return Element(html)
    return Element(html, info.selector, info.mode, info.use_view_transition)


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
        sent = {k: v for k, v in client_values(spec, request).items() if k in spec.shown}
        self.baseline = {**self.original, **sent}
        self.count = 0
        self.cleared = not request.errors_shown
        self.redirect: str | None = None

    def step(self, result: Any) -> Update:
        """The first step also carries the blank errors that clear an earlier failure's."""
        public = self.instance.public_state()
        changed = {k: v for k, v in public.items() if self.baseline.get(k, _MISSING) != v}
        self.baseline = public
        redirect = result.url if isinstance(result, Redirect) else None
        cleared = None if self.cleared else self.spec.no_errors
        self.cleared = True
        return Update(self.spec.name, changed, public, to_elements(result, self.info), redirect, cleared)

    def held_back(self, update: Update) -> Update:
        """The step without its redirect, which waits for the save (the last update carries it)."""
        if update.redirect is not None:
            self.redirect, update.redirect = update.redirect, None
        return update

    def last(self) -> Update | None:
        """The changes made after the last yield (or by an event that never yielded), carrying a
        held-back redirect: the caller sends it only once the state is saved."""
        update = None
        if not self.count or self.instance.public_state() != self.baseline:
            update = self.step(None)
        if self.redirect is not None:
            update = update or Update(self.spec.name, {}, self.baseline)
            update.redirect = self.redirect
        return update


@dataclass
class Held:
    """An instance loaded under its lock, with what was saved (``slot`` is ``None`` for
    ``store="client"``: nothing is kept on the server)."""

    instance: Entity
    slot: Slot | None = None
    saved: State | None = None


class Blocks:
    """``async with self:`` inside a background event: each block holds the instance through
    ``Dispatcher.edit`` (the lock events and ``sm.edit`` use)."""

    def __init__(self, dispatcher: Dispatcher, spec: EntitySpec, key: str, event: str) -> None:
        self.dispatcher, self.spec, self.key, self.event = dispatcher, spec, key, event
        self.open: AsyncExitStack | None = None

    async def enter(self, instance: Entity) -> None:
        if self.open is not None:
            raise RuntimeError(f"{self.spec.entity.__name__}: async with self: blocks cannot nest")
        stack = AsyncExitStack()
        await stack.enter_async_context(self.dispatcher.edit(self.spec, self.key, into=instance, event=self.event))
        self.open = stack

    async def exit(self, exc_info: tuple[Any, ...]) -> None:
        stack, self.open = self.open, None
        assert stack is not None
        await stack.__aexit__(*exc_info)


class Holding:
    """``async with dispatcher._hold(...) as held``: the instance loaded under its lock (a class,
    not a generator: this runs on every event)."""

    __slots__ = ("_slot_cm", "dispatcher", "key", "must_exist", "request", "spec")

    def __init__(
        self, dispatcher: Dispatcher, spec: EntitySpec, key: str, request: EventRequest | None, must_exist: bool
    ) -> None:
        self.dispatcher, self.spec, self.key, self.request, self.must_exist = dispatcher, spec, key, request, must_exist
        self._slot_cm: AbstractAsyncContextManager[Slot] | None = None

    async def __aenter__(self) -> Held:
        spec = self.spec
        if spec.in_browser:
            return Held(self.dispatcher.from_client(spec, self.request))
        self._slot_cm = self.dispatcher.store_for(spec).hold(spec, self.key)
        slot = await self._slot_cm.__aenter__()
        try:
            saved = await slot.load()
            return Held(self.dispatcher._instance(spec, self.key, saved, self.must_exist), slot, saved)
        except BaseException:
            await self._slot_cm.__aexit__(*sys.exc_info())
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._slot_cm is not None:
            await self._slot_cm.__aexit__(*exc_info)


class Dispatcher:
    """Runs events against stored instances; every change is saved, then published."""

    def __init__(
        self, store_for: Callable[[EntitySpec], Store], broadcast: Broadcast, subscribers: Subscribers | None = None
    ) -> None:
        self.store_for = store_for
        self.broadcast = broadcast
        self._wants: Callable[[str], bool] | None = getattr(broadcast, "wants", None)
        self.subscribers = subscribers or Subscribers()

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
                    yield steps.held_back(steps.step(result))
                last = steps.last()
                committed = await self._save(spec, held)
            except Exception as exc:  # a ValidationError here is the event's own bad assignment: a bug
                raise failed(exc, spec, descriptor, steps.original if steps.count else None)  # noqa: B904
        if committed:
            await self.after_commit(spec, key, descriptor.info.name, steps.original, held.instance.public_state)
        if last is not None:
            yield last

    async def apply(
        self,
        spec: EntitySpec,
        key: str,
        descriptor: EventDescriptor,
        request: EventRequest,
        *,
        must_exist: bool = False,
    ) -> Update:
        """``run`` for an event that is not a generator, without an async generator's overhead:
        its one update, returned once the change is saved and published."""
        kwargs = bind_params(descriptor, spec, request)
        async with self._hold(spec, key, request, must_exist) as held:
            instance = held.instance
            steps = Steps(spec, instance, request, descriptor.info)
            apply_client_writes(spec, instance, request)
            try:
                bound = descriptor.func.__get__(instance)
                if descriptor.is_coroutine:
                    result = await bound(**kwargs)
                else:
                    result = await anyio.to_thread.run_sync(partial(bound, **kwargs))
                update = steps.step(result)
                committed = await self._save(spec, held)
            except Exception as exc:  # a ValidationError here is the event's own bad assignment: a bug
                raise failed(exc, spec, descriptor)  # noqa: B904
        if committed:
            await self.after_commit(spec, key, descriptor.info.name, steps.original, lambda: update.state)
        return update

    def _hold(self, spec: EntitySpec, key: str, request: EventRequest | None, must_exist: bool) -> Holding:
        return Holding(self, spec, key, request, must_exist)

    @asynccontextmanager
    async def edit(
        self, spec: EntitySpec, key: str, into: Entity | None = None, event: str | None = None
    ) -> AsyncIterator[Entity]:
        """The instance under its lock (re-read ``into`` an existing instance, if given); saved,
        published and told to subscribers on a clean exit, left as it was when the block raises."""
        if spec.in_browser:
            raise TypeError(f'{spec.entity.__name__} is store="client": its state lives in the page, not here')
        async with self._hold(spec, key, None, spec.is_record) as held:
            if into is not None:
                into.__dict__.update(held.instance.__dict__)  # validated fresh state (keeps EDITOR_KEY)
                held.instance = into
            before = held.instance.public_state()
            yield held.instance
            committed = await self._save(spec, held)
        if committed:
            await self.after_commit(spec, key, event, before, held.instance.public_state)

    async def run_background(
        self, spec: EntitySpec, key: str, descriptor: EventDescriptor, request: EventRequest
    ) -> AsyncGenerator[Update, None]:
        """An ``@event(background=True)``: bound and read now (bad input and a missing record
        fail before any answer), then run without the lock; its ``async with self:`` blocks each
        hold, save and publish the instance. Each yield is a step for the caller."""
        kwargs = bind_params(descriptor, spec, request)
        instance = await self.read(spec, key, must_exist=spec.is_record)
        return self._background(spec, instance, descriptor, request, kwargs)

    async def _background(
        self,
        spec: EntitySpec,
        instance: Entity,
        descriptor: EventDescriptor,
        request: EventRequest,
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[Update, None]:
        steps = Steps(spec, instance, request, descriptor.info)
        instance.__dict__[EDITOR_KEY] = Blocks(self, spec, instance.id, descriptor.info.name)
        try:
            async for result in invoke(instance, descriptor, kwargs):
                steps.count += 1
                yield steps.held_back(steps.step(result))
            last = steps.last()
        except Exception as exc:
            raise failed(exc, spec, descriptor)  # noqa: B904
        finally:
            instance.__dict__.pop(EDITOR_KEY, None)
        if last is not None:
            yield last

    async def after_commit(
        self, spec: EntitySpec, key: str, event: str | None, before: State, after: Callable[[], State]
    ) -> None:
        """After the commit (the lock released): live lists re-read (they read the store, so
        not before), and subscribers hear of it."""
        await self.touch_list(spec)
        if self.subscribers.wanted(spec.entity):
            await self.notify(spec, key, event, before, after())

    async def notify(
        self, spec: EntitySpec, key: str, event: str | None, before: State | None, after: State | None
    ) -> None:
        if self.subscribers.wanted(spec.entity):
            await self.subscribers.notify(Change(spec.entity, key, event, before, after))

    def _instance(self, spec: EntitySpec, key: str, state: State | None, must_exist: bool) -> Entity:
        if state is None and must_exist:
            raise NotFound(404, f"{spec.name} {key!r} not found", spec.name)
        model = entity_class(spec)
        return model(id=key) if state is None else model.model_validate(state)

    async def _save(self, spec: EntitySpec, held: Held) -> bool:
        """Saves and publishes the instance if it changed; ``True`` when it did."""
        if held.slot is None:
            return False
        stored = held.instance.stored_state()
        saved = held.saved if held.saved is not None else entity_class(spec)(id=held.instance.id).stored_state()
        if stored == saved:  # unchanged, or still the defaults a read gives anyway
            return False
        await held.slot.save(stored)
        await self.publish(spec, held.instance.id, stored)
        return True

    def from_client(self, spec: EntitySpec, request: EventRequest | None) -> Entity:
        """A ``store="client"`` instance: the state the page sent, validated like any input."""
        return cast(Entity, client_instance(spec, request))

    async def publish(self, spec: EntitySpec, key: str, state: State) -> None:
        """Tell live pages about a new state. A broadcast failure is logged, never fatal: the
        state is saved, and streams re-send the current state when they reconnect."""
        channel = channel_name(spec, key)
        if self._wanted(channel):
            await self._send(channel, json.dumps(state))

    async def touch_list(self, spec: EntitySpec) -> None:
        """Tell the record entity's live lists to re-read."""
        channel = list_channel(spec)
        if spec.is_record and self._wanted(channel):
            await self._send(channel, uuid.uuid4().hex)

    def _wanted(self, channel: str) -> bool:
        """Whether anyone could hear ``channel`` (a broadcast that cannot tell says yes)."""
        return self._wants is None or self._wants(channel)

    async def _send(self, channel: str, message: str) -> None:
        try:
            await self.broadcast.publish(channel, message)
        except Exception:
            logger.exception("could not publish on %s", channel)

    async def create(
        self,
        spec: EntitySpec,
        request: EventRequest | None = None,
        check: Callable[[Entity], Awaitable[None]] | None = None,
        /,
        **fields: Any,
    ) -> Entity:
        """A new record with a fresh id: ``fields`` (validated), then what the page may write,
        then its ``on_create(request)`` hook; ``check`` (authorize) sees it before it is saved."""
        key = uuid.uuid4().hex
        model = entity_class(spec)
        try:
            instance = model(**{**fields, "id": key})
        except ValidationError as exc:  # inside an event, a 422 with the messages in the entity's namespace
            raise invalid(spec.name, readable_errors(exc, model)) from None
        if request is not None:
            apply_client_writes(spec, instance, request, creating=True)
        hook = getattr(instance, "on_create", None)
        if callable(hook):
            result = hook(request)
            if inspect.isawaitable(result):
                await result
        if check is not None:
            await check(instance)
        async with self.store_for(spec).hold(spec, key) as slot:
            await slot.save(instance.stored_state())
        await self.touch_list(spec)
        await self.notify(spec, key, None, None, instance.public_state())
        return instance

    async def delete(self, spec: EntitySpec, key: str) -> None:
        async with self.store_for(spec).hold(spec, key) as slot:
            saved = await slot.load()
            before = self._instance(spec, key, saved, True).public_state()
            await slot.delete()
            await self._send(channel_name(spec, key), DELETED)
        await self.touch_list(spec)
        await self.notify(spec, key, None, before, None)

    async def list(self, spec: EntitySpec, limit: int, offset: int, newest: bool = False) -> list[Entity]:
        states = await self.store_for(spec).list(spec, limit, offset, newest)
        return [self._instance(spec, s["id"], s, False) for s in states]

"""Running events: bind, hold, run, then commit, each in a unit of work (``unit.py``); ``sm.edit``,
creates and deletes go the same way. No web types in it."""

from __future__ import annotations

import inspect
import random
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from functools import partial
from typing import Any, cast

import anyio.to_thread
from pydantic import ValidationError

from starmodel_asgi.binding import (
    apply_client_writes,
    bind_params,
    client_instance,
    client_values,
    client_writes,
    set_fields,
)
from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.changes import Subscribers
from starmodel_asgi.elements import to_elements
from starmodel_asgi.entity import EDITOR_KEY, Entity, entity_class
from starmodel_asgi.errors import EventError, internal_error, invalid
from starmodel_asgi.events import EventDescriptor, EventInfo
from starmodel_asgi.logs import EVENTS, get_logger
from starmodel_asgi.messages import readable_errors
from starmodel_asgi.outbox import Outbox
from starmodel_asgi.query import EVERYTHING, Query
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores import State, Store
from starmodel_asgi.unit import CURRENT, Busy, Check, Held, Kept, Unit, instance_from_json, instance_of, keepable
from starmodel_asgi.values import EventRequest, Redirect, Update

logger = get_logger(EVENTS)

_MISSING = object()
_DONE = object()
#: how many times a plain event is run again when a nested hold finds its instance busy
RETRIES = 3


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


async def invoke(
    unit: Unit | None, instance: Entity, descriptor: EventDescriptor, kwargs: dict[str, Any]
) -> AsyncGenerator[Any, None]:
    """Each result of the event: one for plain events, one per yield for generators. Sync code
    runs on the loop (in a worker thread with ``thread=True``). With a ``unit``, each step runs
    with it current, so the writes it makes join it (a background event has none: its
    ``async with self:`` blocks open their own)."""
    bound = descriptor.func.__get__(instance)
    if descriptor.is_async_gen:
        agen = bound(**kwargs)
        try:
            while True:
                try:
                    item = await _in_unit(unit, agen.__anext__)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await agen.aclose()
    elif descriptor.is_sync_gen:
        gen: Iterator[Any] = bound(**kwargs)
        if descriptor.info.thread:
            while (item := await _in_unit(unit, anyio.to_thread.run_sync, next, gen, _DONE)) is not _DONE:
                yield item
        else:
            while (item := _inline(unit, next, gen, _DONE)) is not _DONE:
                yield item
    else:
        yield await call(unit, descriptor, bound, kwargs)


async def call(unit: Unit | None, descriptor: EventDescriptor, bound: Any, kwargs: dict[str, Any]) -> Any:
    """A plain event's one call, with ``unit`` current: sync code on the loop, or in a worker
    thread when the event asks for one (``thread=True``)."""
    if descriptor.is_coroutine:
        return await _in_unit(unit, bound, **kwargs)
    if descriptor.info.thread:
        return await _in_unit(unit, anyio.to_thread.run_sync, partial(bound, **kwargs))
    return _inline(unit, bound, **kwargs)


def _inline(unit: Unit | None, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on the loop, with ``unit`` current (as it is, without one)."""
    if unit is None:
        return fn(*args, **kwargs)
    token = CURRENT.set(unit)
    try:
        return fn(*args, **kwargs)
    finally:
        CURRENT.reset(token)


async def _in_unit(unit: Unit | None, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
    """``await fn(*args, **kwargs)`` with ``unit`` current (as it is, without one)."""
    if unit is None:
        return await fn(*args, **kwargs)
    token = CURRENT.set(unit)
    try:
        return await fn(*args, **kwargs)
    finally:
        CURRENT.reset(token)


class Steps:
    """What the page sees of one instance during an event: each step carries the fields changed
    since the previous one, starting from what the page holds (the signals it sent, else the
    saved state)."""

    def __init__(self, spec: EntitySpec, instance: Entity, request: EventRequest, info: EventInfo) -> None:
        self.spec, self.instance, self.info = spec, instance, info
        self.original = instance.public_state()
        sent = {k: v for k, v in client_values(spec, request).items() if k in spec.shown}
        self.baseline = {**self.original, **sent}
        #: the fields the page may type into and sent: an answer must not overwrite later typing
        self.typed = spec.writable & sent.keys()
        self.count = 0
        self.cleared = not request.errors_shown
        self.redirect: str | None = None

    def step(self, result: Any) -> Update:
        """The first step also carries the blank errors that clear an earlier failure's."""
        public = self.instance.public_state()
        changed = {k: v for k, v in public.items() if self.baseline.get(k, _MISSING) != v}
        guarded = {k: self.baseline[k] for k in self.typed & changed.keys()}
        self.baseline = public
        redirect = result.url if isinstance(result, Redirect) else None
        cleared = None if self.cleared else self.spec.no_errors
        self.cleared = True
        elements = to_elements(result, self.info)
        return Update(self.spec.name, changed, public, elements, redirect, cleared, guarded=guarded)

    def gone(self, update: Update | None) -> Update:
        """The last update of an event that deleted its own record: the page is told it is gone."""
        update = update or Update(self.spec.name, {}, self.baseline)
        update.changed["_deleted"] = True
        update.gone = True
        return update

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


class Blocks:
    """``async with self:`` inside a background event: each block holds the instance through
    ``Dispatcher.edit`` (the lock events and ``sm.edit`` use)."""

    def __init__(self, dispatcher: Dispatcher, spec: EntitySpec, key: str, event: str, request: EventRequest) -> None:
        self.dispatcher, self.spec, self.key, self.event, self.request = dispatcher, spec, key, event, request
        self.open: AsyncExitStack | None = None

    async def enter(self, instance: Entity) -> None:
        if self.open is not None:
            raise RuntimeError(f"{self.spec.entity.__name__}: async with self: blocks cannot nest")
        stack = AsyncExitStack()
        edit = self.dispatcher.edit(self.spec, self.key, into=instance, event=self.event, request=self.request)
        await stack.enter_async_context(edit)
        self.open = stack

    async def exit(self, exc_info: tuple[Any, ...]) -> None:
        stack, self.open = self.open, None
        assert stack is not None
        await stack.__aexit__(*exc_info)


async def new_record(
    spec: EntitySpec,
    request: EventRequest | None,
    check: Check | None,
    fields: dict[str, Any],
) -> Entity:
    """A new record with a fresh id (or the ``id`` given, when moving data in): ``fields``
    (validated), then what the page may write, then its ``on_create(request)`` hook; ``check``
    (authorize) sees it last."""
    model = entity_class(spec)
    known = spec.fields | {f.alias for f in model.model_fields.values() if f.alias}
    if unknown := sorted(fields.keys() - known):
        raise TypeError(
            f"{model.__name__} has no field {', '.join(unknown)} (its fields: {', '.join(sorted(spec.fields))})"
        )
    chosen = fields.get("id")
    if chosen is not None and not (isinstance(chosen, str) and 0 < len(chosen) <= 200 and chosen.isprintable()):
        raise invalid(spec.name, {"id": "An id is text of 1 to 200 printable characters."})
    routes = {"count", "live"} | {s for s, d in spec.events.items() if d.info.collection}
    if chosen in routes:
        raise invalid(spec.name, {"id": f"{chosen!r} is the path of /{spec.name}/{chosen}: choose another id."})
    writes = client_writes(spec, request, creating=True) if request is not None else {}
    values = {**fields, **writes, "id": chosen or uuid.uuid4().hex}
    try:
        instance = model(**values)
    except ValidationError as exc:  # inside an event, a 422 with the messages in the entity's namespace
        if any(error["type"] != "missing" for error in exc.errors()):
            errors = readable_errors(exc, model)
            for error in exc.errors():  # what on_create may still set is not the page's to fix
                if error["type"] == "missing" and error["loc"][0] not in spec.writable:
                    errors.pop(str(error["loc"][0]), None)
            raise invalid(spec.name, errors) from None
        # a required field nobody gave: on_create may set it (an owner from the request), and
        # the record is whole once it has run, or a 422 names what is still missing
        instance = model.model_construct()  # each given value validated as set, the rest unset
        set_fields(spec, instance, values)
        await created(instance, request)
        try:
            instance = model.model_validate(dict(instance.__dict__))
        except ValidationError as exc:
            raise invalid(spec.name, readable_errors(exc, model)) from None
    else:
        await created(instance, request)
    if check is not None:
        await check(instance)
    return instance


async def created(instance: Entity, request: EventRequest | None) -> None:
    result = instance.on_create(request)
    if inspect.isawaitable(result):
        await result


def from_client(spec: EntitySpec, request: EventRequest | None) -> Entity:
    """A ``store="client"`` instance: the state the page sent, validated like any input."""
    return cast(Entity, client_instance(spec, request))


async def begin(
    unit: Unit,
    spec: EntitySpec,
    key: str,
    descriptor: EventDescriptor,
    request: EventRequest,
    must_exist: bool,
    check: Check | None,
) -> tuple[Held, Steps]:
    """The event's instance held (``authorize`` asked about it as it is now, under its lock),
    what the page sees of it, and the page's client-writable fields applied."""
    if spec.in_browser:
        held = unit.adopt(spec, from_client(spec, request), descriptor.info.name)
    else:
        held = await unit.hold(spec, key, must_exist=must_exist, event=descriptor.info.name)
        held.keep = keepable(entity_class(spec))  # ``self`` serves this run only: kept for the next
    if check is not None:
        await check(held.instance)
    steps = Steps(spec, held.instance, request, descriptor.info)
    apply_client_writes(spec, held.instance, request)
    return held, steps


class Runs:
    """The background events running in this process: at most ``most`` at once on one instance
    and ``total`` in all (429 past either), so one session, or many cookieless ones, cannot fill
    the process with them."""

    def __init__(self, most: int, total: int = 256) -> None:
        self.most, self.total = most, total
        self._running: dict[tuple[str, str], int] = {}
        self._all = 0

    def take(self, spec: EntitySpec, key: str) -> Callable[[], None]:
        """Counts one more run of the instance; returns what ends it (once, however often called)."""
        where = (spec.name, key)
        running = self._running.get(where, 0)
        if running >= self.most:
            raise EventError(
                429,
                f"{spec.entity.__name__} already runs {self.most} background events; wait for one to end or cancel it",
                spec.name,
            )
        if self._all >= self.total:
            raise EventError(429, f"{self.total} background events are running here; try again shortly", spec.name)
        self._running[where] = running + 1
        self._all += 1
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self._all -= 1
                left = self._running.pop(where) - 1
                if left:
                    self._running[where] = left

        return end


class Dispatcher:
    """Runs events, ``sm.edit`` blocks, creates and deletes, each in a ``Unit`` (or in the unit
    already open in the current context, which they then join)."""

    def __init__(
        self,
        store_for: Callable[[EntitySpec], Store],
        broadcast: Broadcast,
        subscribers: Subscribers | None = None,
        nested_wait: float = 2.0,
        max_background: int = 4,
    ) -> None:
        self.store_for = store_for
        self.broadcast = broadcast
        self.outbox = Outbox(broadcast)
        self.subscribers = subscribers or Subscribers()
        #: how long a unit that already holds an instance waits for another before it is ``Busy``
        self.nested_wait = nested_wait
        #: which unit of this process holds each instance (for finding units that wait on each other)
        self.holders: dict[Hashable, Unit] = {}
        #: instances events left, for the next hold to take when the store still has their state
        self.kept = Kept()
        self.runs = Runs(max_background)

    def current(self) -> Unit | None:
        """The open unit of this dispatcher in the current context, if any."""
        unit = CURRENT.get()
        return unit if unit is not None and unit.open and unit.dispatcher is self else None

    async def read(
        self, spec: EntitySpec, key: str, *, must_exist: bool = False, request: EventRequest | None = None
    ) -> Entity:
        """The instance as saved (defaults when there is none), or as the current unit sees it.
        A ``store="client"`` instance is the state the page sent in ``request``."""
        if spec.in_browser:
            return from_client(spec, request)
        unit = self.current()
        store = self.store_for(spec)
        if unit is None and store.keeps_json:  # validated straight from the JSON
            return instance_from_json(spec, key, await store.get_text(spec, key), must_exist)
        state = await (store.get(spec, key) if unit is None else unit.get(spec, key))
        return instance_of(spec, key, state, must_exist)

    async def run(
        self,
        spec: EntitySpec,
        key: str,
        descriptor: EventDescriptor,
        request: EventRequest,
        *,
        must_exist: bool = False,
        check: Check | None = None,
    ) -> AsyncGenerator[Update, None]:
        """Yield one ``Update`` per result (one for plain events, one per yield for generators).

        The instance is held for the whole run; the unit commits when the event has finished,
        and the last update is yielded once it has. A failure keeps and tells nothing; once
        steps were sent, its error carries the saved state (``reset``) for the page. Close the
        iterator (``contextlib.aclosing``) when done.
        """
        kwargs = bind_params(descriptor, spec, request)
        unit = Unit(self, request)
        steps: Steps | None = None
        try:
            held, steps = await begin(unit, spec, key, descriptor, request, must_exist, check)
            async with aclosing(invoke(unit, held.instance, descriptor, kwargs)) as results:
                async for result in results:
                    steps.count += 1
                    yield steps.held_back(steps.step(result))
            last = steps.last()
            await unit.commit()
        except Exception as exc:  # a ValidationError here is the event's own bad assignment: a bug
            await unit.rollback()
            raise failed(exc, spec, descriptor, steps.original if steps and steps.count else None)  # noqa: B904
        except BaseException:  # cancelled, or the caller went away
            await unit.rollback()
            raise
        if held.deleted:
            last = steps.gone(last)
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
        check: Check | None = None,
    ) -> Update:
        """``run`` for an event that is not a generator, without an async generator's overhead:
        its one update, returned once the unit has committed. Run again (up to ``RETRIES``
        times) when a nested hold finds an instance busy."""
        kwargs = bind_params(descriptor, spec, request)

        async def once(unit: Unit) -> Update:
            held, steps = await begin(unit, spec, key, descriptor, request, must_exist, check)
            result = await call(unit, descriptor, descriptor.func.__get__(held.instance), kwargs)
            update = steps.step(result)
            await unit.commit()
            return steps.gone(update) if held.deleted else update

        return await retried(self, spec, descriptor, request, once)

    @asynccontextmanager
    async def unit(self, request: EventRequest | None = None) -> AsyncIterator[tuple[Unit, bool]]:
        """The current unit (joined: ``False``), else a new one (of ``request``'s caller) made
        current for the block and committed on a clean exit (``True``)."""
        unit = self.current()
        if unit is not None:
            yield unit, False
            return
        unit = Unit(self, request)
        token = CURRENT.set(unit)
        try:
            yield unit, True
        except BaseException:
            CURRENT.reset(token)
            await unit.rollback()
            raise
        CURRENT.reset(token)
        await unit.commit()

    @asynccontextmanager
    async def edit(
        self,
        spec: EntitySpec,
        key: str,
        into: Entity | None = None,
        event: str | None = None,
        request: EventRequest | None = None,
    ) -> AsyncIterator[Entity]:
        """The instance under its lock (re-read ``into`` an existing instance, if given); saved,
        published and told to subscribers when its unit commits, left as it was when the block
        raises (also inside an event's unit, which then goes on without the block's changes)."""
        if spec.in_browser:
            raise TypeError(f'{spec.entity.__name__} is store="client": its state lives in the page, not here')
        async with self.unit(request) as (unit, own):
            held = await unit.hold(spec, key, must_exist=spec.is_record, event=event)
            if into is not None and into is not held.instance:
                into.__dict__.update(held.instance.__dict__)  # validated fresh state (keeps EDITOR_KEY)
                held.instance = into
            snapshot = None if own else held.instance.stored_state()
            try:
                yield held.instance
            except BaseException:
                if snapshot is not None:  # undo the block's changes; the unit goes on
                    fresh = entity_class(spec).model_validate(snapshot)
                    held.instance.__dict__.update(fresh.__dict__)
                raise

    async def run_background(
        self, spec: EntitySpec, key: str, descriptor: EventDescriptor, request: EventRequest
    ) -> AsyncGenerator[Update, None]:
        """An ``@event(background=True)``: bound and read now (bad input and a missing record
        fail before any answer), then run without the lock; its ``async with self:`` blocks each
        hold the instance in a unit of their own. Each yield is a step for the caller."""
        end = self.runs.take(spec, key)
        try:
            kwargs = bind_params(descriptor, spec, request)
            instance = await self.read(spec, key, must_exist=spec.is_record)
        except BaseException:
            end()
            raise
        run = self._background(spec, instance, descriptor, request, kwargs, end)
        weakref.finalize(run, end)  # a run never started never reaches its ``finally``
        return run

    async def _background(
        self,
        spec: EntitySpec,
        instance: Entity,
        descriptor: EventDescriptor,
        request: EventRequest,
        kwargs: dict[str, Any],
        end: Callable[[], None],
    ) -> AsyncGenerator[Update, None]:
        steps = Steps(spec, instance, request, descriptor.info)
        instance.__dict__[EDITOR_KEY] = Blocks(self, spec, instance.id, descriptor.info.name, request)
        try:
            async for result in invoke(None, instance, descriptor, kwargs):
                steps.count += 1
                yield steps.held_back(steps.step(result))
            last = steps.last()
        except Exception as exc:
            raise failed(exc, spec, descriptor)  # noqa: B904
        finally:
            instance.__dict__.pop(EDITOR_KEY, None)
            end()
        if last is not None:
            yield last

    async def send(self, channel: str, message: str) -> None:
        """Publish through the outbox: soon, in order, never waiting for a slow broadcast."""
        await self.outbox.send(channel, message)

    async def create(
        self,
        spec: EntitySpec,
        request: EventRequest | None = None,
        check: Check | None = None,
        /,
        **fields: Any,
    ) -> Entity:
        """A new record (``new_record``), saved with the current unit or a unit of its own."""
        instance = await new_record(spec, request, check, fields)
        async with self.unit(request) as (unit, _):
            await unit.create(spec, instance, chosen="id" in fields)
        return instance

    async def delete(
        self, spec: EntitySpec, key: str, check: Check | None = None, request: EventRequest | None = None
    ) -> None:
        """Deletes a record (``NotFound`` if there is none), with the current unit if one is open;
        ``check`` (authorize) sees it under its lock first."""
        async with self.unit(request) as (unit, _):
            await unit.delete(spec, key, check)

    async def list(
        self, spec: EntitySpec, limit: int, offset: int, newest: bool = False, query: Query = EVERYTHING
    ) -> list[Entity]:
        """Records from the store matching ``query``, as the current unit (if any) sees them."""
        store = self.store_for(spec)
        # a plain list asks as before queries, so stores written for that still serve it
        states = await (
            store.list(spec, limit, offset, newest) if query.plain else store.list(spec, limit, offset, newest, query)
        )
        unit = self.current()
        if unit is not None:
            states = unit.overlay(spec, states, query)[:limit]
        return [instance_of(spec, s["id"], s, False) for s in states]

    async def count(self, spec: EntitySpec, query: Query = EVERYTHING) -> int:
        """How many records match ``query``, as the current unit (if any) sees them."""
        count = await self.store_for(spec).count(spec, query)
        unit = self.current()
        return count if unit is None else unit.recount(spec, count, query)


async def retried(
    dispatcher: Dispatcher,
    spec: EntitySpec,
    descriptor: EventDescriptor,
    request: EventRequest,
    once: Callable[[Unit], Awaitable[Update]],
) -> Update:
    """``once(unit)`` in a new unit, run again (up to ``RETRIES`` times, after a short random
    wait) when a nested hold finds an instance busy; a failure rolls the unit back."""
    attempt = 0
    while True:
        unit = Unit(dispatcher, request)
        try:
            return await once(unit)
        except Busy:
            await unit.rollback()
            if attempt >= RETRIES:
                raise
        except Exception as exc:  # a ValidationError here is the event's own bad assignment: a bug
            await unit.rollback()
            raise failed(exc, spec, descriptor)  # noqa: B904
        except BaseException:
            await unit.rollback()
            raise
        attempt += 1
        await anyio.sleep(random.uniform(0, 0.02 * 2**attempt))


async def move_session(dispatcher: Dispatcher, specs: Iterable[EntitySpec], old: str, new: str, keep: bool) -> None:
    """A session replaced by ``new`` (its user signed in or out): each of ``old``'s instances moves
    to ``new`` (``keep``: a sign-in, as Django keeps a session's data at login) or is dropped, in
    one unit. Concurrent requests that found the same change each try; the first one moves."""
    async with dispatcher.unit() as (unit, _):
        for spec in specs:
            was = await unit.hold(spec, old)
            if was.saved is None:
                continue
            if keep:
                now = await unit.hold(spec, new)
                if now.saved is None:
                    now.instance = entity_class(spec).model_validate({**was.instance.stored_state(), "id": new})
            was.deleted = True

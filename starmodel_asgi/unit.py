"""The unit of work: every instance one event (or one ``sm.edit`` block) holds, one transaction per
store, and what is told once all of it has committed.

Writes made through the server-side API while a unit is open in the current context
(``request.app.create/edit/delete/get/list`` inside an event) join it instead of opening their
own. Nothing is saved until ``commit``: then every changed instance is checked and saved, each
store's transaction commits (the event's own store first, the others in the order they were
first used), live messages go to the outbox (before the holds are released, so an instance's
changes queue in commit order; nothing waits for the broadcast), the holds are released, and live
lists and subscribers hear of it last.
``rollback`` leaves no write, message, subscriber call, lock or row lock behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Protocol, cast

import anyio
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from starmodel_asgi.changes import Change, Subscribers
from starmodel_asgi.entity import Entity, entity_class
from starmodel_asgi.errors import Conflict, EventError, NotFound, invalid
from starmodel_asgi.logs import EVENTS, get_logger
from starmodel_asgi.query import EVERYTHING, Query
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores import Contention, Slot, State, Store, Transaction
from starmodel_asgi.values import EventRequest
from starmodel_asgi.wire import DELETED, channel_name, list_channel, list_token


class Owner(Protocol):
    """What a unit needs from the dispatcher that runs it."""

    subscribers: Subscribers
    holders: dict[Hashable, Unit]
    nested_wait: float
    kept: Kept

    def store_for(self, spec: EntitySpec) -> Store: ...
    async def send(self, channel: str, message: str) -> None: ...


logger = get_logger(EVENTS)

#: The unit the running event (or ``sm.edit`` block) works in, which nested writes join.
CURRENT: ContextVar[Unit | None] = ContextVar("starmodel_unit", default=None)


class Busy(EventError):
    """A nested hold that could not be taken in time, or would have closed a circle of units
    waiting for each other: the unit is rolled back (and a plain event run again)."""


@dataclass(slots=True)
class Held:
    """One instance in a unit: loaded under its lock, with what was saved (``slot`` is ``None``
    for ``store="client"``: nothing is kept on the server)."""

    spec: EntitySpec
    key: str
    instance: Entity
    slot: Slot | None = None
    saved: str | None = None  # the stored JSON, as ``Entity.stored_json`` writes it (``None``: nothing saved)
    before: State | None = None  # public state when first held, for subscribers
    event: str | None = None
    created: bool = False
    deleted: bool = False
    #: the instance may be kept after the commit for the next hold of it (``Kept``): an event's own
    #: instance, used only while it runs (never one a block or a background event holds on to)
    keep: bool = False
    found: State | None = None  # the state a store of columns gave (``Kept``'s version for it)


def instance_of(spec: EntitySpec, key: str, state: State | None, must_exist: bool) -> Entity:
    """The instance a stored state gives (the defaults for none, unless it ``must_exist``)."""
    if state is None and must_exist:
        raise NotFound(404, f"{spec.name} {key!r} not found", spec.name)
    model = entity_class(spec)
    if state is None:
        return model(id=key)
    try:
        return model.model_validate(state)
    except ValidationError as exc:
        raise stale(spec, key, exc) from None


#: digits in a row past what Python prints (``sys.get_int_max_str_digits``'s default, 4,300)
_LONGEST = 4301
_DIGITS = "0123456789"
_RUN = re.compile(r"[0-9]*")


def long_number(text: str) -> bool:
    """Whether ``text`` holds ``_LONGEST`` digits in a row. Any such run covers a multiple of
    ``_LONGEST``: only the runs through those few places are measured, not the whole text."""
    for at in range(0, len(text), _LONGEST):
        if text[at] in _DIGITS:
            before = text[max(0, at - _LONGEST) : at]
            after = _RUN.match(text, at)
            if len(before) - len(before.rstrip(_DIGITS)) + (after.end() if after else at) - at >= _LONGEST:
                return True
    return False


def instance_from_json(spec: EntitySpec, key: str, text: str | None, must_exist: bool) -> Entity:
    """``instance_of`` for a state stored as JSON, validated straight from the text."""
    if text is None:
        return instance_of(spec, key, None, must_exist)
    try:
        return entity_class(spec).model_validate_json(text)
    except ValidationError as exc:
        raise stale(spec, key, exc) from None


class StaleState(EventError):
    """A stored state the entity no longer accepts (a field's type changed since it was saved)."""


def stale(spec: EntitySpec, key: str, exc: ValidationError) -> StaleState:
    """What a stored state that no longer validates is: an error naming the entity, the fields
    and the upgrade hook, logged, and a ``500`` saying the same (never a bare one)."""
    who = spec.entity.__name__
    fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(state)'}: {e['msg']}" for e in exc.errors())
    message = (
        f"{who} {key!r}: the stored state no longer fits the entity ({fields}). Upgrade old states "
        f'with a @model_validator(mode="before") on {who} that converts them (README, "Migrations")'
    )
    logger.error("%s", message)
    return StaleState(500, message, spec.name)


#: ``authorize`` about the instance concerned: raises (403) when refused.
Check = Callable[[Entity], Awaitable[None]]


def serialised(spec: EntitySpec, instance: Entity) -> tuple[str, bool]:
    """The instance's stored state as JSON, or a 422 naming the fields no page or store could read
    back (lone surrogates; integers past Python's 4,300-digit printing limit, which would save
    and then fail every answer and live stream): nothing unreadable is saved. ``@computed_field``s
    are checked too (every answer sends them), though never stored. With it, whether every value
    had its field's type (a dict appended to a list of models has not): only then is the instance
    what validating the text would give, fit to be kept for the next hold."""
    exclude = cast("set[str]", spec.computed) if spec.computed else None
    try:
        text, typed = instance.model_dump_json(warnings="error"), True
    except PydanticSerializationError:
        text, typed = None, False
    try:
        text = instance.model_dump_json() if text is None else text
        if len(text) < _LONGEST or not long_number(text):
            return (instance.model_dump_json(exclude=exclude) if exclude else text), typed
    except PydanticSerializationError:
        pass
    errors = {}
    for name, value in instance.model_dump(mode="json").items():
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            errors[name] = "This value cannot be stored (a number too long to print, or broken text)"
    if errors:
        raise invalid(spec.name, errors)
    return instance.stored_json(), typed  # the long run of digits was inside a string


@cache
def keepable(entity: type[Entity]) -> bool:
    """Whether the entity's instances may be kept between events (``Kept``): not when it has
    private attributes or its own ``model_post_init``, which a kept instance would carry over from
    the previous event instead of starting afresh as a validated one does."""
    return not entity.__private_attributes__ and entity.model_post_init is Entity.model_post_init


class Kept:
    """The instances events left behind, by (entity name, key), each with the state it was saved
    with (its JSON; for a store of columns, the state as a dict too). A hold that reads that very
    state again takes the instance instead of validating the state once more; any other write,
    by another worker too, changes the state and the instance is dropped. Taken under the hold
    and given back only by a committed unit, it is never shared; a failed event, which may have
    changed it in place, never gives it back. At most ``size`` are kept, the least recent dropped."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: dict[tuple[str, str], tuple[Entity, str, State | None]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def take(self, name: tuple[str, str], found: str | State | None) -> tuple[Entity, str] | None:
        """The instance kept with ``found`` (the JSON or the columns' state just read) and its JSON."""
        item = self._items.pop(name, None)
        if item is None or found is None:
            return None
        instance, text, state = item
        return (instance, text) if found == (text if isinstance(found, str) else state) else None

    def put(self, name: tuple[str, str], instance: Entity, text: str, state: State | None) -> None:
        self._items.pop(name, None)
        self._items[name] = (instance, text, state)
        if len(self._items) > self.size:
            del self._items[next(iter(self._items))]


def changes_of(
    written: list[tuple[Held, str | None]], subscribers: Subscribers, caller: tuple[str | None, str | None]
) -> list[Change]:
    """What ``subscribers`` are told of ``written`` (deleted: ``None``), made by ``caller``."""
    return [
        Change(
            held.spec.entity,
            held.key,
            held.event,
            None if held.created else held.before,
            None if text is None else held.instance.public_state(),
            *caller,
        )
        for held, text in written
        if subscribers.wanted(held.spec.entity)
    ]


class Unit:
    """One unit of work of ``dispatcher``; ``nested_wait`` bounds how long a hold taken while the
    unit already holds something waits (past it, the unit is ``Busy``)."""

    __slots__ = ("_keep", "_taken", "_txns", "caller", "dispatcher", "held", "open", "waiting")

    def __init__(self, dispatcher: Owner, request: EventRequest | None = None) -> None:
        self.dispatcher = dispatcher
        #: who made the changes (user id, session id), for subscribers: ``None``s from scripts
        self.caller = (None, None) if request is None else (request.user_id, request.session_id)
        self.held: dict[tuple[str, str], Held] = {}
        self._txns: dict[str, Transaction] = {}  # by store kind, in the order first used
        self._taken: list[tuple[str, str]] = []  # every hold taken (one may have found no record)
        self._keep: list[tuple[tuple[str, str], Entity, str, State | None]] = []  # for ``Kept``, once committed
        self.open = True
        self.waiting: Hashable | None = None

    # -- holding ------------------------------------------------------------------------

    async def hold(self, spec: EntitySpec, key: str, *, must_exist: bool = False, event: str | None = None) -> Held:
        """The instance under its lock (the one already held, if this unit holds it)."""
        name = (spec.name, key)
        held = self.held.get(name)
        if held is not None:
            if held.deleted and must_exist:
                raise NotFound(404, f"{spec.name} {key!r} not found", spec.name)
            return held
        slot = await self._take(spec, key)
        state: State | None = None
        saved: str | None
        if slot.keeps_json:  # validated straight from the JSON, unless an instance was kept with it
            saved = await slot.load_text()
            kept = self.dispatcher.kept.take(name, saved)
            instance = kept[0] if kept else instance_from_json(spec, key, saved, must_exist)
        else:
            state = await slot.load()
            kept = self.dispatcher.kept.take(name, state)
            if kept:
                instance, saved = kept
            else:
                instance = instance_of(spec, key, state, must_exist)
                saved = None if state is None else instance.stored_json()
        held = Held(spec, key, instance, slot, saved, event=event, found=state)
        if self.dispatcher.subscribers.wanted(spec.entity):
            held.before = instance.public_state()
        self.held[name] = held
        return held

    def adopt(self, spec: EntitySpec, instance: Entity, event: str | None) -> Held:
        """A ``store="client"`` instance: part of the unit, never saved."""
        held = Held(spec, instance.id, instance, event=event)
        self.held[(spec.name, f"client:{id(instance)}")] = held
        return held

    async def _take(self, spec: EntitySpec, key: str) -> Slot:
        """The instance's hold, in its store's transaction. Taken while the unit holds others, it
        may wait only so long, and never for a unit that waits (through others) for this one."""
        txn = self._txns.get(spec.store)
        if txn is None:
            txn = self._txns[spec.store] = self.dispatcher.store_for(spec).begin()
        holders = self.dispatcher.holders
        name = (spec.name, key)
        if not self._taken:  # holding nothing, this unit cannot close a circle
            slot = await txn.hold(spec, key)
            self._taken.append(name)
            holders[name] = self
            return slot
        owner = holders.get(name)
        seen = 0
        while owner is not None and owner.waiting is not None and seen < 64:
            if owner is self:
                break
            owner, seen = holders.get(owner.waiting), seen + 1
        if owner is self:
            raise Busy(503, f"{spec.name} {key!r} is held by an event waiting for this one; try again", spec.name)
        self.waiting = name
        try:
            with anyio.fail_after(self.dispatcher.nested_wait):
                slot = await txn.hold(spec, key)
        except (TimeoutError, Contention):
            raise Busy(503, f"{spec.name} {key!r} stayed busy; try again", spec.name) from None
        finally:
            self.waiting = None
        self._taken.append(name)
        holders[name] = self
        return slot

    async def create(self, spec: EntitySpec, instance: Entity, chosen: bool = False) -> Held:
        """A new record, saved with the unit; one whose id was ``chosen`` (not made up) must not
        exist yet (``Conflict``)."""
        taken = chosen and (spec.name, instance.id) in self.held  # this unit holds (or deleted) it
        slot = None if taken else await self._take(spec, instance.id)
        if chosen and (slot is None or (await slot.load_text() if slot.keeps_json else await slot.load()) is not None):
            raise Conflict(409, f"{spec.name} {instance.id!r} already exists", spec.name)
        assert slot is not None
        held = Held(spec, instance.id, instance, slot, created=True)
        self.held[(spec.name, instance.id)] = held
        return held

    async def delete(self, spec: EntitySpec, key: str, check: Check | None = None) -> Held:
        """Deletes a record with the unit (``NotFound`` if there is none); ``check`` sees it first."""
        held = await self.hold(spec, key, must_exist=True)
        if check is not None:
            await check(held.instance)
        held.deleted = True
        return held

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        """The state as this unit sees it (its own changes included), without holding it."""
        held = self.held.get((spec.name, key))
        if held is not None:
            return None if held.deleted else held.instance.stored_state()
        txn = self._txns.get(spec.store)
        return await (self.dispatcher.store_for(spec).get(spec, key) if txn is None else txn.get(spec, key))

    def overlay(self, spec: EntitySpec, states: list[State], query: Query = EVERYTHING) -> list[State]:
        """A list read from the store, as this unit sees it: its changed records as they are now
        (gone if they no longer match ``query``), its deleted ones gone, and those it created or
        changed to match at the end."""
        mine = {key: held for (name, key), held in self.held.items() if name == spec.name}
        if not mine:
            return states
        out = []
        for state in states:
            held = mine.pop(state.get("id", ""), None)
            if held is None:
                out.append(state)
            elif not held.deleted and query.matches(now := held.instance.stored_state()):
                out.append(now)
        return out + [joined for held in mine.values() if (joined := self._joined(held, query)) is not None]

    @staticmethod
    def _joined(held: Held, query: Query) -> State | None:
        """The record's state if this unit made it match ``query`` (created it, or changed it to
        match), else ``None``."""
        if held.deleted or held.slot is None:
            return None
        state = held.instance.stored_state()
        if not query.matches(state) or (held.saved is not None and query.matches(json.loads(held.saved))):
            return None
        return state if held.created or held.saved is not None else None

    def recount(self, spec: EntitySpec, count: int, query: Query) -> int:
        """A count read from the store, as this unit sees it: each record it changed counted as it
        is now instead of as saved."""
        for (name, _), held in self.held.items():
            if name != spec.name or held.slot is None:
                continue
            was = held.saved is not None and query.matches(json.loads(held.saved))
            now = not held.deleted and (held.created or held.saved is not None)
            count += int(now and query.matches(held.instance.stored_state())) - int(was)
        return count

    # -- ending -------------------------------------------------------------------------

    async def commit(self) -> None:
        """Saves every change, commits every store, then tells live pages, lists and subscribers."""
        self.open = False
        try:
            written = await self._write()
            for txn in self._txns.values():
                await txn.commit()
        except BaseException:
            await self._abort()
            raise
        for item in self._keep:  # still held: nobody else can take them yet
            self.dispatcher.kept.put(*item)
        if not written:
            await self._release()
            return
        try:  # before the holds are released: pages see an instance's changes in commit order
            send = self.dispatcher.send
            for held, text in written:
                if not getattr(held.slot, "published", False):  # a store of one's own may not say
                    await send(channel_name(held.spec, held.key), DELETED if text is None else text)
            # read while held: a kept instance is the next holder's once released
            subscribers = self.dispatcher.subscribers
            changes = changes_of(written, subscribers, self.caller) if subscribers else []
        finally:
            await self._release()  # transactions shield their own release
        if changes or any(held.spec.is_record for held, _ in written):
            await self._tell(written, changes)

    async def rollback(self) -> None:
        """Nothing of the unit is kept; every hold is released. Safe to call twice."""
        self.open = False
        await self._abort()

    async def _write(self) -> list[tuple[Held, str | None]]:
        """Saves what changed (deleted: ``None``), each checked first."""
        written: list[tuple[Held, str | None]] = []
        for held in self.held.values():
            slot = held.slot
            if slot is None:
                continue
            if held.deleted:
                if held.saved is not None:
                    await slot.delete()
                    written.append((held, None))
                continue
            text, typed = serialised(held.spec, held.instance)
            keep = held.keep and typed
            name = (held.spec.name, held.key)
            if held.saved is None:  # nothing saved yet: a read gives the defaults anyway
                if not held.created and text == entity_class(held.spec)(id=held.key).stored_json():
                    continue
            elif text == held.saved:
                if keep:
                    self._keep.append((name, held.instance, held.saved, held.found))
                continue
            state = None if slot.keeps_json else held.instance.stored_state()
            await slot.save(state, text)
            if keep:
                self._keep.append((name, held.instance, text, state))
            written.append((held, text))
        return written

    async def _tell(self, written: list[tuple[Held, str | None]], changes: list[Change]) -> None:
        """Live lists (once per entity) and subscribers, after the holds are released."""
        dispatcher = self.dispatcher
        touched = {held.spec.name: held.spec for held, _ in written if held.spec.is_record}
        for spec in touched.values():
            await dispatcher.send(list_channel(spec), list_token())
        for change in changes:
            await dispatcher.subscribers.notify(change)

    async def _abort(self) -> None:
        try:
            for txn in self._txns.values():
                await txn.rollback()
        finally:
            await self._release()

    async def _release(self) -> None:
        txns, self._txns = self._txns, {}
        holders = self.dispatcher.holders
        for name in self._taken:
            if holders.get(name) is self:
                del holders[name]
        for txn in reversed(txns.values()):
            try:
                await txn.release()
            except Exception:  # the others are still released
                logger.exception("releasing a hold failed")

"""In-process store: dicts, per-instance locks, lazily swept TTLs."""

from __future__ import annotations

import itertools
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starmodel_asgi.query import EVERYTHING, Query, window
from starmodel_asgi.stores.base import Alone, KeyedLocks, KeyHold, State, Stored, ttl_for

if TYPE_CHECKING:
    from starmodel_asgi.spec import EntitySpec

Key = tuple[str, str]


@dataclass
class _Entry:
    text: str  # JSON: every read is a fresh copy, so no event ever shares the stored state
    expires: float | None
    seq: int = 0  # creation order


class ValueIndex:
    """The keys of the records holding each value of an indexed field (``indexes``), kept as
    records are written and dropped: a count is a set's size, a filtered list parses only the
    records it keeps."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, Any], set[Key]] = {}
        self._of: dict[Key, list[tuple[str, str, Any]]] = {}

    def put(self, spec: EntitySpec, key: Key, text: str) -> None:
        self.drop(key)
        state = _loads(text)
        entries = self._of[key] = [(spec.name, name, state.get(name)) for name in spec.indexes]
        for entry in entries:
            self._keys.setdefault(entry, set()).add(key)

    def drop(self, key: Key) -> None:
        for entry in self._of.pop(key, ()):
            keys = self._keys[entry]
            keys.discard(key)
            if not keys:
                del self._keys[entry]

    def keys(self, spec: EntitySpec, query: Query) -> set[Key] | None:
        """The fewest keys that can match ``query`` (``None``: no filter is on an indexed field)."""
        found = [self._keys.get((spec.name, name, value), set()) for name, value in query.where if name in spec.indexes]
        return min(found, key=len) if found else None


class MemorySlot:
    __slots__ = ("_key", "_spec", "_txn")
    keeps_json = True
    published = False

    def __init__(self, txn: MemoryTransaction, spec: EntitySpec, key: Key) -> None:
        self._txn, self._spec, self._key = txn, spec, key

    async def load(self) -> State | None:
        text = await self.load_text()
        return None if text is None else _loads(text)

    async def load_text(self) -> str | None:
        pending = self._txn._writes.get(self._key)
        return pending[1] if pending is not None else self._txn._store._read(self._spec, self._key)

    async def save(self, state: State | None = None, text: str | None = None) -> None:
        self._txn._writes[self._key] = (self._spec, json.dumps(state) if text is None else text)

    async def delete(self) -> None:
        self._txn._writes[self._key] = (self._spec, None)


class MemoryTransaction:
    """Instances held by in-process locks; writes kept aside and applied at ``commit``."""

    __slots__ = ("_holds", "_store", "_writes")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._holds: list[KeyHold] = []
        self._writes: dict[Key, tuple[EntitySpec, str | None]] = {}

    async def hold(self, spec: EntitySpec, key: str) -> MemorySlot:
        k = (spec.name, key)
        hold = self._store._locks.hold(k)
        await hold.__aenter__()
        self._holds.append(hold)
        return MemorySlot(self, spec, k)

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        pending = self._writes.get((spec.name, key))
        text = pending[1] if pending is not None else self._store._read(spec, (spec.name, key))
        return None if text is None else _loads(text)

    async def commit(self) -> None:
        writes, self._writes = self._writes, {}
        for key, (spec, text) in writes.items():
            if text is None:
                self._store._drop(key)
            else:
                self._store._write(spec, key, text)

    async def rollback(self) -> None:
        self._writes.clear()

    async def release(self) -> None:
        holds, self._holds = self._holds, []
        for hold in reversed(holds):
            await hold.__aexit__(None, None, None)


def _loads(text: str) -> State:
    state: State = json.loads(text)
    return state


class MemoryStore:
    """State kept in this process. Instances idle past their TTL are dropped on a later access.

    Session instances are bounded: past ``max_sessions`` of them (about 1-2 KB each for a small
    entity) one is dropped, so clients without a cookie cannot grow memory without limit. Sessions
    not yet back (a visitor, or a flood of cookieless requests) go first, least recent first; a
    session used again at least ``returned_after`` seconds after its first use is kept while up
    to 80% of the bound are such returning ones, so a flood of new visitors (even ones that use
    their cookie twice at once) cannot push out people who are using the site. User instances
    (keyed by the host's signed-in users), global instances and records are never dropped (they
    are data, not a cache of a visitor)."""

    def __init__(
        self,
        default_ttl: float | None = None,
        sweep_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = 20_000,
        returned_after: float = 60.0,
    ) -> None:
        self.default_ttl = default_ttl
        self.sweep_interval = sweep_interval
        self.max_sessions, self.returned_after = max_sessions, returned_after
        self._clock = clock
        self._data: dict[Key, _Entry] = {}
        # session keys, least recent first: used once, and used again (kept before the others)
        self._once: OrderedDict[Key, float] = OrderedDict()  # -> when first used
        self._again: OrderedDict[Key, None] = OrderedDict()
        self._locks = KeyedLocks()
        self._last_sweep = clock()
        self._seq = itertools.count()
        self._values = ValueIndex()

    def __len__(self) -> int:
        return len(self._data)

    keeps_json = True

    def begin(self) -> MemoryTransaction:
        return MemoryTransaction(self)

    def hold(self, spec: EntitySpec, key: str) -> Alone:
        return Alone(MemoryTransaction(self), spec, key)

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        text = self._read(spec, (spec.name, key))
        return None if text is None else _loads(text)

    async def get_text(self, spec: EntitySpec, key: str) -> str | None:
        return self._read(spec, (spec.name, key))

    def _texts(self, spec: EntitySpec) -> list[str]:
        """The entity's live instances' JSON, in creation order."""
        name, now = spec.name, self._clock()
        self._sweep(now)
        return [e.text for (n, _), e in self._data.items() if n == name and (e.expires is None or e.expires > now)]

    def _matching(self, spec: EntitySpec, query: Query) -> list[State]:
        """The matching instances, in creation order: those of the first indexed filter's value,
        else every one (parsed)."""
        keys = self._values.keys(spec, query)
        if keys is None:
            return [state for text in self._texts(spec) if query.matches(state := _loads(text))]
        entries = sorted((e for k in keys if (e := self._live(k)) is not None), key=lambda e: e.seq)
        return [state for e in entries if query.matches(state := _loads(e.text))]

    def _live(self, key: Key) -> _Entry | None:
        entry = self._data.get(key)
        return None if entry is None or (entry.expires is not None and entry.expires <= self._clock()) else entry

    async def list(
        self, spec: EntitySpec, limit: int, offset: int, newest: bool = False, query: Query = EVERYTHING
    ) -> list[State]:
        if query.plain:  # no state parsed but the window's
            return [_loads(text) for text in window(self._texts(spec), limit, offset, newest)]
        return window(query.sort(self._matching(spec, query)), limit, offset, newest)

    async def count(self, spec: EntitySpec, query: Query = EVERYTHING) -> int:
        if not query.where:
            return len(self._texts(spec))
        keys = self._values.keys(spec, query)
        if keys is not None and len(query.where) == 1:  # the value's keys, without parsing a record
            self._sweep(self._clock())
            return sum(1 for k in keys if self._live(k) is not None)
        return len(self._matching(spec, query))

    async def dump(self, spec: EntitySpec) -> AsyncIterator[Stored]:
        name, now = spec.name, self._clock()
        for (n, key), entry in list(self._data.items()):  # in the order first written
            if n == name and (entry.expires is None or entry.expires > now):
                yield Stored(key, entry.text, None if entry.expires is None else entry.expires - now)

    async def restore(self, spec: EntitySpec, items: Sequence[Stored]) -> int:
        written, now = 0, self._clock()
        for item in items:
            key = (spec.name, item.key)
            entry = self._data.get(key)
            if entry is not None and (entry.expires is None or entry.expires > now):
                continue
            self._drop(key)  # an expired one: the new one goes last, in creation order
            expires = None if item.expires_in is None else now + item.expires_in
            self._data[key] = _Entry(item.text, expires, next(self._seq))
            if spec.indexes:
                self._values.put(spec, key, item.text)
            if spec.scope == "session":
                self._used(key, now)
            written += 1
        return written

    async def ping(self) -> None:
        """In this process: nothing to reach."""

    async def aclose(self) -> None:
        self._data.clear()
        self._values = ValueIndex()
        self._once.clear()
        self._again.clear()

    def _read(self, spec: EntitySpec, key: Key) -> str | None:
        now = self._clock()
        self._sweep(now)
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires is not None and entry.expires <= now:
            self._drop(key)
            return None
        ttl = ttl_for(spec, self.default_ttl)
        entry.expires = None if ttl is None else now + ttl
        if spec.scope == "session":
            self._used(key, now)
        return entry.text

    def _write(self, spec: EntitySpec, key: Key, text: str) -> None:
        ttl = ttl_for(spec, self.default_ttl)
        now = self._clock()
        old = self._data.get(key)
        seq = next(self._seq) if old is None else old.seq
        self._data[key] = _Entry(text, None if ttl is None else now + ttl, seq)
        if spec.indexes:
            self._values.put(spec, key, text)
        if spec.scope == "session":
            self._used(key, now)

    def _used(self, key: Key, now: float) -> None:
        """Notes a use of a session: its first goes to ``_once``, one ``returned_after`` seconds
        later moves it to ``_again``; past the bound, the least recent of ``_once`` goes first."""
        if key in self._again:
            self._again.move_to_end(key)
        elif key in self._once:
            if now - self._once[key] < self.returned_after:
                self._once.move_to_end(key)
                return
            del self._once[key]
            self._again[key] = None
            if len(self._again) > self.max_sessions * 0.8:  # the oldest returning one is a visitor again
                self._once[self._again.popitem(last=False)[0]] = now
        else:
            self._once[key] = now
        while len(self._once) + len(self._again) > self.max_sessions:
            oldest, _ = (self._once or self._again).popitem(last=False)
            self._data.pop(oldest, None)

    def _drop(self, key: Key) -> None:
        self._data.pop(key, None)
        self._values.drop(key)
        self._once.pop(key, None)
        self._again.pop(key, None)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        expired = [k for k, e in self._data.items() if e.expires is not None and e.expires <= now]
        for k in expired:
            self._drop(k)

"""In-process store: dicts, per-instance locks, lazily swept TTLs."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starmodel_asgi.stores.base import KeyedLocks, State, ttl_for

if TYPE_CHECKING:
    from starmodel_asgi.spec import EntitySpec

Key = tuple[str, str]


@dataclass
class _Entry:
    state: State
    expires: float | None


class MemorySlot:
    def __init__(self, store: MemoryStore, spec: EntitySpec, key: Key) -> None:
        self._store, self._spec, self._key = store, spec, key

    async def load(self) -> State | None:
        return self._store._read(self._spec, self._key)

    async def save(self, state: State) -> None:
        self._store._write(self._spec, self._key, state)

    async def delete(self) -> None:
        self._store._drop(self._key)


class MemoryHold:
    """``async with store.hold(spec, key) as slot`` (a class: this runs on every event)."""

    __slots__ = ("_hold", "_slot")

    def __init__(self, store: MemoryStore, spec: EntitySpec, key: Key) -> None:
        self._slot = MemorySlot(store, spec, key)
        self._hold = store._locks.hold(key)

    async def __aenter__(self) -> MemorySlot:
        await self._hold.__aenter__()
        return self._slot

    async def __aexit__(self, *exc_info: object) -> None:
        await self._hold.__aexit__(*exc_info)


class MemoryStore:
    """State kept in this process. Instances idle past their TTL are dropped on a later access.

    Session and user instances are bounded: past ``max_sessions`` of them (about 1-2 KB each for
    a small entity), the least recently used is dropped, so clients without a cookie cannot grow
    memory without limit. Global instances and records are never dropped (they are data, not a
    cache of a visitor)."""

    def __init__(
        self,
        default_ttl: float | None = None,
        sweep_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = 20_000,
    ) -> None:
        self.default_ttl = default_ttl
        self.sweep_interval = sweep_interval
        self.max_sessions = max_sessions
        self._clock = clock
        self._data: dict[Key, _Entry] = {}
        self._visitors: OrderedDict[Key, None] = OrderedDict()  # session/user keys, least recent first
        self._locks = KeyedLocks()
        self._last_sweep = clock()

    def __len__(self) -> int:
        return len(self._data)

    def hold(self, spec: EntitySpec, key: str) -> MemoryHold:
        return MemoryHold(self, spec, (spec.name, key))

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        return self._read(spec, (spec.name, key))

    async def list(self, spec: EntitySpec, limit: int, offset: int, newest: bool = False) -> list[State]:
        self._sweep()
        name, now = spec.name, self._clock()
        states = [e.state for (n, _), e in self._data.items() if n == name and (e.expires is None or e.expires > now)]
        if newest:
            end = max(len(states) - offset, 0)
            return states[max(end - limit, 0) : end]
        return states[offset : offset + limit]

    async def aclose(self) -> None:
        self._data.clear()
        self._visitors.clear()

    def _read(self, spec: EntitySpec, key: Key) -> State | None:
        self._sweep()
        entry = self._data.get(key)
        if entry is None:
            return None
        now = self._clock()
        if entry.expires is not None and entry.expires <= now:
            self._drop(key)
            return None
        ttl = ttl_for(spec, self.default_ttl)
        entry.expires = None if ttl is None else now + ttl
        if key in self._visitors:
            self._visitors.move_to_end(key)
        return entry.state

    def _write(self, spec: EntitySpec, key: Key, state: State) -> None:
        ttl = ttl_for(spec, self.default_ttl)
        self._data[key] = _Entry(state, None if ttl is None else self._clock() + ttl)
        if spec.scope in ("session", "user"):
            self._visitors[key] = None
            self._visitors.move_to_end(key)
            while len(self._visitors) > self.max_sessions:
                oldest, _ = self._visitors.popitem(last=False)
                self._data.pop(oldest, None)

    def _drop(self, key: Key) -> None:
        self._data.pop(key, None)
        self._visitors.pop(key, None)

    def _sweep(self) -> None:
        now = self._clock()
        if now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        expired = [k for k, e in self._data.items() if e.expires is not None and e.expires <= now]
        for k in expired:
            self._drop(k)

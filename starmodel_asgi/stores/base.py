"""The ``Store`` protocol every backend speaks, and what the backends share."""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:
    from starmodel_asgi.spec import EntitySpec

State = dict[str, Any]


class Slot(Protocol):
    """One instance, held exclusively (across processes where the store is shared).

    ``save`` writes the state: later loads in the block see it, and it is durable at the latest
    when the ``hold`` block exits normally. Memory and Redis make it durable at once; SQL keeps
    one transaction (and the row lock) for the whole block and commits when it exits. Leaving
    the block by an exception saves nothing more and rolls back whatever is not durable yet
    (on SQL, every save of the block).
    """

    async def load(self) -> State | None: ...
    async def save(self, state: State) -> None: ...
    async def delete(self) -> None: ...


class Store(Protocol):
    def hold(self, spec: EntitySpec, key: str) -> AbstractAsyncContextManager[Slot]:
        """Serialise access to one instance for the duration of the block."""
        ...

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        """Read without holding the instance (a consistent, possibly stale, snapshot)."""
        ...

    async def list(self, spec: EntitySpec, limit: int, offset: int, newest: bool = False) -> list[State]:
        """Stored instances of a record entity, oldest first: skipping the ``offset`` oldest, or
        with ``newest`` the ``offset`` newest."""
        ...

    async def aclose(self) -> None: ...


def ttl_for(spec: EntitySpec, default: float | None) -> float | None:
    """Seconds an idle instance is kept: the entity's ``ttl``, else ``default`` for session and
    user instances; global and record instances never expire unless they set one."""
    if spec.ttl is not None:
        return spec.ttl
    return default if spec.scope in ("session", "user") else None


class KeyedLocks:
    """In-process locks by key, forgotten when nobody holds or waits for them. Stores take one
    before a cross-process lock so a process sends ``width`` waiters per instance, not hundreds
    (``width=2`` keeps the next one queued in the database, ready the moment the row is free)."""

    def __init__(self, width: int = 1) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock | anyio.Semaphore, int]] = {}
        self._width = width

    def __len__(self) -> int:
        return len(self._locks)

    def hold(self, key: Hashable) -> KeyHold:
        """``async with locks.hold(key):`` (a class, not a generator: this runs on every event)."""
        return KeyHold(self._locks, key, self._width)


class KeyHold:
    __slots__ = ("_key", "_lock", "_locks", "_width")

    def __init__(
        self, locks: dict[Hashable, tuple[anyio.Lock | anyio.Semaphore, int]], key: Hashable, width: int
    ) -> None:
        self._locks, self._key, self._width = locks, key, width

    async def __aenter__(self) -> None:
        key, locks = self._key, self._locks
        lock, users = locks.get(key) or (self._new(), 0)
        locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._forget()
            raise
        self._lock = lock

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._forget()

    def _new(self) -> anyio.Lock | anyio.Semaphore:
        if self._width == 1:
            return anyio.Lock(fast_acquire=True)
        return anyio.Semaphore(self._width, fast_acquire=True)

    def _forget(self) -> None:
        lock, users = self._locks[self._key]
        if users == 1:
            del self._locks[self._key]
        else:
            self._locks[self._key] = (lock, users - 1)

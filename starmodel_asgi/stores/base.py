"""The ``Store`` protocol every backend speaks, and what the backends share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from starmodel_asgi.query import EVERYTHING, Query

if TYPE_CHECKING:
    from starmodel_asgi.spec import EntitySpec

State = dict[str, Any]


class Slot(Protocol):
    """One instance, held by a ``Transaction`` (across processes where the store is shared).

    ``save`` writes the state (``text`` is its JSON when the caller has it): later loads in the
    transaction see it, and it becomes durable when the transaction commits, together with every
    other write of that transaction. A store that keeps JSON (``keeps_json``) also hands it over
    unparsed (``load_text``), so the caller validates it in one step.
    """

    keeps_json: bool
    #: the last ``save`` or ``delete`` committed also published the change (the Redis store, when
    #: the broadcast is on its server): the unit does not publish it again
    published: bool

    async def load(self) -> State | None: ...
    async def load_text(self) -> str | None: ...
    async def save(self, state: State | None = None, text: str | None = None) -> None:
        """Either or both: the state as a dict, its JSON."""
        ...

    async def delete(self) -> None: ...


class Transaction(Protocol):
    """One store's part of a unit of work. Every instance held in it stays held until
    ``release``; its writes become durable together at ``commit`` (SQL: one database transaction;
    memory and Redis: applied at commit, under the holds) or are dropped by ``rollback``.
    ``release`` is always called last, once. ``rollback`` and ``release`` finish even when the
    caller is being cancelled (a backend that awaits I/O there shields it)."""

    async def hold(self, spec: EntitySpec, key: str) -> Slot: ...

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        """Read without holding, seeing this transaction's own writes."""
        ...

    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def release(self) -> None: ...


class Contention(Exception):
    """A hold that could not be taken without risking a deadlock (the database said so): the
    unit of work is rolled back and may be run again."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One instance as a store keeps it, to move it to another store (``sm.copy``)."""

    key: str  # the session id, user id, record id, or ``GLOBAL_KEY``
    text: str  # its state as JSON
    expires_in: float | None  # seconds left before it expires (``None``: never)
    created: float | None = None  # when it was first saved (wall clock), where the store keeps it


class Store(Protocol):
    #: ``get_text`` gives the stored JSON (memory, Redis); SQL rows are columns
    keeps_json: bool

    def begin(self) -> Transaction:
        """A new transaction (nothing is held or opened until its first ``hold``)."""
        ...

    def hold(self, spec: EntitySpec, key: str) -> AbstractAsyncContextManager[Slot]:
        """One instance in a transaction of its own: committed when the block exits normally."""
        ...

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        """Read without holding the instance (a consistent, possibly stale, snapshot)."""
        ...

    async def get_text(self, spec: EntitySpec, key: str) -> str | None:
        """``get`` as the stored JSON, where the store ``keeps_json``."""
        ...

    async def list(
        self, spec: EntitySpec, limit: int, offset: int, newest: bool = False, query: Query = EVERYTHING
    ) -> list[State]:
        """Stored instances of a record entity matching ``query``, in its order (creation order by
        default): skipping the ``offset`` first, or with ``newest`` the ``offset`` last."""
        ...

    async def count(self, spec: EntitySpec, query: Query = EVERYTHING) -> int:
        """How many stored instances of a record entity match ``query``."""
        ...

    def dump(self, spec: EntitySpec) -> AsyncIterator[Stored]:
        """Every live instance of ``spec`` (each session's, user's, record, or the global one),
        oldest first where the store keeps the order (records always)."""
        ...

    async def restore(self, spec: EntitySpec, items: Sequence[Stored]) -> int:
        """Writes each of ``items`` under its key, with its remaining TTL and creation time (in
        their order when ``created`` is ``None``), unless a live instance has that key already:
        nothing is overwritten. Returns how many were written."""
        ...

    async def ping(self) -> None:
        """A round trip to the store's server (``GET /health``); nothing for one in this process."""
        ...

    async def aclose(self) -> None: ...


class Alone:
    """``async with store.hold(spec, key) as slot``: one instance in a transaction of its own,
    committed on a clean exit, rolled back otherwise, released either way."""

    __slots__ = ("_key", "_spec", "_txn")

    def __init__(self, txn: Transaction, spec: EntitySpec, key: str) -> None:
        self._txn, self._spec, self._key = txn, spec, key

    async def __aenter__(self) -> Slot:
        try:
            return await self._txn.hold(self._spec, self._key)
        except BaseException:
            await self._txn.release()
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        try:
            if exc_type is None:
                await self._txn.commit()
            else:
                await self._txn.rollback()
        finally:
            await self._txn.release()


def ttl_for(spec: EntitySpec, default: float | None) -> float | None:
    """Seconds an idle instance is kept: the entity's ``ttl``, else ``default`` for session and
    user instances; global and record instances never expire unless they set one."""
    if spec.ttl is not None:
        return spec.ttl
    return default if spec.scope in ("session", "user") else None


class KeyedLocks:
    """In-process locks by key, forgotten when nobody holds or waits for them. Stores take one
    before a cross-process lock so a process sends ``width`` waiters per instance, not hundreds
    (``width=2`` keeps the next one queued in the database, ready the moment the row is free).
    Forgotten locks are kept for reuse (up to ``SPARE_LOCKS``): making one costs more than the
    rest of an uncontended hold."""

    def __init__(self, width: int = 1) -> None:
        self._locks: dict[Hashable, tuple[anyio.Semaphore, int]] = {}
        self._spare: list[anyio.Semaphore] = []
        self._width = width

    def __len__(self) -> int:
        return len(self._locks)

    def hold(self, key: Hashable) -> KeyHold:
        """``async with locks.hold(key):`` (a class, not a generator: this runs on every event)."""
        return KeyHold(self, key)

    def _new(self) -> anyio.Semaphore:
        if self._spare:
            return self._spare.pop()
        # a semaphore, not a Lock: a unit may be released by another task than the one that held
        # (a write from a sync event's worker thread runs in a task of its own)
        return anyio.Semaphore(self._width, fast_acquire=True)

    def _forget(self, key: Hashable) -> None:
        lock, users = self._locks[key]
        if users > 1:
            self._locks[key] = (lock, users - 1)
            return
        del self._locks[key]
        if len(self._spare) < SPARE_LOCKS and lock.value == self._width:
            self._spare.append(lock)


#: How many idle locks ``KeyedLocks`` keeps for reuse.
SPARE_LOCKS = 64


class KeyHold:
    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: KeyedLocks, key: Hashable) -> None:
        self._locks, self._key = locks, key

    async def __aenter__(self) -> None:
        key, owner = self._key, self._locks
        locks = owner._locks
        lock, users = locks.get(key) or (owner._new(), 0)
        locks[key] = (lock, users + 1)
        try:
            if users:  # taken or waited for: wait in turn
                await lock.acquire()
            else:  # nobody else: no need to wait (nor to look for a cancellation)
                lock.acquire_nowait()
        except BaseException:
            owner._forget(key)
            raise
        self._lock = lock

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._locks._forget(self._key)

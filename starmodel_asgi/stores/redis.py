"""Redis store (redis-py asyncio): one JSON string per instance, TTLs native, a lock per instance.

``hold`` takes a Redis lock (``SET NX PX`` with a random token) on the instance and renews its
lease while the instance is held; writes go through a script that checks the token first, so a
holder whose lock was lost anyway fails loudly instead of overwriting someone else's change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError

from starmodel_asgi.stores.base import KeyedLocks, State, ttl_for

if TYPE_CHECKING:
    from starmodel_asgi.spec import EntitySpec

logger = logging.getLogger("starmodel_asgi")

# KEYS: lock, state, index. ARGV: token, state JSON, ttl ms (0: none), lock ms, score, member, indexed.
_SAVE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[4])
if tonumber(ARGV[3]) > 0 then
  redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('set', KEYS[2], ARGV[2])
end
if ARGV[7] == '1' then redis.call('zadd', KEYS[3], 'NX', ARGV[5], ARGV[6]) end
return 1
"""
# KEYS: lock, state, index. ARGV: token, member.
_DELETE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[2])
redis.call('zrem', KEYS[3], ARGV[2])
return 1
"""
# KEYS: lock. ARGV: token. Deletes the lock only if it is still ours.
_UNLOCK = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisSlot:
    def __init__(self, store: RedisStore, spec: EntitySpec, key: str, token: str) -> None:
        self._store, self._spec, self._key, self._token = store, spec, key, token
        self._keys = [store._lock_key(spec, key), store._state_key(spec, key), store._index_key(spec)]

    async def load(self) -> State | None:
        return await self._store.get(self._spec, self._key)

    async def save(self, state: State) -> None:
        ttl = ttl_for(self._spec, self._store.default_ttl)
        indexed = "1" if self._spec.is_record else "0"
        args: list[str | int | float] = [self._token, json.dumps(state), 0 if ttl is None else _ms(ttl)]
        args += [_ms(self._store.lock_timeout), self._store._clock(), self._key, indexed]
        if not await self._store._save(keys=self._keys, args=args):
            raise LockNotOwnedError(f"lost the lock on {self._keys[1]} (held past lock_timeout?)")

    async def delete(self) -> None:
        if not await self._store._delete(keys=self._keys, args=[self._token, self._key]):
            raise LockNotOwnedError(f"lost the lock on {self._keys[1]} (held past lock_timeout?)")


class RedisStore:
    """Entity state in Redis under ``prefix`` (``state:``, ``lock:`` and, for records, ``index:``
    keys). A lock lease lasts ``lock_timeout`` seconds; while the instance is held it is renewed
    every ``lock_timeout / 3`` seconds (and by every save), so events may run longer than the lease.
    A holder that loses its lock anyway (Redis unreachable for a whole lease) cannot write."""

    def __init__(
        self,
        url: str,
        default_ttl: float | None = None,
        *,
        prefix: str = "starmodel:",
        lock_timeout: float = 60.0,
        lock_poll: float = 0.005,
        clock: Callable[[], float] = time.time,
        client: Redis | None = None,
    ) -> None:
        self.default_ttl = default_ttl
        self.prefix = prefix
        self.lock_timeout = lock_timeout
        self.lock_poll = lock_poll
        self._clock = clock
        self.client: Redis = client if client is not None else Redis.from_url(url, decode_responses=True)
        self._save = self.client.register_script(_SAVE)
        self._delete = self.client.register_script(_DELETE)
        self._unlock = self.client.register_script(_UNLOCK)
        self._locks = KeyedLocks()

    def _state_key(self, spec: EntitySpec, key: str) -> str:
        return f"{self.prefix}state:{spec.name}:{key}"

    def _lock_key(self, spec: EntitySpec, key: str) -> str:
        return f"{self.prefix}lock:{spec.name}:{key}"

    def _index_key(self, spec: EntitySpec) -> str:
        return f"{self.prefix}index:{spec.name}"

    @asynccontextmanager
    async def hold(self, spec: EntitySpec, key: str) -> AsyncIterator[RedisSlot]:
        async with self._locks.hold((spec.name, key)):
            token = uuid.uuid4().hex
            name = self._lock_key(spec, key)
            lock = self.client.lock(name, timeout=self.lock_timeout, sleep=self.lock_poll, thread_local=False)
            try:
                await lock.acquire(token=token)
            except BaseException:
                # cancelled (or failed) after SET NX may have run: do not leave our lock behind
                with anyio.CancelScope(shield=True):
                    await self._forget_lock(name, token)
                raise
            # A plain asyncio task, not a task group: this block yields to the dispatcher's async
            # generator, which may be finalised in another task (a cancel scope left open across
            # that yield would be exited in the wrong task). The redis client is asyncio-only.
            renewal = asyncio.create_task(self._renew(lock, name), name=f"renew {name}")
            try:
                yield RedisSlot(self, spec, key, token)
            finally:
                with anyio.CancelScope(shield=True):
                    renewal.cancel()
                    await asyncio.wait({renewal})
                    if not renewal.cancelled() and (exc := renewal.exception()) is not None:
                        logger.error("renewing the lock on %s crashed", name, exc_info=exc)
                    try:
                        await lock.release()
                    except LockNotOwnedError:
                        logger.warning("the lock on %s %s expired while held", spec.name, key)

    async def _renew(self, lock: Lock, name: str) -> None:
        """Push the lock's lease back to ``lock_timeout`` every third of it, until cancelled."""
        while True:
            await asyncio.sleep(self.lock_timeout / 3)
            try:
                await lock.reacquire()
            except LockNotOwnedError:
                logger.error("lost the lock on %s before renewing it; this holder's writes will be refused", name)
                return
            except Exception:
                logger.warning("renewing the lock on %s failed; retrying", name, exc_info=True)

    async def _forget_lock(self, name: str, token: str) -> None:
        try:
            await self._unlock(keys=[name], args=[token])
        except Exception:
            logger.warning("could not clear the lock on %s; it stays until its lease ends", name, exc_info=True)

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        ttl = ttl_for(spec, self.default_ttl)
        name = self._state_key(spec, key)
        raw = await (self.client.get(name) if ttl is None else self.client.getex(name, px=_ms(ttl)))
        return None if raw is None else _loads(raw)

    async def list(self, spec: EntitySpec, limit: int, offset: int, newest: bool = False) -> list[State]:
        index = self._index_key(spec)
        members = [str(m) for m in await self.client.zrange(index, offset, offset + limit - 1, desc=newest)]
        if newest:
            members.reverse()
        if not members:
            return []
        raws = await self.client.mget([self._state_key(spec, m) for m in members])
        gone = [m for m, raw in zip(members, raws, strict=True) if raw is None]
        if gone:  # expired records: forget them (the index has no TTL of its own)
            await self.client.zrem(index, *gone)
        return [_loads(raw) for raw in raws if raw is not None]

    async def aclose(self) -> None:
        await self.client.aclose()


def _loads(raw: str | bytes) -> State:
    value: Any = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"stored state is not a JSON object: {raw[:80]!r}")
    return value

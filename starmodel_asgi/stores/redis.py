"""Redis store (redis-py asyncio): one JSON string per instance, TTLs native, a lock per instance.

``hold`` takes a Redis lock (``SET NX PX`` with a random token) on the instance and renews its
lease while the instance is held; writes go through a script that checks the token first, so a
holder whose lock was lost anyway fails loudly instead of overwriting someone else's change.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import anyio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from starmodel_asgi.broadcast.base import split_prefix
from starmodel_asgi.errors import EventError
from starmodel_asgi.logs import STORES, get_logger, own_task
from starmodel_asgi.query import EVERYTHING, Query, window
from starmodel_asgi.stores.base import Alone, KeyedLocks, KeyHold, State, Stored, ttl_for
from starmodel_asgi.wire import DELETED, channel_name

if TYPE_CHECKING:
    from starmodel_asgi.spec import EntitySpec

logger = get_logger(STORES)

#: What a lost or refused connection raises.
CONNECTION_ERRORS = (RedisError, OSError)
#: What a Redis that is down, restarting (still loading its data) or not answering raises.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class _Unavailable:
    """Redis down, restarting or silent past ``timeout``: the caller is told ``503`` "try again"
    (a lock lost anyway, or any other error, stays what it is: a ``500``). A class, not a
    generator: two of these wrap every event."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, UNAVAILABLE):
            logger.warning("Redis is unavailable: %r", exc)
            raise EventError(503, "The state is unavailable; try again") from exc


_unavailable = _Unavailable


# KEYS: lock, state, index, then the value sets the record leaves, then those it joins. ARGV: token,
# state JSON, ttl ms (0: none), score, member, indexed, how many sets it leaves, channel ('': none).
# Saves, moves the record between its indexed values' sets, drops the lock (a unit releases every
# hold right after its commit) and, when the broadcast shares this server, publishes the new state:
# one round trip, and messages go out in the order of the saves, whichever process made them.
_SAVE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('set', KEYS[2], ARGV[2])
end
if ARGV[6] == '1' then
  redis.call('zadd', KEYS[3], 'NX', ARGV[4], ARGV[5])
  local score = redis.call('zscore', KEYS[3], ARGV[5])
  local leaves = tonumber(ARGV[7])
  for i = 4, 3 + leaves do redis.call('zrem', KEYS[i], ARGV[5]) end
  for i = 4 + leaves, #KEYS do redis.call('zadd', KEYS[i], score, ARGV[5]) end
end
if ARGV[8] ~= '' then redis.call('publish', ARGV[8], ARGV[2]) end
return 1
"""
# KEYS: lock, state, index, then the record's value sets. ARGV: token, member, channel ('': none),
# message. Deletes, drops the lock and publishes the deletion.
_DELETE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
redis.call('del', KEYS[2])
for i = 3, #KEYS do redis.call('zrem', KEYS[i], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('publish', ARGV[3], ARGV[4]) end
return 1
"""
# KEYS: lock, state. ARGV: token, lock ms, state ttl ms (0: none). Takes the lock if free and
# returns the state with it (one round trip): {1, state or false}, or {0} when the lock is taken.
_ACQUIRE = """
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
if tonumber(ARGV[3]) > 0 then redis.call('pexpire', KEYS[2], ARGV[3]) end
return {1, redis.call('get', KEYS[2])}
"""
# KEYS: state, index, then its indexed values' sets. ARGV: state JSON, ttl ms (0: none), score,
# member, indexed. Writes a copied state unless one is there (nothing is overwritten): 1 if written.
_RESTORE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('set', KEYS[1], ARGV[1])
end
if ARGV[5] == '1' then
  redis.call('zadd', KEYS[2], 'NX', ARGV[3], ARGV[4])
  for i = 3, #KEYS do redis.call('zadd', KEYS[i], ARGV[3], ARGV[4]) end
end
return 1
"""
# KEYS: lock. ARGV: token, lock ms. Pushes the lease back if the lock is still ours.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('pexpire', KEYS[1], ARGV[2])
"""
# KEYS: lock. ARGV: token. Deletes the lock only if it is still ours.
_UNLOCK = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])
"""


def blocking_client(url: str, *, max_connections: int, timeout: float, **options: Any) -> Redis:
    """A client whose pool waits (up to ``timeout`` seconds) for a free connection when all
    ``max_connections`` are busy, instead of failing at once (redis-py 8's default pool raises
    ``MaxConnectionsError`` past 100): a burst of requests queues rather than answering 500."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, decode_responses=True, **options
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Lane:
    """Runs the scripts of every event (lock+read, save, delete, unlock) on connections kept
    aside from the client's pool (up to ``keep``, taken from it as needed), without the client's
    per-command machinery (the blocking pool's condition and wait timeout, the retry wrapper, the
    metrics hooks): about 35 us less CPU per command, on a path of two commands per event. A spare
    connection is checked as the pool checks those it hands out (one the server closed, say it
    restarted, is made again); its own ``socket_timeout`` still bounds each command; a command
    that fails in any way drops its connection and raises as the client would (it retries nothing
    either)."""

    def __init__(self, client: Redis, keep: int = 4) -> None:
        self.client, self.keep = client, keep
        # redis-py before 5.3 (its pool wants a command name to hand out a connection, and does not
        # check a kept one the same way): the scripts go through the client, as they did before
        wanted = inspect.signature(client.connection_pool.get_connection).parameters.get("command_name")
        self._through_client = wanted is not None and wanted.default is inspect.Parameter.empty
        self._spare: list[AbstractConnection] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the spare connections' event loop

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        if self._through_client:
            return await script(keys=keys, args=args)
        pool = self.client.connection_pool
        if self._loop is not asyncio.get_running_loop():
            await self.aclose()  # another event loop's connections: the pool's again
            self._loop = asyncio.get_running_loop()
        spare = self._spare.pop() if self._spare else None
        conn = spare if spare is not None else await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            if spare is not None:  # what the pool checks of a connection it hands out: one the
                await pool.ensure_connection(spare)  # server closed meanwhile is made again
            await conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            reply = await conn.read_response()
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): the client loads it again
            await self._put(conn)
            return await script(keys=keys, args=args)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
                await pool.release(conn)
            raise
        await self._put(conn)
        return reply

    async def _put(self, conn: AbstractConnection) -> None:
        if len(self._spare) < self.keep:
            self._spare.append(conn)
        else:
            await self.client.connection_pool.release(conn)

    async def aclose(self) -> None:
        """Gives the spare connections back to the pool (which the client's ``aclose`` closes)."""
        spare, self._spare, self._loop = self._spare, [], None
        for conn in spare:
            await self.client.connection_pool.release(conn)


class RedisSlot:
    __slots__ = ("_keys", "_spec", "_token", "_txn", "key", "published", "text")
    keeps_json = True

    def __init__(self, txn: RedisTransaction, spec: EntitySpec, key: str, token: str, text: str | None) -> None:
        self._txn, self._spec, self.key, self._token = txn, spec, key, token
        store = txn._store
        self._keys = [store._lock_key(spec, key), store._state_key(spec, key), store._index_key(spec)]
        self.text = text
        self.published = False

    async def load(self) -> State | None:
        text = await self.load_text()
        return None if text is None else _loads(text)

    async def load_text(self) -> str | None:
        pending = self._txn._writes.get(self._keys[1])
        return self.text if pending is None else pending[1]  # read with the lock, in the same round trip

    async def save(self, state: State | None = None, text: str | None = None) -> None:
        self._txn._writes[self._keys[1]] = (self, json.dumps(state) if text is None else text)

    async def delete(self) -> None:
        self._txn._writes[self._keys[1]] = (self, None)

    async def write(self, text: str | None) -> None:
        """Applies a save (``text``) or a delete (``None``), if the lock is still ours, moving the
        record between the sets of its indexed fields' values in the same script."""
        store = self._txn._store
        prefix = store.channel_prefix
        channel = "" if prefix is None else prefix + channel_name(self._spec, self.key)
        leaves = store._value_keys(self._spec, self.text)
        # the lock is dropped by this script or released after it: no renewing meanwhile, or the
        # renewer could find it gone before this task hears the save and report it lost
        store._held.pop(self._keys[0], None)
        if text is None:
            keys = [*self._keys, *leaves]
            done = await store._lane.run(store._delete, keys, [self._token, self.key, channel, DELETED])
        else:
            ttl = ttl_for(self._spec, store.default_ttl)
            indexed = "1" if self._spec.is_record else "0"
            args: list[str | int | float] = [self._token, text, 0 if ttl is None else _ms(ttl)]
            args += [store._clock(), self.key, indexed, len(leaves), channel]
            keys = [*self._keys, *leaves, *store._value_keys(self._spec, text)]
            done = await store._lane.run(store._save, keys, args)
        if not done:
            raise LockNotOwnedError(f"lost the lock on {self._keys[1]} (held past lock_timeout?)")
        self.text = text
        self.published = prefix is not None
        self._txn._unlocked.add(self._keys[0])


class RedisTransaction:
    """Instances held by Redis locks; writes kept aside and applied at ``commit`` (each checks
    that its lock is still ours, and drops it in the same round trip: the in-process hold keeps
    this process's other events out until ``release``)."""

    __slots__ = ("_holds", "_store", "_unlocked", "_writes")

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._unlocked: set[str] = set()  # locks a write dropped
        self._holds: list[tuple[KeyHold, str, str]] = []  # in-process hold, lock name, token
        self._writes: dict[str, tuple[RedisSlot, str | None]] = {}

    async def hold(self, spec: EntitySpec, key: str) -> RedisSlot:
        store = self._store
        local = store._locks.hold((spec.name, key))
        await local.__aenter__()
        token = os.urandom(16).hex()
        name = store._lock_key(spec, key)
        try:
            with _unavailable():
                text = await store._acquire(spec, key, name, token)
        except BaseException:
            # cancelled (or failed) after SET NX may have run: do not leave our lock behind
            with anyio.CancelScope(shield=True):
                await store._forget_lock(name, token)
                await local.__aexit__(None, None, None)
            raise
        self._holds.append((local, name, token))
        store._held[name] = token
        store._start_renewing()
        return RedisSlot(self, spec, key, token, text)

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        pending = self._writes.get(self._store._state_key(spec, key))
        if pending is not None:
            return None if pending[1] is None else _loads(pending[1])
        return await self._store.get(spec, key)

    async def commit(self) -> None:
        writes, self._writes = self._writes, {}
        with _unavailable():
            for slot, text in writes.values():
                await slot.write(text)

    async def rollback(self) -> None:
        self._writes.clear()

    async def release(self) -> None:
        holds, self._holds = self._holds, []
        store = self._store
        for local, name, token in reversed(holds):
            store._held.pop(name, None)
            try:
                if name not in self._unlocked:  # a save dropped the others (a shield costs 13 us)
                    with anyio.CancelScope(shield=True):
                        await store._forget_lock(name, token, held=True)
            finally:
                await local.__aexit__(None, None, None)  # no await inside: nothing to cancel


class RedisCopies:
    """``RedisStore``'s side of ``sm.copy``: every instance of an entity with its key, remaining
    TTL and creation time (``dump``), and written back unless taken (``restore``)."""

    client: Redis
    _restore: AsyncScript
    _clock: Callable[[], float]
    _state_key: Callable[[EntitySpec, str], str]
    _index_key: Callable[[EntitySpec], str]
    _value_keys: Callable[[EntitySpec, str | None], list[str]]

    async def dump(self, spec: EntitySpec) -> AsyncIterator[Stored]:
        """Records in their index's order (creation); other instances as ``SCAN`` finds them."""
        if spec.is_record:
            index, start = self._index_key(spec), 0
            while page := await self.client.zrange(index, start, start + _PAGE - 1, withscores=True):
                start += _PAGE
                scored: Keys = [(str(member), float(score)) for member, score in cast("list[tuple[str, float]]", page)]
                for item in await self._with_ttl(spec, scored):
                    yield item
            return
        states = self._state_key(spec, "")
        keys: Keys = []
        async for name in self.client.scan_iter(match=_glob_escape(states) + "*", count=_PAGE):
            keys.append((str(name)[len(states) :], None))
            if len(keys) == _PAGE:
                for item in await self._with_ttl(spec, keys):
                    yield item
                keys = []
        for item in await self._with_ttl(spec, keys):
            yield item

    async def _with_ttl(self, spec: EntitySpec, keys: Sequence[tuple[str, float | None]]) -> tuple[Stored, ...]:
        """The states of ``keys`` (with their creation times) and their remaining TTLs, in one round trip."""
        if not keys:
            return ()
        pipe = self.client.pipeline(transaction=False)
        for key, _ in keys:
            pipe.get(self._state_key(spec, key))
            pipe.pttl(self._state_key(spec, key))
        found = await pipe.execute()
        return tuple(
            Stored(key, str(text), None if ttl < 0 else ttl / 1000, created)
            for (key, created), text, ttl in zip(keys, found[::2], found[1::2], strict=True)
            if text is not None  # gone meanwhile (or an expired record still indexed)
        )

    async def restore(self, spec: EntitySpec, items: Sequence[Stored]) -> int:
        pipe = self.client.pipeline(transaction=False)
        now, indexed = self._clock(), "1" if spec.is_record else "0"
        for n, item in enumerate(items):
            ttl = 0 if item.expires_in is None else _ms(item.expires_in)
            score = now + n * 1e-6 if item.created is None else item.created
            keys = [self._state_key(spec, item.key), self._index_key(spec), *self._value_keys(spec, item.text)]
            await self._restore(keys=keys, args=[item.text, ttl, score, item.key, indexed], client=pipe)
        return sum(await pipe.execute()) if items else 0


class RedisStore(RedisCopies):
    """Entity state in Redis under ``prefix`` (``state:``, ``lock:`` and, for records, ``index:``
    keys). A lock lease lasts ``lock_timeout`` seconds; while the instance is held it is renewed
    every ``lock_timeout / 3`` seconds, so events may run longer than the lease.
    A holder that loses its lock anyway (Redis unreachable for a whole lease) cannot write.
    Commands fail after ``timeout`` seconds rather than hang, and while Redis is down, restarting or
    silent the caller is told ``503`` "try again"; a lock that could not be deleted
    during an outage is deleted as soon as Redis answers again."""

    def __init__(
        self,
        url: str,
        default_ttl: float | None = None,
        *,
        prefix: str | None = None,
        lock_timeout: float = 5.0,
        lock_poll: float = 0.005,
        timeout: float = 5.0,
        max_connections: int = 100,
        clock: Callable[[], float] = time.time,
        client: Redis | None = None,
    ) -> None:
        # ``redis://h/0?prefix=app1:`` namespaces the keys, as it does a Redis broadcast's channels
        self.url, url_prefix = split_prefix(url)
        self.default_ttl = default_ttl
        self.prefix = prefix if prefix is not None else url_prefix or "starmodel:"
        #: set when the broadcast is Redis pub/sub on this same server (``publish_through``):
        #: each save then publishes its change itself, with this prefix on the channel
        self.channel_prefix: str | None = None
        self.lock_timeout = lock_timeout
        self.lock_poll = lock_poll
        self._clock = clock
        # bounded waits: a command on a connection that went silent fails instead of hanging
        # (and holding the instance) until the operating system gives up on the socket
        self.client: Redis = (
            client
            if client is not None
            else blocking_client(
                self.url,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        )
        self._save = self.client.register_script(_SAVE)
        self._delete = self.client.register_script(_DELETE)
        self._unlock = self.client.register_script(_UNLOCK)
        self._take = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._restore = self.client.register_script(_RESTORE)
        self._lane = Lane(self.client)
        self._locks = KeyedLocks()
        self._held: dict[str, str] = {}  # lock name -> our token, while held
        self._renewer: asyncio.Task[None] | None = None
        # locks to delete once Redis answers again, by name and token: a waiter whose acquire failed
        # during the outage must not replace the holder's entry (that lock would then stay)
        self._stale: dict[tuple[str, str], float] = {}
        self._clearer: asyncio.Task[None] | None = None

    def _state_key(self, spec: EntitySpec, key: str) -> str:
        return f"{self.prefix}state:{spec.name}:{key}"

    def _lock_key(self, spec: EntitySpec, key: str) -> str:
        return f"{self.prefix}lock:{spec.name}:{key}"

    def _index_key(self, spec: EntitySpec) -> str:
        return f"{self.prefix}index:{spec.name}"

    keeps_json = True

    def publish_through(self, broadcast: object) -> None:
        """When ``broadcast`` is Redis pub/sub on this store's server (``RedisBroadcast``, known
        by its ``kind``: the broadcast module imports this one), saves publish their own changes
        (in the save's round trip) instead of handing them to the app's outbox."""
        self.channel_prefix = None
        url, prefix = getattr(broadcast, "url", None), getattr(broadcast, "prefix", None)
        if getattr(broadcast, "kind", None) == "Redis" and isinstance(url, str) and isinstance(prefix, str):
            self.channel_prefix = prefix if _server(url) == _server(self.url) else None

    def begin(self) -> RedisTransaction:
        return RedisTransaction(self)

    def hold(self, spec: EntitySpec, key: str) -> Alone:
        return Alone(RedisTransaction(self), spec, key)

    async def _acquire(self, spec: EntitySpec, key: str, name: str, token: str) -> str | None:
        """Takes the lock (waiting, polling every ``lock_poll`` seconds, while another process
        holds it) and returns the state's JSON read with it."""
        ttl = ttl_for(spec, self.default_ttl)
        args: list[str | int] = [token, _ms(self.lock_timeout), 0 if ttl is None else _ms(ttl)]
        while True:
            taken = await self._lane.run(self._take, [name, self._state_key(spec, key)], args)
            if taken[0]:
                return None if len(taken) < 2 or taken[1] is None else str(taken[1])
            await asyncio.sleep(self.lock_poll)

    def _start_renewing(self) -> None:
        # One asyncio task per store renews every lock held (not a task per hold: most holds last
        # milliseconds). The redis client is asyncio-only.
        loop = asyncio.get_running_loop()
        if self._renewer is None or self._renewer.done() or self._renewer.get_loop() is not loop:
            self._renewer = own_task(self._renew_all(), "starmodel-redis-renew")

    async def _renew_all(self) -> None:
        """Every third of ``lock_timeout``, push back the lease of each lock held (for at least
        that long) to ``lock_timeout``."""
        while True:
            await asyncio.sleep(self.lock_timeout / 3)
            for name, token in list(self._held.items()):
                try:
                    renewed = await self._renew(keys=[name], args=[token, _ms(self.lock_timeout)])
                    # released (and maybe held again, another token) meanwhile: nothing was lost,
                    # and the next holder's lease is not this round's to drop
                    if not renewed and self._held.get(name) == token:
                        logger.error(
                            "lost the lock on %s before renewing it; this holder's writes will be refused", name
                        )
                        self._held.pop(name, None)
                except Exception:
                    logger.warning("renewing the lock on %s failed; retrying", name, exc_info=True)

    async def _forget_lock(self, name: str, token: str, *, held: bool = False) -> None:
        """Deletes our lock. When Redis cannot be reached, keeps trying in the background (every
        ``lock_poll * 20`` seconds, until the lease would have ended), so an outage does not leave
        the instance locked for a whole lease once Redis is back."""
        try:
            if not await self._lane.run(self._unlock, [name], [token]) and held:
                logger.warning("the lock on %s expired while held", name)
        except CONNECTION_ERRORS:
            logger.warning("could not clear the lock on %s; retrying until Redis answers", name)
            self._stale[(name, token)] = time.monotonic() + self.lock_timeout
            loop = asyncio.get_running_loop()
            if self._clearer is None or self._clearer.done() or self._clearer.get_loop() is not loop:
                self._clearer = own_task(self._clear_stale(), "starmodel-redis-unlock")

    async def _clear_stale(self) -> None:
        while self._stale:
            await asyncio.sleep(self.lock_poll * 20)
            for (name, token), until in list(self._stale.items()):
                try:
                    await self._unlock(keys=[name], args=[token])
                except CONNECTION_ERRORS:
                    if time.monotonic() < until:
                        continue
                del self._stale[(name, token)]

    async def get(self, spec: EntitySpec, key: str) -> State | None:
        text = await self.get_text(spec, key)
        return None if text is None else _loads(text)

    async def get_text(self, spec: EntitySpec, key: str) -> str | None:
        ttl = ttl_for(spec, self.default_ttl)
        name = self._state_key(spec, key)
        with _unavailable():
            raw = await (self.client.get(name) if ttl is None else self.client.getex(name, px=_ms(ttl)))
        return None if raw is None else str(raw)

    def _value_key(self, spec: EntitySpec, name: str, value: Any) -> str:
        """The sorted set (by creation) of the records whose indexed field ``name`` is ``value``."""
        return f"{self._index_key(spec)}:{name}:{json.dumps(value)}"

    def _value_keys(self, spec: EntitySpec, text: str | None) -> list[str]:
        """The value sets a record stored as ``text`` belongs to."""
        if text is None or not spec.indexes:
            return []
        state = _loads(text)
        return [self._value_key(spec, name, state.get(name)) for name in sorted(spec.indexes)]

    def _source(self, spec: EntitySpec, query: Query) -> tuple[str, bool]:
        """The sorted set to read for ``query`` (the first indexed filter's value set, else every
        record) and whether it alone answers the filters."""
        indexed = [(name, value) for name, value in query.where if name in spec.indexes]
        if not indexed:
            return self._index_key(spec), not query.where
        return self._value_key(spec, *indexed[0]), len(query.where) == 1

    async def _matching(self, spec: EntitySpec, source: str, query: Query) -> list[State]:
        """Every record of the sorted set ``source`` that matches, in creation order: a read of the
        whole set (in chunks), the cost of a filter no index answers alone."""
        members = [str(m) for m in await self.client.zrange(source, 0, -1)]
        states: list[State] = []
        for start in range(0, len(members), 1000):
            chunk = await self._states(spec, source, members[start : start + 1000])
            states += [state for state in chunk if query.matches(state)]
        return states

    async def _states(self, spec: EntitySpec, source: str, members: list[str]) -> list[State]:
        """The records ``members`` of ``source``; expired ones are forgotten (the sets have no TTL)."""
        if not members:
            return []
        raws = await self.client.mget([self._state_key(spec, m) for m in members])
        gone = [m for m, raw in zip(members, raws, strict=True) if raw is None]
        if gone:
            await self.client.zrem(self._index_key(spec), *gone)
            if source != self._index_key(spec):
                await self.client.zrem(source, *gone)
        return [_loads(raw) for raw in raws if raw is not None]

    async def list(
        self, spec: EntitySpec, limit: int, offset: int, newest: bool = False, query: Query = EVERYTHING
    ) -> list[State]:
        source, exact = self._source(spec, query)
        with _unavailable():
            if not (exact and query.order is None):  # read the set's records, filter and sort here
                return window(query.sort(await self._matching(spec, source, query)), limit, offset, newest)
            desc = newest != query.descending
            members = [str(m) for m in await self.client.zrange(source, offset, offset + limit - 1, desc=desc)]
            if newest:
                members.reverse()
            return await self._states(spec, source, members)

    async def count(self, spec: EntitySpec, query: Query = EVERYTHING) -> int:
        source, exact = self._source(spec, query)
        with _unavailable():
            if exact:
                return int(await self.client.zcard(source))
            return len(await self._matching(spec, source, query))

    async def aclose(self) -> None:
        tasks = [t for t in (self._renewer, self._clearer) if t is not None]
        self._renewer = self._clearer = None
        for task in tasks:
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._lane.aclose()
        await self.client.aclose()

    async def ping(self) -> None:
        """A round trip to Redis (``GET /health``)."""
        await self.client.ping()


def _server(url: str) -> tuple[str, int, str | None]:
    """Which Redis server a URL names (pub/sub spans its databases)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return (parts.path, 0, parts.username)
    return (parts.hostname or "localhost", parts.port or 6379, parts.username)


Keys = list[tuple[str, float | None]]  # keys, with their creation times where known

#: Instances read or written per round trip when copying.
_PAGE = 500


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _loads(raw: str | bytes) -> State:
    value: Any = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"stored state is not a JSON object: {raw[:80]!r}")
    return value

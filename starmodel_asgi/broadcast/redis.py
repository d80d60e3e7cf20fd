"""Redis pub/sub broadcast: one listening connection per process, multiplexing every channel.

The listener (``listener.py``) starts on the first ``subscribe`` and reconnects by itself with a
growing delay; ``aclose()`` stops it. After every (re)subscription
the channel's subscribers get ``None``, so live streams re-read the state they may have missed.
Requires the ``redis`` extra (redis-py's asyncio client, hence an asyncio event loop).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from starmodel_asgi.broadcast.base import split_prefix
from starmodel_asgi.broadcast.listener import Listener
from starmodel_asgi.logs import LIVE, get_logger
from starmodel_asgi.stores.redis import CONNECTION_ERRORS, blocking_client

logger = get_logger(LIVE)

#: What a lost or refused connection raises.


class RedisBroadcast(Listener):
    """``broadcast_url="redis://..."``: fan-out across processes through Redis pub/sub.

    ``prefix`` namespaces the channels (Redis pub/sub ignores the database number), so several
    apps can share one server. A message reaches each local subscriber without waiting for it:
    a stuck client only ever holds the newest state.
    """

    kind = "Redis"
    connection_errors = CONNECTION_ERRORS

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        min_reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
        timeout: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(
            min_reconnect_delay=min_reconnect_delay, max_reconnect_delay=max_reconnect_delay, timeout=timeout
        )
        self.url, url_prefix = split_prefix(url)
        self.prefix = url_prefix if prefix is None else prefix
        self._subscribed: set[str] = set()  # channels SUBSCRIBEd on the current connection
        self._pubsub: PubSub | None = None  # set while connected and listening
        self._lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE commands
        self.max_connections = max_connections  # publishing connections; more publishers wait
        self._publisher: Redis | None = None
        self._listener: Redis | None = None
        self._control = f"{self.prefix}sm-listener:{uuid.uuid4().hex}"

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        if self._publisher is None:
            # one quick retry: a publish runs while the instance is held, so it must fail fast
            self._publisher = blocking_client(
                self.url,
                max_connections=self.max_connections,
                timeout=self.timeout,
                retry=Retry(NoBackoff(), 1),
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
            )
        await self._publisher.publish(self.prefix + channel, message)

    # -- subscribing -----------------------------------------------------------------------

    async def _watch(self, channel: str) -> None:
        await self._sync(channel)

    async def _unwatch(self, channel: str) -> None:
        await self._sync(channel)

    async def _sync(self, channel: str) -> None:
        """SUBSCRIBE or UNSUBSCRIBE ``channel`` so the connection matches the local subscribers.
        Without a connection there is nothing to do: the listener subscribes every wanted
        channel when it connects."""
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return
            want, has = channel in self._channels, channel in self._subscribed
            try:
                if want and not has:
                    await pubsub.subscribe(self.prefix + channel)
                    self._subscribed.add(channel)
                elif has and not want:
                    await pubsub.unsubscribe(self.prefix + channel)
                    self._subscribed.discard(channel)
            except CONNECTION_ERRORS as exc:
                # the listener's read fails on the same connection and resubscribes on reconnect
                logger.warning("Redis broadcast could not update channel %s: %r", channel, exc)

    # -- listening -------------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._listener is None:
            self._listener = Redis.from_url(
                self.url,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),  # reconnecting is the listener's job
                socket_connect_timeout=self.timeout,
                socket_keepalive=True,
            )
        pubsub = self._listener.pubsub()
        try:
            await self._attach(pubsub)
            self._connected(resync=False)  # each channel's subscribe confirmation resyncs it
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._on_message(message)
        finally:
            self._pubsub = None
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    async def _attach(self, pubsub: PubSub) -> None:
        async with self._lock:
            # the control channel keeps the connection subscribed while no page is watching
            await pubsub.subscribe(self._control)
            wanted = self._channels.names()
            if wanted:
                await pubsub.subscribe(*(self.prefix + c for c in wanted))
            self._subscribed = set(wanted)
            self._pubsub = pubsub
        logger.debug("Redis broadcast listening on %d channels", len(wanted))

    def _on_message(self, message: dict[str, Any]) -> None:
        full = message["channel"]
        if full == self._control or not full.startswith(self.prefix):
            return
        channel = full[len(self.prefix) :]
        if message["type"] == "message":
            self._channels.deliver(channel, message["data"])
        elif message["type"] == "subscribe":
            # anything published before this point was not heard: make readers re-read
            self._channels.deliver(channel, None)

    async def _close(self) -> None:
        self._subscribed.clear()
        for client in (self._publisher, self._listener):
            if client is not None:
                await client.aclose()
        self._publisher = self._listener = None

"""What the network broadcasts share: local subscribers by channel, one listening task per process
started by the first ``subscribe`` (hosts do not run a mounted app's lifespan), reconnection with a
growing delay, and closing. A backend only speaks its driver: ``_listen`` connects, calls
``_connected`` once it hears messages, delivers them until the connection is lost (then raises
one of ``connection_errors``); ``_watch``/``_unwatch`` follow channels gaining their first or losing
their last local subscriber; ``_close`` closes its connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from starmodel_asgi.broadcast.channels import Channels, Inbox
from starmodel_asgi.logs import LIVE, get_logger, own_task

logger = get_logger(LIVE)


class Listener:
    """Base of ``RedisBroadcast`` and ``PostgresBroadcast``."""

    #: the backend's name, for logs
    kind = "network"
    #: what a lost or refused connection raises
    connection_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, *, min_reconnect_delay: float, max_reconnect_delay: float, timeout: float) -> None:
        self.min_reconnect_delay, self.max_reconnect_delay = min_reconnect_delay, max_reconnect_delay
        self.timeout = timeout
        self._channels = Channels()
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        self._delay = min_reconnect_delay

    def subscriber_count(self, channel: str | None = None) -> int:
        return self._channels.count(channel)

    @property
    def listening(self) -> bool:
        return self._listening

    @asynccontextmanager
    async def subscribe(self, channel: str, *, every: bool = False) -> AsyncIterator[Inbox]:
        subscriber, first = self._channels.add(channel, every)
        try:
            if self._task is None or self._task.done():
                self._task = own_task(self._run(), f"starmodel-{self.kind}")
                self._task.add_done_callback(self._log_failure)
            if first:
                await self._watch(channel)
            yield subscriber
        finally:
            if self._channels.remove(channel, subscriber):
                with anyio.move_on_after(self.timeout, shield=True):
                    await self._unwatch(channel)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except self.connection_errors as exc:
                logger.warning(
                    "%s broadcast lost its connection (%r); reconnecting in %.1fs", self.kind, exc, self._delay
                )
            finally:
                self._listening = False
            await anyio.sleep(self._delay)
            self._delay = min(self._delay * 2, self.max_reconnect_delay)

    def _connected(self, *, resync: bool = True) -> None:
        """The backend hears messages again. ``resync``: tell every subscriber that messages
        published before this point were missed (re-read the state)."""
        self._listening, self._delay = True, self.min_reconnect_delay
        if resync:
            for name in self._channels.names():
                self._channels.deliver(name, None)

    async def _listen(self) -> None:
        raise NotImplementedError

    async def _watch(self, channel: str) -> None:
        """``channel`` has its first local subscriber."""

    async def _unwatch(self, channel: str) -> None:
        """``channel`` has lost its last local subscriber."""

    async def _close(self) -> None:
        """Close the backend's connections."""

    async def aclose(self) -> None:
        """Stop listening, end every subscription, close the connections. A later ``subscribe``
        starts again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._channels.close()
        await self._close()

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s broadcast listener stopped", self.kind, exc_info=task.exception())

"""What a process publishes, sent in order by one task, so no unit of work waits for the broadcast."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio

from starmodel_asgi.broadcast import Broadcast, Capabilities
from starmodel_asgi.logs import LIVE, get_logger, own_task

logger = get_logger(LIVE)


class Outbox:
    """Messages waiting to be published, the newest per channel (a live message is a whole state,
    the deleted marker or a "re-read" token: an older one still waiting is worth nothing), sent in
    the order their channels first waited by one task per process. A broadcast that hangs or fails
    costs live freshness, never an event: the unit that wrote has released its instance and
    answered. A broadcast that declares ``instant = True`` (in-process: it cannot hang) is called
    at once instead."""

    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        capabilities = Capabilities.of(broadcast)
        self._wants, self._instant = capabilities.wants, capabilities.instant
        self._pending: OrderedDict[str, str] = OrderedDict()
        self._wake: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._busy = False  # a message is being published
        #: told how long each message waited between ``send`` and the broadcast accepting it (metrics)
        self.waited: Callable[[float], None] | None = None
        self._since: dict[str, float] = {}  # channel -> when its waiting message first waited

    def __len__(self) -> int:
        return len(self._pending)

    async def send(self, channel: str, message: str) -> None:
        """Publish ``message`` on ``channel`` soon, if anyone could hear it."""
        if self._wants is not None and not self._wants(channel):
            return
        if self._instant:
            await self._publish(channel, message, None if self.waited is None else time.perf_counter())
            return
        self._pending[channel] = message  # a message already waiting there is replaced in place
        if self.waited is not None:
            self._since.setdefault(channel, time.perf_counter())
        loop = asyncio.get_running_loop()
        if self._sender is None or self._sender.done() or self._sender.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._sender = own_task(self._run(), "starmodel-outbox")
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            channel, message = self._pending.popitem(last=False)
            self._busy = True
            try:
                await self._publish(channel, message, self._since.pop(channel, None))
            finally:
                self._busy = False

    async def _publish(self, channel: str, message: str, since: float | None = None) -> None:
        """A broadcast failure is logged, never fatal: the state is saved, and streams re-send
        the current state when they reconnect."""
        try:
            await self.broadcast.publish(channel, message)
        except Exception:
            logger.exception("could not publish on %s", channel)
            return
        if since is not None and self.waited is not None:
            self.waited(time.perf_counter() - since)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Sends what is waiting (for up to ``timeout`` seconds), then stops."""
        sender, self._sender = self._sender, None
        if sender is None or sender.get_loop() is not asyncio.get_running_loop():
            return
        with anyio.move_on_after(timeout):
            while (self._pending or self._busy) and not sender.done():
                await anyio.sleep(0.005)
        if self._pending:
            logger.warning("%d live messages were not published before shutdown", len(self._pending))
            self._pending.clear()
            self._since.clear()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)

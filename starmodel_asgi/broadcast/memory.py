"""In-process broadcast: each subscriber keeps only the latest message (states coalesce)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starmodel_asgi.broadcast.channels import Channels, Inbox


class MemoryBroadcast:
    """Fan-out within one process (``broadcast_url="memory://"``, the default)."""

    #: publishing cannot hang: callers need not queue their messages
    instant = True

    def __init__(self) -> None:
        self._channels = Channels()

    def subscriber_count(self, channel: str | None = None) -> int:
        return self._channels.count(channel)

    def wants(self, channel: str) -> bool:
        """Whether a message on ``channel`` would reach anyone (so a publisher may skip
        formatting it)."""
        return channel in self._channels

    async def publish(self, channel: str, message: str) -> None:
        self._channels.deliver(channel, message)

    @asynccontextmanager
    async def subscribe(self, channel: str, *, every: bool = False) -> AsyncIterator[Inbox]:
        subscriber, _ = self._channels.add(channel, every)
        try:
            yield subscriber
        finally:
            self._channels.remove(channel, subscriber)

    async def aclose(self) -> None:
        self._channels.close()

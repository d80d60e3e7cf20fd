"""In-process broadcast: each subscriber keeps only the latest message (states coalesce)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class Subscriber:
    """Holds at most one pending message: a slow reader skips to the newest state."""

    def __init__(self) -> None:
        self._latest: str | None = None
        self._ready = anyio.Event()

    def put(self, message: str) -> None:
        self._latest = message
        self._ready.set()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> str:
        await self._ready.wait()
        message, self._latest = self._latest, None
        self._ready = anyio.Event()
        assert message is not None
        return message


class MemoryBroadcast:
    def __init__(self) -> None:
        self._channels: dict[str, set[Subscriber]] = {}

    def subscriber_count(self, channel: str | None = None) -> int:
        if channel is not None:
            return len(self._channels.get(channel, ()))
        return sum(len(s) for s in self._channels.values())

    async def publish(self, channel: str, message: str) -> None:
        for subscriber in self._channels.get(channel, ()):
            subscriber.put(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber()
        self._channels.setdefault(channel, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            subscribers = self._channels[channel]
            subscribers.discard(subscriber)
            if not subscribers:
                del self._channels[channel]

    async def aclose(self) -> None:
        self._channels.clear()

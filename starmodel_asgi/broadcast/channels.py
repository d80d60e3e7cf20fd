"""Local subscribers by channel: what every backend delivers to, without ever blocking."""

from __future__ import annotations

import asyncio
from collections import deque

from starmodel_asgi.broadcast.base import Payload

_EMPTY = object()


class Inbox:
    """Holds at most one pending message: a slow reader skips to the newest state, so a stuck
    client costs one message of memory however much is published. ``put`` never blocks.
    (asyncio's ``Event``, reused: a thousand streams wake on every change.)"""

    def __init__(self) -> None:
        self._latest: Payload | object = _EMPTY
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, message: Payload) -> None:
        self._latest = message
        self._ready.set()

    def close(self) -> None:
        """End the iteration (the backend is shutting down)."""
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Payload:
        await self._ready.wait()
        if self._latest is _EMPTY:  # woken by close()
            raise StopAsyncIteration
        message, self._latest = self._latest, _EMPTY
        if not self._closed:
            self._ready.clear()
        assert message is None or isinstance(message, str)
        return message


class QueueInbox(Inbox):
    """Keeps every message, up to ``size`` (then the oldest go): for notes that do not replace
    each other, such as each worker's count of viewers."""

    def __init__(self, size: int = 1000) -> None:
        super().__init__()
        self._queue: deque[Payload] = deque(maxlen=size)

    def put(self, message: Payload) -> None:
        self._queue.append(message)
        self._ready.set()

    async def __anext__(self) -> Payload:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            await self._ready.wait()
            if not self._closed:
                self._ready.clear()
        return self._queue.popleft()


class Channels:
    """Local subscribers by channel name; backends deliver to them without ever blocking."""

    def __init__(self) -> None:
        self._channels: dict[str, set[Inbox]] = {}

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels

    def names(self) -> list[str]:
        return list(self._channels)

    def count(self, channel: str | None = None) -> int:
        if channel is not None:
            return len(self._channels.get(channel, ()))
        return sum(len(s) for s in self._channels.values())

    def add(self, channel: str, every: bool = False) -> tuple[Inbox, bool]:
        """A new subscriber (one that keeps ``every`` message, or the newest only), and whether
        it is the channel's first."""
        subscriber = QueueInbox() if every else Inbox()
        subscribers = self._channels.setdefault(channel, set())
        subscribers.add(subscriber)
        return subscriber, len(subscribers) == 1

    def remove(self, channel: str, subscriber: Inbox) -> bool:
        """Drops the subscriber; says whether the channel has none left."""
        subscribers = self._channels.get(channel)
        if subscribers is None:
            return False
        subscribers.discard(subscriber)
        if subscribers:
            return False
        del self._channels[channel]
        return True

    def deliver(self, channel: str, message: Payload) -> None:
        for subscriber in self._channels.get(channel, ()):
            subscriber.put(message)

    def close(self) -> None:
        for subscribers in self._channels.values():
            for subscriber in subscribers:
                subscriber.close()
        self._channels.clear()

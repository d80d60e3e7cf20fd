"""Live-update fan-out: one ``Broadcast`` protocol, backends chosen by URL scheme."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol
from urllib.parse import urlsplit


class Broadcast(Protocol):
    async def publish(self, channel: str, message: str) -> None: ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Messages published on ``channel`` from now on, until the block exits."""
        ...

    async def aclose(self) -> None: ...


def broadcast_from_url(url: str) -> Broadcast:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from starmodel_asgi.broadcast.memory import MemoryBroadcast

        return MemoryBroadcast()
    if scheme in ("redis", "rediss", "unix"):
        from starmodel_asgi.broadcast.redis import RedisBroadcast  # type: ignore[import-not-found]

        return RedisBroadcast(url)  # type: ignore[no-any-return]
    raise ValueError(f"no broadcast backend for {url!r} (use memory:// or redis://)")

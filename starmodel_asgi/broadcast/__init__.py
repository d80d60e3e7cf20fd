"""Live-update fan-out: one ``Broadcast`` protocol (``base.py``), backends chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from starmodel_asgi.broadcast.base import Broadcast, Capabilities, Payload, split_prefix
from starmodel_asgi.extras import require

__all__ = ["Broadcast", "Capabilities", "Payload", "broadcast_from_url", "split_prefix"]


def broadcast_from_url(url: str) -> Broadcast:
    """``memory://`` (one process), ``redis://host:port/db`` (``rediss://``, ``unix://`` too),
    ``postgresql://user@host/db`` (``postgres://``, ``postgresql+asyncpg://`` too: LISTEN/NOTIFY).
    A ``prefix`` query parameter keeps apps sharing one server apart: ``redis://host/0?prefix=app1:``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from starmodel_asgi.broadcast.memory import MemoryBroadcast

        return MemoryBroadcast()
    if scheme in ("redis", "rediss", "unix"):
        require("redis", "redis", f'broadcast_url="{scheme}://..."')
        from starmodel_asgi.broadcast.redis import RedisBroadcast

        return RedisBroadcast(url)
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        require("asyncpg", "sql", f'broadcast_url="{scheme}://..."')
        from starmodel_asgi.broadcast.postgres import PostgresBroadcast

        return PostgresBroadcast(url)
    raise ValueError(f"no broadcast backend for {url!r} (use memory://, redis:// or postgresql://)")

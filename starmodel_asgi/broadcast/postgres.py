"""PostgreSQL LISTEN/NOTIFY broadcast: one listening connection per process, one NOTIFY channel per app.

Our channel names (``sm:counter:<session id>``) are not identifiers (at most 63 bytes), so every
message goes to the app's one NOTIFY channel with our channel name inside the payload (its JSON
string, a newline, the message), and each process picks what its pages watch: no LISTEN/UNLISTEN
as pages come and go. PostgreSQL refuses payloads of 8000 bytes or more: a larger message is sent
as the channel name alone, which subscribers get as ``None`` ("re-read the state from the store").

The listener (``listener.py``) starts on the first ``subscribe``, pings its connection every
``ping_interval`` seconds and reconnects with a growing delay; after every (re)LISTEN every
subscriber gets ``None``.
Publishing uses a small pool and fails within ``timeout``. Requires asyncpg (the ``sql`` extra).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from starmodel_asgi.broadcast.base import split_prefix
from starmodel_asgi.broadcast.listener import Listener
from starmodel_asgi.logs import LIVE, get_logger

logger = get_logger(LIVE)

#: What a lost or refused connection raises.
CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
#: PostgreSQL's limit: a NOTIFY payload must be shorter than 8000 bytes.
MAX_PAYLOAD = 7999


def notify_channel(prefix: str) -> str:
    """The NOTIFY channel of an app: ``starmodel:<prefix>``, hashed if longer than an identifier."""
    name = f"starmodel:{prefix}" if prefix else "starmodel"
    if len(name.encode()) > 63:
        name = "starmodel:" + hashlib.sha256(prefix.encode()).hexdigest()[:40]
    return name


class PostgresBroadcast(Listener):
    """``broadcast_url="postgresql://..."`` (a ``+asyncpg`` suffix is dropped). ``prefix`` (or the
    URL's ``prefix`` parameter) keeps apps sharing a database apart; the connections are named
    ``application_name`` plus ``-listen`` or ``-publish``."""

    kind = "PostgreSQL"
    connection_errors = CONNECTION_ERRORS
    #: the longest message carried whole on a channel whose name takes up to 255 bytes as JSON
    max_message = MAX_PAYLOAD - 256

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        application_name: str = "starmodel-broadcast",
        min_reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
        ping_interval: float = 30.0,
        timeout: float = 5.0,
        pool_size: int = 4,
    ) -> None:
        super().__init__(
            min_reconnect_delay=min_reconnect_delay, max_reconnect_delay=max_reconnect_delay, timeout=timeout
        )
        url, url_prefix = split_prefix(url)
        parts = urlsplit(url)
        self.url = urlunsplit(parts._replace(scheme=parts.scheme.removesuffix("+asyncpg")))
        self.prefix = url_prefix if prefix is None else prefix
        self.channel = notify_channel(self.prefix)
        self.application_name = application_name
        self.ping_interval, self.pool_size = ping_interval, pool_size
        self._listener: Any = None  # the asyncpg connection, set while LISTENing
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()

    async def publish(self, channel: str, message: str) -> None:
        payload = f"{json.dumps(channel)}\n{message}"
        if len(payload.encode()) > MAX_PAYLOAD:
            payload = json.dumps(channel)  # too large to carry: subscribers re-read the state
        with anyio.fail_after(self.timeout):  # a publish runs while the instance is held
            if self._pool is None:
                async with self._pool_lock:
                    if self._pool is None:
                        self._pool = await asyncpg.create_pool(
                            self.url,
                            min_size=0,
                            max_size=self.pool_size,
                            timeout=self.timeout,
                            reset=_no_reset,
                            server_settings={"application_name": f"{self.application_name}-publish"},
                        )
            await self._pool.execute("SELECT pg_notify($1, $2)", self.channel, payload)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self.url,
            timeout=self.timeout,
            server_settings={"application_name": f"{self.application_name}-listen"},
        )
        try:
            await conn.add_listener(self.channel, self._on_notify)
            self._listener = conn
            self._connected()  # anything published before LISTEN was not heard
            await self._ping(conn)
        finally:
            self._listener = None
            with anyio.CancelScope(shield=True), suppress(*CONNECTION_ERRORS):
                await conn.close(timeout=self.timeout)

    async def _ping(self, conn: Any) -> None:
        """Raises when the connection is lost; pings it while idle, to notice a silent network."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        while not lost.is_set():
            with anyio.move_on_after(self.ping_interval):
                await lost.wait()
            if not lost.is_set():
                await conn.execute("SELECT 1", timeout=self.timeout)
        raise ConnectionError("the server closed the connection")

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        head, newline, message = payload.partition("\n")
        try:
            name = json.loads(head)
        except ValueError:
            return  # not ours
        if isinstance(name, str):
            self._channels.deliver(name, message if newline else None)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _no_reset(conn: Any) -> None:
    """Publishing changes no session state: skip the pool's reset query on every release."""

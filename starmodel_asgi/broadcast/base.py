"""The ``Broadcast`` protocol: live-update fan-out, whatever carries it.

A subscription yields each message published on its channel; a subscriber that falls behind only
keeps the newest one (messages are whole states, so skipping old ones loses nothing), unless it
asked for ``every`` message. It yields
``None`` when messages may have been missed (the backend lost its connection and got it back, or
has just started listening): the reader should then re-read the state from the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: A published message, or ``None``: "messages may have been missed, re-read the state".
Payload = str | None


class Broadcast(Protocol):
    async def publish(self, channel: str, message: str) -> None: ...

    def subscribe(self, channel: str, *, every: bool = False) -> AbstractAsyncContextManager[AsyncIterator[Payload]]:
        """Messages published on ``channel`` from now on, until the block exits: the newest
        only, or with ``every=True`` each of them (up to a bounded backlog). Iteration stops when
        the backend is closed."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Capabilities:
    """What a backend may also say of itself (each optional: any object with ``publish``,
    ``subscribe`` and ``aclose`` is a broadcast, with these defaults). ``wants(channel)``: false
    when no subscriber anywhere could hear the channel (the memory broadcast knows), so publishers
    skip formatting the message; ``instant = True``: publishing cannot hang (in-process), so
    publishers need not queue; ``max_message``: the longest message (bytes) that reaches
    subscribers whole (PostgreSQL's ``NOTIFY``), so a publisher that can split its message does."""

    wants: Callable[[str], bool] | None = None
    instant: bool = False
    max_message: int | None = None

    @classmethod
    def of(cls, broadcast: Broadcast) -> Capabilities:
        return cls(
            getattr(broadcast, "wants", None),
            bool(getattr(broadcast, "instant", False)),
            getattr(broadcast, "max_message", None),
        )


def split_prefix(url: str) -> tuple[str, str]:
    """``redis://h/0?prefix=app1:`` -> ``("redis://h/0", "app1:")``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = "".join(v for k, v in query if k == "prefix")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix

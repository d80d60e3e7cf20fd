"""Aggregates a live list follows: ``model_config = {"aggregates": {"left": {"done": False}}}``
counts the records matching each filter, sent as the ``$todo._count.left`` signal with the list and
again whenever a record changes.

Each change message of the entity's list channel costs one count per aggregate per process, shared
by every stream of that process (the counts of a message are kept a little while, and streams that
ask meanwhile wait for the first one's); aggregate filters are on indexed fields, so each count is
an index lookup (SQL ``COUNT`` on the index, Redis ``ZCARD`` of the value's set), not a table read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from starmodel_asgi.recent import Recent
from starmodel_asgi.spec import EntitySpec

#: the counts of one entity's aggregates, by aggregate name
Counts = dict[str, int]


class Tallies:
    """The aggregate counts of each recent list message, counted once per process."""

    def __init__(self, size: int = 256) -> None:
        self._done: Recent[tuple[str, str], Counts] = Recent(size, size * 1024)
        self._pending: dict[tuple[str, str], anyio.Event] = {}

    async def get(self, spec: EntitySpec, message: str | None, count: Callable[[], Awaitable[Counts]]) -> Counts:
        """The counts after ``message`` (``None``: a stream starting, which counts on its own)."""
        if message is None:
            return await count()
        key = (spec.name, message)
        while (done := self._done.get(key)) is None:
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = anyio.Event()
                try:
                    self._done.put(key, await count(), 64)
                finally:
                    self._pending.pop(key).set()
            else:
                await pending.wait()  # the first asker's count (or its failure: then this one counts)
        return done

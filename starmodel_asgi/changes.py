"""Domain events: ``@sm.on(Entity[, "event"])`` subscribers, told of each committed change in the
process that made it."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("starmodel_asgi")


@dataclass(frozen=True)
class Change:
    """One committed change: the entity class, the instance's key (session id, user id, record id,
    or ``"global"``), the event's name (``None`` for ``sm.edit``, creates and deletes), and the
    public state before and after (``None`` before a create and after a delete)."""

    entity: type
    key: str
    event: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


Subscriber = Callable[[Change], Awaitable[None] | None]


class Subscribers:
    """Who hears of which entity's changes. Each is called once per change, after the commit, in
    order of registration; one that raises is logged and the others still run."""

    def __init__(self) -> None:
        self._by_entity: dict[type, list[tuple[str | None, Subscriber]]] = {}

    def add(self, entity: type, event: str | None, subscriber: Subscriber) -> None:
        self._by_entity.setdefault(entity, []).append((event, subscriber))

    def __bool__(self) -> bool:
        return bool(self._by_entity)

    def wanted(self, entity: type) -> bool:
        return entity in self._by_entity

    async def notify(self, change: Change) -> None:
        for event, subscriber in self._by_entity.get(change.entity, ()):
            if event is not None and event != change.event:
                continue
            try:
                result = subscriber(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception(
                    "subscriber %s of %s failed on %s",
                    getattr(subscriber, "__qualname__", subscriber),
                    change.entity.__name__,
                    change.event or "a change",
                )

"""Domain events: ``@sm.on(Entity[, "event"])`` and ``@sm.on()`` subscribers, told of each committed change in the
process that made it."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starmodel_asgi.depends import Depends, Provider, provided, wanted
from starmodel_asgi.logs import EVENTS, get_logger
from starmodel_asgi.values import EventRequest

logger = get_logger(EVENTS)


@dataclass(frozen=True)
class Change:
    """One committed change: the entity class, the instance's key (session id, user id, record id,
    or ``"global"``), the event's name (``None`` for ``sm.edit``, creates and deletes), the public
    state before and after (``None`` before a create and after a delete), and who made it: the
    caller's ``user_id`` and ``session_id`` (``None`` from scripts and tasks). ``id`` is unique,
    ``at`` is when it was committed (aware, UTC)."""

    entity: type
    key: str
    event: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    user_id: str | None = None
    session_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Subscriber = Callable[[Change], Awaitable[None] | None]


class Subscribers:
    """Who hears of which entity's changes. Each is called once per change, after the commit, in
    order of registration; one that raises is logged and the others still run."""

    def __init__(self, overrides: Mapping[Provider, Provider] | None = None) -> None:
        self._by_entity: dict[type | None, list[tuple[str | None, Subscriber]]] = {}  # None: every entity
        self._wants: dict[Subscriber, dict[str, Depends]] = {}  # the Depends parameters of each
        self.overrides = {} if overrides is None else overrides

    def add(self, entity: type | None, event: str | None, subscriber: Subscriber) -> None:
        self._by_entity.setdefault(entity, []).append((event, subscriber))
        self._wants[subscriber] = wanted(subscriber)

    def __bool__(self) -> bool:
        return bool(self._by_entity)

    def wanted(self, entity: type) -> bool:
        return entity in self._by_entity or None in self._by_entity

    async def notify(self, change: Change) -> None:
        for event, subscriber in [*self._by_entity.get(None, ()), *self._by_entity.get(change.entity, ())]:
            if event is not None and event != change.event:
                continue
            try:
                wants = self._wants.get(subscriber)
                if wants:
                    caller = EventRequest("", "", {}, user_id=change.user_id, session_id=change.session_id)
                    async with provided(wants, caller, self.overrides) as services:
                        await _call(subscriber, change, services)
                else:
                    await _call(subscriber, change, {})
            except Exception:
                logger.exception(
                    "subscriber %s of %s failed on %s",
                    getattr(subscriber, "__qualname__", subscriber),
                    change.entity.__name__,
                    change.event or "a change",
                )


async def _call(subscriber: Subscriber, change: Change, services: dict[str, Any]) -> None:
    result = subscriber(change, **services)
    if inspect.isawaitable(result):
        await result

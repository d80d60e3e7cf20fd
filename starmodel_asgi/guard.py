"""``authorize``: the app's one question about who may do what, asked the same way everywhere."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import replace

from starmodel_asgi.entity import Entity, entity_class
from starmodel_asgi.errors import EventError
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.values import EventRequest

#: ``authorize(request, entity, event)`` or ``authorize(request, entity, event, record)``: ``event`` is
#: the event's name, ``"delete"``, or ``None`` for reads, lists, creates and live streams; ``record``
#: is the record concerned (read, changed, deleted, streamed, each one a list sends, the new one of a
#: create) or ``None``. May be async. ``False`` answers 403 (or leaves the record out of a list).
Authorize = Callable[..., bool | Awaitable[bool]]


def takes_record(authorize: Authorize) -> bool:
    """Whether ``authorize`` takes the fourth argument, the record."""
    try:
        parameters = list(inspect.signature(authorize).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) not in (3, 4):
        raise TypeError(f"authorize takes (request, entity, event[, record]), not {len(positional)} arguments")
    return len(positional) == 4


class Guard:
    """Asks ``authorize`` (everything is allowed without one). ``with_record``: it takes the record."""

    def __init__(self, authorize: Authorize | None) -> None:
        self.authorize = authorize
        self.with_record = authorize is not None and takes_record(authorize)

    async def check(
        self, call: EventRequest, spec: EntitySpec, event: str | None, record: Entity | None = None
    ) -> None:
        """403 unless ``authorize`` says ``True``."""
        if not await self.allows(call, spec, event, record):
            raise EventError(403, "Forbidden", spec.name)

    async def allows(
        self, call: EventRequest, spec: EntitySpec, event: str | None, record: Entity | None = None
    ) -> bool:
        if self.authorize is None:
            return True
        if self.with_record:
            allowed = self.authorize(call, entity_class(spec), event, record)
        else:
            allowed = self.authorize(call, entity_class(spec), event)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not isinstance(allowed, bool):
            raise TypeError(f"authorize must return a bool, not {type(allowed).__name__}")
        return allowed

    async def allows_record(self, call: EventRequest, spec: EntitySpec, record: Entity) -> bool:
        """About one record a list, live list or create concerns (its id in ``path_params``)."""
        return await self.allows(replace(call, path_params={"id": record.id}), spec, None, record)

    def record_check(
        self, call: EventRequest, spec: EntitySpec, event: str
    ) -> Callable[[Entity], Awaitable[None]] | None:
        """About the record an event or delete changes, to ask under its lock (``None``: nothing
        to ask there)."""
        if not (self.with_record and spec.is_record):
            return None

        async def check(record: Entity) -> None:
            await self.check(call, spec, event, record)

        return check

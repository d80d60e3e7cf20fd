"""The queries of ``StarModel``'s server side: ``sm.list`` and ``sm.count`` of record entities."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from starmodel_asgi.dispatch import Dispatcher
from starmodel_asgi.entity import Entity
from starmodel_asgi.query import build_query
from starmodel_asgi.spec import EntitySpec, record_spec

E = TypeVar("E", bound=Entity)


class Records:
    """Lists and counts of records, as ``StarModel`` serves them (in the current unit, if any)."""

    dispatcher: Dispatcher
    spec: Callable[[type[Entity]], EntitySpec]  # StarModel.spec

    async def list(
        self,
        entity: type[E],
        limit: int = 100,
        offset: int = 0,
        *,
        where: Mapping[str, Any] | None = None,
        order: str | None = None,
    ) -> list[E]:
        """Records in creation order, or ``order`` (a field; ``"-field"`` descending; ``"-created"``
        newest first), those matching every ``where`` field (equality; values coerced by the
        field's type: a bad one or an unknown field is a ``ValueError`` naming it)."""
        spec = records(self.spec(entity), "list")
        query = build_query(spec, where, order)
        return [cast(E, instance) for instance in await self.dispatcher.list(spec, limit, offset, query=query)]

    async def count(self, entity: type[Entity], where: Mapping[str, Any] | None = None) -> int:
        """How many records match every ``where`` field (all of them without)."""
        spec = records(self.spec(entity), "count")
        return await self.dispatcher.count(spec, build_query(spec, where))


def records(spec: EntitySpec, doing: str) -> EntitySpec:
    """``spec``, which ``sm.<doing>`` needs to be a record entity's."""
    return record_spec(spec, f"sm.{doing}")

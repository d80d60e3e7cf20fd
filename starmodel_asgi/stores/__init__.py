"""Where entity state lives: one ``Store`` protocol, one module per backend."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starmodel_asgi.entity import Entity

State = dict[str, Any]


class Slot(Protocol):
    """One instance, held exclusively (across processes where the store is shared).

    ``save`` makes the state durable at once; leaving the ``hold`` block by an exception saves
    nothing more and, for transactional stores, rolls back what was not saved yet.
    """

    async def load(self) -> State | None: ...
    async def save(self, state: State) -> None: ...
    async def delete(self) -> None: ...


class Store(Protocol):
    def hold(self, entity: type[Entity], key: str) -> AbstractAsyncContextManager[Slot]:
        """Serialise access to one instance for the duration of the block."""
        ...

    async def get(self, entity: type[Entity], key: str) -> State | None:
        """Read without holding the instance (a consistent, possibly stale, snapshot)."""
        ...

    async def list(self, entity: type[Entity], limit: int, offset: int) -> list[State]:
        """Stored instances of a record entity, oldest first."""
        ...

    async def aclose(self) -> None: ...


def ttl_for(entity: type[Entity], default: float | None) -> float | None:
    """Seconds an idle instance is kept: the entity's ``ttl``, else ``default`` for session and
    user instances; global and record instances never expire unless they set one."""
    ttl = entity.entity_ttl()
    if ttl is not None:
        return ttl
    return default if entity.entity_scope() in ("session", "user") else None

"""Moving an app's data to another store: every instance of its entities (records, global, user
and session states) copied with its key, remaining TTL and creation order, never overwriting
what the target holds (so running it twice changes nothing more). ``sm.copy`` and the
``copy`` command line run it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starmodel_asgi.extras import require
from starmodel_asgi.spec import EntitySpec
from starmodel_asgi.stores import SQL_DRIVERS, Store, Stored

if TYPE_CHECKING:
    from starmodel_asgi.entity import Entity
    from starmodel_asgi.settings import Settings

#: Instances written per batch (one transaction, one pipeline).
BATCH = 500

#: ``progress(entity name, instances read so far)``, called after each batch.
Progress = Callable[[str, int], None]


@dataclass
class Copied:
    """What a copy did for one entity: instances ``found`` in its store, ``written`` to the target
    (the others were there already; a dry run writes none)."""

    entity: str
    found: int = 0
    written: int = 0

    @property
    def present(self) -> int:
        """Found, but the target had that key already (left as it was)."""
        return self.found - self.written


def target_store(url: str, settings: Settings) -> Store:
    """The store at ``url``: ``sqlite+aiosqlite://``, ``postgresql+asyncpg://`` or ``redis://``."""
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss", "unix"):
        require("redis", "redis", f"copying to {scheme}://")
        from starmodel_asgi.stores.redis import RedisStore

        return RedisStore(url, default_ttl=settings.session_ttl)
    dialect, _, driver = scheme.partition("+")
    if dialect in ("sqlite", "postgresql") and driver in SQL_DRIVERS:
        require("sqlalchemy", "sql", f"copying to {scheme}://")
        require(SQL_DRIVERS[driver], "sql", f"copying to {scheme}://")
        from starmodel_asgi.stores.sql import SQLStore

        return SQLStore(url, default_ttl=settings.session_ttl, schema=settings.schema)
    raise ValueError(
        f"cannot copy to {url!r}: give sqlite+aiosqlite:///FILE, postgresql+asyncpg://USER@HOST/DB or redis://HOST:PORT/N"
    )


def chosen(specs: Mapping[str, EntitySpec], entities: Iterable[str | type[Entity]] | None) -> list[EntitySpec]:
    """The entities to copy: all kept on the server, or those named (by name or class)."""
    served = [spec for spec in specs.values() if not spec.in_browser]
    if entities is None:
        return served
    out = []
    for wanted in entities:
        spec = next((s for s in served if wanted in (s.name, s.entity, s.entity.__name__)), None)
        if spec is None:
            names = ", ".join(s.name for s in served)
            raise ValueError(f"no entity {getattr(wanted, '__name__', wanted)!r} kept on the server to copy: {names}")
        out.append(spec)
    return out


async def copy_entity(
    spec: EntitySpec, source: Store, target: Store | None, progress: Progress | None = None
) -> Copied:
    """Every instance of ``spec`` from ``source`` into ``target`` (``None``: a dry run, counting)."""
    done = Copied(spec.name)
    batch: list[Stored] = []

    async def flush() -> None:
        if target is not None and batch:
            done.written += await target.restore(spec, batch)
        batch.clear()
        if progress is not None:
            progress(spec.name, done.found)

    async for item in source.dump(spec):
        done.found += 1
        batch.append(item)
        if len(batch) == BATCH:
            await flush()
    await flush()
    return done


async def copy_all(
    specs: Iterable[EntitySpec],
    store_for: Callable[[EntitySpec], Store],
    target: Store | None,
    progress: Progress | None = None,
) -> dict[str, Copied]:
    """``copy_entity`` for each of ``specs``, in order, from the store that keeps it."""
    return {spec.name: await copy_entity(spec, store_for(spec), target, progress) for spec in specs}


class Copying:
    """``sm.copy``: the data-moving side of ``StarModel``'s API."""

    specs: dict[str, EntitySpec]
    settings: Settings
    store_for: Callable[[EntitySpec], Store]  # StarModel.store_for

    async def copy(
        self,
        to: str | Store,
        entities: Iterable[str | type[Entity]] | None = None,
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Copied]:
        """``await sm.copy(to="postgresql+asyncpg://...")``: every instance of the app's entities
        (or of ``entities``, by name or class) from their stores into the store at ``to`` (a URL,
        or a ``Store``), keeping keys, remaining TTLs and creation order, never overwriting what
        is there: a second run writes nothing. Counts by entity name; ``dry_run`` only counts."""
        specs = chosen(self.specs, entities)
        target = target_store(to, self.settings) if isinstance(to, str) else to
        try:
            return await copy_all(specs, self.store_for, None if dry_run else target, progress)
        finally:
            if isinstance(to, str):
                await target.aclose()

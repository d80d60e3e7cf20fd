"""An app for worker-process tests, configured by the environment:

- ``SM_WORKER_STORE``: ``sql`` or ``redis``; ``SM_WORKER_URL``: the database or Redis URL;
- ``SM_WORKER_PREFIX``: table prefix (SQL) or key prefix (Redis), so runs do not collide.

Serve it with ``uvicorn tests.support.worker_app:app``; every worker started with the same environment
shares one ``Tally`` (global) and the callers' ``Visits`` (per session).
"""

from __future__ import annotations

import os
from typing import Annotated, Literal, cast

import anyio

from starmodel_asgi import ClientWritable, Entity, EventRequest, StarModel, event
from starmodel_asgi.stores import Store

STORE = cast(Literal["sql", "redis"], os.environ.get("SM_WORKER_STORE", "sql"))


class Tally(Entity):
    model_config = {"scope": "global", "store": STORE}
    count: int = 0

    @event
    def increment(self, amount: int = 1) -> None:
        self.count += amount

    @event
    async def linger(self, seconds: float = 30) -> None:
        """Holds the instance a while: tests kill its worker meanwhile."""
        await anyio.sleep(seconds)


class Visits(Entity):
    model_config = {"store": STORE}
    count: int = 0

    @event
    def increment(self) -> None:
        self.count += 1


class Item(Entity):
    """Records whose events create and delete records: each call is one unit of work."""

    model_config = {"scope": "record", "store": STORE}
    title: Annotated[str, ClientWritable] = ""

    @event
    async def spawn(self, request: EventRequest, title: str) -> None:
        await request.app.create(Item, title=title)

    @event
    async def drop(self, request: EventRequest) -> None:
        await request.app.delete(Item, self.id)


def make_store() -> Store:
    url, prefix = os.environ["SM_WORKER_URL"], os.environ["SM_WORKER_PREFIX"]
    if STORE == "redis":
        from starmodel_asgi.stores.redis import RedisStore

        return RedisStore(url, prefix=prefix)
    from starmodel_asgi.stores.sql import SQLStore

    return SQLStore(url, table_prefix=prefix)


app = StarModel(entities=[Tally, Visits, Item], secret_key="worker-test-secret", stores={STORE: make_store()})

"""``GET /health``: each store and the broadcast reached, with how long each took, every check
bounded by ``timeout`` so a backend that hangs makes the answer "degraded", never late."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import Response

from starmodel_asgi.broadcast import Broadcast
from starmodel_asgi.logs import APP, get_logger
from starmodel_asgi.stores import Store

logger = get_logger(APP)

#: Where the broadcast check hears its own probe.
PROBE_CHANNEL = "sm-health:"


class Health:
    """The checks of one app: ``await health()`` is the report ``GET /health`` answers."""

    def __init__(
        self, stores: Mapping[str, Store], broadcast: Broadcast, timeout: float = 1.0, *, shadowed: bool = False
    ) -> None:
        self.stores, self.broadcast, self.timeout = stores, broadcast, timeout
        if shadowed:  # the app's URLs stay as they were: the entity keeps its path
            logger.warning("an entity is named 'health': GET /health is its state; serve await sm.health() elsewhere")

    async def __call__(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "checks": {"store:sql": {"ok": True, "ms": 1.2}, ...}}``;
        a failed check says why (``"error": "TimeoutError"``: the exception's kind only, never its
        message, which may name hosts or users)."""
        checks: dict[str, dict[str, Any]] = {}
        probes: dict[str, Callable[[], Awaitable[None]]] = {
            **{f"store:{name}": store.ping for name, store in sorted(self.stores.items())},
            "broadcast": self._broadcast_probe,
        }
        async with anyio.create_task_group() as tg:  # at once: the answer takes the longest check, not their sum
            for name, probe in probes.items():
                tg.start_soon(self._check, name, probe, checks)
        ok = all(check["ok"] for check in checks.values())
        return {"status": "ok" if ok else "degraded", "checks": {name: checks[name] for name in probes}}

    async def response(self) -> Response:
        report = await self()
        status = 200 if report["status"] == "ok" else 503
        return Response(json.dumps(report), status, {"cache-control": "no-store"}, "application/json")

    async def _check(self, name: str, probe: Callable[[], Awaitable[None]], checks: dict[str, dict[str, Any]]) -> None:
        start = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout):
                await probe()
        except Exception as exc:
            logger.warning("health check %s failed: %r", name, exc)
            checks[name] = {"ok": False, "ms": _ms(start), "error": type(exc).__name__}
        else:
            checks[name] = {"ok": True, "ms": _ms(start)}

    async def _broadcast_probe(self) -> None:
        """A message published and heard back: the broadcast's whole way, from this process. A
        backend that says it has just started listening (``None``: the probe may have been missed)
        is sent it again."""
        channel = PROBE_CHANNEL + uuid.uuid4().hex
        async with self.broadcast.subscribe(channel, every=True) as messages:
            await self.broadcast.publish(channel, "ping")
            async for message in messages:
                if message == "ping":
                    return
                if message is None:
                    await self.broadcast.publish(channel, "ping")
        raise ConnectionError("the broadcast closed")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)

"""Sync events run on the event loop (no thread hop for quick code); ``@event(thread=True)`` runs
blocking code in a worker thread, so the loop keeps serving others meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import JSON
from tests.support.servers import run_server

pytestmark = pytest.mark.anyio

SEEN: dict[str, int] = {}


class Desk(Entity):
    model_config = {"scope": "global"}
    count: int = 0
    note: str = ""

    @event
    def bump(self) -> None:
        SEEN["bump"] = threading.get_ident()
        self.count += 1

    @event
    def steps(self) -> Iterator[None]:
        SEEN["steps"] = threading.get_ident()
        for _ in range(3):
            self.count += 1
            yield

    @event(thread=True)
    def slow(self, seconds: float = 0.0) -> None:
        SEEN["slow"] = threading.get_ident()
        time.sleep(seconds)  # blocking work: a sync client, a long computation
        self.note = "slow done"

    @event(thread=True)
    def slow_steps(self) -> Iterator[None]:
        SEEN["slow_steps"] = threading.get_ident()
        self.count += 10
        yield


async def test_sync_events_run_on_the_loop_and_thread_true_in_a_worker_thread() -> None:
    sm = StarModel([Desk], base_path="", secret_key="s")
    loop_thread = threading.get_ident()
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        for name in ("bump", "steps", "slow", "slow_steps"):
            assert (await client.post(f"/desk/{name}", json={}, headers=JSON)).status_code == 200
        assert (await client.get("/desk", headers=JSON)).json() == {"count": 14, "note": "slow done"}
    assert SEEN["bump"] == SEEN["steps"] == loop_thread
    assert SEEN["slow"] != loop_thread and SEEN["slow_steps"] != loop_thread


def test_a_blocking_thread_event_does_not_hold_up_other_requests() -> None:
    class Other(Entity):
        model_config = {"scope": "global"}
        hits: int = 0

        @event
        def hit(self) -> None:
            self.hits += 1

    sm = StarModel([Desk, Other], base_path="", secret_key="s")
    with run_server(sm) as url:

        async def both() -> float:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client, anyio.create_task_group() as tg:

                async def slow() -> None:
                    assert (await client.post("/desk/slow", json={"seconds": 1.0})).status_code == 200

                tg.start_soon(slow)
                await anyio.sleep(0.2)  # the slow event is sleeping in its thread
                started = time.monotonic()
                assert (await client.post("/other/hit", json={})).status_code == 200
                return time.monotonic() - started

        waited = anyio.run(both)
    assert waited < 0.5, f"a request waited {waited:.2f} s behind a thread=True event"


def test_thread_true_is_for_sync_events_only() -> None:
    with pytest.raises(TypeError, match=r"@event\(thread=True\) go: only a sync def runs in a thread"):

        class Bad(Entity):
            @event(thread=True)
            async def go(self) -> None:
                pass

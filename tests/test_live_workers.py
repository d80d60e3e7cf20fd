"""Two uvicorn worker processes sharing Redis: a change made through one shows on the other's streams."""

from __future__ import annotations

import os
import time
import uuid
from contextlib import ExitStack

import anyio
import httpx
import pytest

from starmodel_asgi import Entity, StarModel, event
from tests.support.headers import DATASTAR
from tests.support.servers import LiveStream, run_worker
from tests.support.services import require

pytestmark = pytest.mark.anyio


class Scoreboard(Entity):
    model_config = {"scope": "global", "store": "redis"}
    score: int = 0

    @event
    def score_up(self) -> None:
        self.score += 1


def worker_app() -> StarModel:
    """``uvicorn --factory tests.test_live_workers:worker_app``, configured by the environment:
    ``LIVE_WORKER_REDIS`` (Redis URL) and ``LIVE_WORKER_PREFIX`` (keys and channels namespace)."""
    from starmodel_asgi.stores.redis import RedisStore

    url, prefix = os.environ["LIVE_WORKER_REDIS"], os.environ["LIVE_WORKER_PREFIX"]
    return StarModel(
        entities=[Scoreboard],
        base_path="",
        secret_key="live-workers",
        broadcast_url=f"{url}?prefix={prefix}",
        stores={"redis": RedisStore(url, prefix=prefix)},
    )


def score_is(n: int) -> object:
    return lambda live: live.signals.get("scoreboard", {}).get("score") == n


async def test_an_event_on_one_worker_reaches_a_stream_on_the_other_within_a_second() -> None:
    redis_url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    env = {"LIVE_WORKER_REDIS": redis_url, "LIVE_WORKER_PREFIX": f"test-live-workers-{uuid.uuid4().hex}:"}
    with ExitStack() as stack:
        a, b = (stack.enter_context(run_worker("tests.test_live_workers:worker_app", env, factory=True)) for _ in "ab")
        async with (
            httpx.AsyncClient(base_url=a, timeout=10) as on_a,
            httpx.AsyncClient(base_url=b, timeout=10) as on_b,
            LiveStream(on_a, "/scoreboard/live") as watching_a,
            LiveStream(on_b, "/scoreboard/live") as watching_b,
        ):
            await watching_a.until(score_is(0))
            await watching_b.until(score_is(0))
            delays = []
            for n in range(1, 7):
                # alternate: post to one worker, watch the other
                poster, watcher = (on_a, watching_b) if n % 2 else (on_b, watching_a)
                started = time.monotonic()
                response = await poster.post("/scoreboard/score_up", headers=DATASTAR)
                assert response.status_code == 200
                with anyio.fail_after(5):
                    await watcher.until(score_is(n))
                delays.append(time.monotonic() - started)
            assert max(delays) < 1.0, delays
            # both pages end at the last change, having seen the states in order
            for live in (watching_a, watching_b):
                await live.until(score_is(6))
                scores = [e.signals["scoreboard"]["score"] for e in live.events]
                assert scores == sorted(scores) and scores[-1] == 6

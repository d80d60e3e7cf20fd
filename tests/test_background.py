"""``@event(background=True)`` over a real uvicorn: the event holds no lock while it sleeps, so other
clients' events go through; each ``async with self:`` block saves and pushes live; yields stream
to the caller; a caller that goes away cancels it."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from starmodel_asgi import Change, Entity, StarModel, event
from starmodel_asgi.testing import StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.servers import read_live, run_server
from tests.support.sse import merged_signals, parse_sse

pytestmark = pytest.mark.anyio


class Job(Entity):
    model_config = {"scope": "global", "name": "job"}
    progress: int = 0
    clicks: int = 0

    @event
    def click(self) -> None:
        self.clicks += 1

    @event(background=True)
    async def run(self, steps: int = 5, pause: float = 0.2):  # type: ignore[no-untyped-def]
        for _ in range(steps):
            await anyio.sleep(pause)  # slow work, holding nothing
            async with self:  # fresh state under the lock; saved and pushed on leaving
                self.progress += 1
            yield None

    @event(background=True)
    async def broken(self) -> None:
        async with self:
            self.progress = 99
            raise RuntimeError("half way")

    @event(background=True)
    async def nested(self) -> None:
        async with self, self:
            pass

    @event(background=True)
    async def quick(self) -> str:
        async with self:
            self.progress = 1
        return '<p id="done">done</p>'


@pytest.fixture
def sm() -> StarModel:
    return StarModel([Job], secret_key="background")


async def state(c: httpx.AsyncClient) -> dict[str, int]:
    return dict((await c.get("/job", headers=JSON)).json())


async def test_other_events_go_through_while_a_background_event_runs(sm: StarModel) -> None:
    changes: list[Change] = []
    sm.on(Job, "run")(changes.append)
    with run_server(sm) as url:
        async with (
            httpx.AsyncClient(base_url=url) as runner,
            httpx.AsyncClient(base_url=url) as other,
            httpx.AsyncClient(base_url=url) as watcher,
            read_live(watcher, "/job/live") as live,
        ):
            await live.wait(lambda s: s.signals.get("job", {}).get("progress") == 0)
            answers: list[str] = []

            async def run() -> None:
                r = await runner.post("/job/run", headers=DATASTAR, json={"steps": 5})
                answers.append(r.text)

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await live.wait(lambda s: s.signals["job"]["progress"] >= 1)  # it has started
                started = time.monotonic()
                for _ in range(3):
                    assert (await other.post("/job/click", headers=JSON)).status_code == 200
                waited = time.monotonic() - started
                assert waited < 0.5, f"three clicks took {waited:.2f} s behind the background event"
                await live.wait(lambda s: s.signals["job"]["progress"] == 5)  # every block pushed live

            assert await state(other) == {"progress": 5, "clicks": 3}  # no block lost a click
            steps = [e.signals["job"]["progress"] for e in parse_sse(answers[0]) if e.event == "datastar-patch-signals"]
            assert steps == [1, 2, 3, 4, 5]  # each yield streamed to the caller
    assert [(c.event, c.after["progress"] if c.after else None) for c in changes] == [("run", n) for n in range(1, 6)]


async def test_a_caller_that_goes_away_cancels_the_event(sm: StarModel) -> None:
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            async with c.stream("POST", "/job/run", headers=DATASTAR, json={"steps": 50, "pause": 0.05}) as r:
                async for chunk in r.aiter_bytes():
                    if b"progress" in chunk:
                        break  # the caller leaves after the first step
            await anyio.sleep(0.5)
            progress = (await state(c))["progress"]
            await anyio.sleep(0.5)
            assert (await state(c))["progress"] == progress < 50  # stopped, not running on


async def test_a_block_that_raises_saves_nothing_and_answers_500(sm: StarModel) -> None:
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as c:
        r = await c.post("/job/broken", headers=JSON)
        assert r.status_code == 500 and "half way" not in r.text
        assert await state(c) == {"progress": 0, "clicks": 0}
        r = await c.post("/job/quick", headers=DATASTAR)
        events = parse_sse(r.text)
        assert merged_signals(events)["job"]["progress"] == 1
        assert [e.elements for e in events if e.event == "datastar-patch-elements"] == ['<p id="done">done</p>']
        r = await c.post("/job/quick", headers=JSON)
        assert r.json() == {"progress": 1, "clicks": 0}
        r = await c.post("/job/nested", headers=JSON)  # nesting would deadlock on the lock: refused
        assert r.status_code == 500 and (await state(c))["progress"] == 1


async def test_misuse_is_named() -> None:
    with pytest.raises(TypeError, match="needs an async def"):

        @event(background=True)
        def sync_one(self: object) -> None: ...

    with pytest.raises(RuntimeError, match=r"sm\.edit"):
        async with Job():
            pass


class Task(Entity):
    """A session's own background work."""

    model_config = {"name": "task"}
    done: int = 0

    @event(background=True)
    async def work(self, pause: float = 0.3):  # type: ignore[no-untyped-def]
        await anyio.sleep(pause)
        async with self:
            self.done += 1
        yield None


async def test_one_session_runs_at_most_max_background_events_at_once() -> None:
    sm = StarModel([Task], secret_key="background", max_background=2)
    with run_server(sm) as url:
        async with httpx.AsyncClient(base_url=url) as mine, httpx.AsyncClient(base_url=url) as other:
            await mine.get("/task", headers=JSON)  # the session cookie
            await other.get("/task", headers=JSON)
            statuses: list[int] = []

            async def work(client: httpx.AsyncClient, pause: float) -> None:
                statuses.append((await client.post("/task/work", json={"pause": pause}, headers=JSON)).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(work, mine, 0.5)
                await anyio.sleep(0.2)  # both are running
                refused = await mine.post("/task/work", json={"pause": 0}, headers=JSON)
                assert refused.status_code == 429
                assert "Task already runs 2 background events" in refused.json()["error"]
                assert (await other.post("/task/work", json={"pause": 0}, headers=JSON)).status_code == 200
            assert statuses == [200, 200]
            again = await mine.post("/task/work", json={"pause": 0}, headers=JSON)  # ended runs free their places
            assert again.status_code == 200
            assert (await mine.get("/task", headers=JSON)).json() == {"done": 3}

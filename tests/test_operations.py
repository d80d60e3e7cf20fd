"""Operating an app: GET /health, Prometheus metrics, span names without record ids, the
slow-event warning, loggers per concern with the request in every record, and viewer counts."""

from __future__ import annotations

import inspect
import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from starmodel_asgi import Entity, EventError, StarModel, event
from starmodel_asgi.broadcast.postgres import PostgresBroadcast
from starmodel_asgi.broadcast.redis import RedisBroadcast
from starmodel_asgi.stores.memory import MemoryStore
from starmodel_asgi.stores.redis import RedisStore
from starmodel_asgi.testing import Page, StreamingTransport
from tests.support.headers import DATASTAR, JSON
from tests.support.servers import ROOT
from tests.support.services import drop_redis_keys, require

pytestmark = pytest.mark.anyio


class Tally(Entity):
    model_config = {"scope": "global"}
    count: int = 0

    @event
    def add(self, amount: int = 1) -> None:
        self.count += amount

    @event
    def boom(self) -> None:
        raise RuntimeError("the tally broke")

    @event
    def refuse(self) -> None:
        raise EventError(409, "not now")

    @event
    async def crawl(self, seconds: float = 0.0) -> None:
        await anyio.sleep(seconds)
        self.count += 1


class Ticket(Entity):
    model_config = {"scope": "record"}
    done: bool = False

    @event
    def close(self) -> None:
        self.done = True


class Kept(Entity):
    model_config = {"scope": "global", "store": "sql"}
    n: int = 0


class Cached(Entity):
    model_config = {"scope": "global", "store": "redis"}
    n: int = 0


class Room(Entity):
    model_config = {"scope": "global", "presence": True}
    topic: str = ""


class Line(Entity):
    model_config = {"scope": "record", "presence": True}
    text: str = ""

    def render(self) -> str:
        return f'<p id="line-{self.id}">{self.text}</p>'


class Health(Entity):
    model_config = {"scope": "global"}
    hp: int = 10


@asynccontextmanager
async def client_of(app: Any, base: str = "http://t") -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``; a StarModel alone is addressed at its ``base_path``, as if mounted there."""
    root = app.base_path if isinstance(app, StarModel) else ""
    transport = StreamingTransport(app, root_path=root)
    async with httpx.AsyncClient(transport=transport, base_url=base + root) as client:
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of a Prometheus text page, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- GET /health ------------------------------------------------------------------------------


async def test_health_reaches_each_store_and_the_broadcast_and_says_how_long_each_took(tmp_path: Path) -> None:
    redis_url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    prefix = f"test-health-{uuid.uuid4().hex}:"
    sm = StarModel(
        [Tally, Kept, Cached],
        secret_key="k",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'health.db'}",
        stores={"redis": RedisStore(redis_url, prefix=prefix)},
        broadcast=RedisBroadcast(redis_url, prefix=prefix),
    )
    try:
        async with client_of(sm) as client:
            answer = await client.get("/health")  # no session, no origin, no Datastar header
        assert answer.status_code == 200, answer.text
        assert "set-cookie" not in answer.headers and answer.headers["cache-control"] == "no-store"
        report = answer.json()
        assert report["status"] == "ok"
        assert list(report["checks"]) == ["store:memory", "store:redis", "store:sql", "broadcast"]
        for check in report["checks"].values():
            assert check["ok"] is True and isinstance(check["ms"], float) and 0 <= check["ms"] < 1000
    finally:
        await sm.aclose()
        await drop_redis_keys(redis_url, prefix)


async def test_health_on_postgresql_reaches_the_database_and_its_broadcast() -> None:
    url = require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL")
    sm = StarModel(
        [Kept],
        secret_key="k",
        database_url=url,
        broadcast=PostgresBroadcast(url, prefix=f"test-health-{uuid.uuid4().hex}"),
    )
    try:
        report = await sm.health()
    finally:
        await sm.aclose()
    assert report["status"] == "ok", report
    assert list(report["checks"]) == ["store:sql", "broadcast"]
    assert all(check["ok"] for check in report["checks"].values())


@contextmanager
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a hung Redis."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


async def test_a_hung_store_makes_health_degraded_within_its_timeout() -> None:
    with silent_server() as url:
        store = RedisStore(url, timeout=30)  # its own commands would wait 30 s
        sm = StarModel([Tally, Cached], secret_key="k", stores={"redis": store}, health_timeout=0.3)
        try:
            async with client_of(sm) as client:
                start = time.perf_counter()
                answer = await client.get("/health")
                took = time.perf_counter() - start
        finally:
            await sm.aclose()
    assert answer.status_code == 503
    report = answer.json()
    assert report["status"] == "degraded"
    assert report["checks"]["store:redis"]["ok"] is False
    assert report["checks"]["store:redis"]["error"] == "TimeoutError"
    assert report["checks"]["store:memory"]["ok"] is True and report["checks"]["broadcast"]["ok"] is True
    assert took < 2


async def test_health_is_answered_under_the_hosts_mount() -> None:
    host = FastAPI()
    sm = StarModel([Tally], secret_key="k")
    host.mount("/sm", sm)
    async with client_of(host) as client:
        answer = await client.get("/sm/health")
        posted = await client.post("/sm/health", headers=JSON)
        described = (await client.get("/sm/openapi.json")).json()["paths"]
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert posted.status_code == 404  # only GET and HEAD: it is not an entity
    assert set(described["/health"]["get"]["responses"]) == {"200", "503"}


async def test_an_entity_named_health_keeps_its_path(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="starmodel_asgi"):
        sm = StarModel([Health], secret_key="k")
    assert any("named 'health'" in r.getMessage() for r in caplog.records)
    async with client_of(sm) as client:
        answer = await client.get("/health", headers=JSON)
        described = (await client.get("/openapi.json")).json()["paths"]
    assert answer.json() == {"hp": 10}  # the entity's state, as before this route existed
    assert "Read the caller's health" in described["/health"]["get"]["summary"]
    assert (await sm.health())["status"] == "ok"  # still there for a route of the host's


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_events_by_entity_event_and_status_and_time_them() -> None:
    sm = StarModel([Tally, Ticket], secret_key="k", metrics=True)
    async with client_of(sm) as client:
        for _ in range(3):
            assert (await client.post("/tally/add", headers=DATASTAR)).status_code == 200
        assert (await client.post("/tally/add?amount=x", headers=JSON)).status_code == 422
        assert (await client.post("/tally/boom", headers=JSON)).status_code == 500
        assert (await client.post("/tally/refuse", headers=JSON)).status_code == 409
        ticket = (await client.post("/ticket", json={}, headers=JSON)).json()
        assert (await client.post(f"/ticket/{ticket['id']}/close", headers=JSON)).status_code == 200
        await client.get("/tally", headers=JSON)  # a read is not an event
    async with client_of(sm.metrics_app()) as scraper:
        page = (await scraper.get("/")).text
    seen = samples(page)
    assert seen["starmodel_events_total", (("entity", "tally"), ("event", "add"), ("status", "200"))] == 3
    assert seen["starmodel_events_total", (("entity", "tally"), ("event", "add"), ("status", "422"))] == 1
    assert seen["starmodel_events_total", (("entity", "tally"), ("event", "boom"), ("status", "500"))] == 1
    assert seen["starmodel_events_total", (("entity", "tally"), ("event", "refuse"), ("status", "409"))] == 1
    assert seen["starmodel_events_total", (("entity", "ticket"), ("event", "create"), ("status", "201"))] == 1
    assert seen["starmodel_events_total", (("entity", "ticket"), ("event", "close"), ("status", "200"))] == 1
    assert seen["starmodel_event_seconds_count", (("entity", "tally"), ("event", "add"))] == 4
    assert 0 < seen["starmodel_event_seconds_sum", (("entity", "tally"), ("event", "add"))] < 5
    assert ticket["id"] not in page  # ids never become labels
    assert not any(name == "starmodel_events_total" and ("event", "read") in labels for name, labels in seen)


async def test_errors_answered_200_for_the_page_are_logged_and_counted_with_their_real_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sm = StarModel([Tally], secret_key="k", metrics=True, datastar_error_status=200)
    with caplog.at_level(logging.INFO, logger="starmodel_asgi.events"):
        async with client_of(sm) as client:
            shown = await client.post("/tally/add?amount=x", headers=DATASTAR)
            refused = await client.post("/tally/refuse", headers=DATASTAR)
            assert (await client.post("/tally/add?amount=x", headers=JSON)).status_code == 422  # JSON: as it is
    assert (shown.status_code, refused.status_code) == (200, 200)  # the Datastar client applies the errors
    logged = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.getMessage().partition(":")[0] for r in logged] == [
        "POST /sm/tally/add refused with 422, answered 200 for the page to show it",
        "POST /sm/tally/refuse refused with 409, answered 200 for the page to show it",
    ]
    assert [(r.entity, r.event, r.status) for r in logged] == [("tally", "add", 422), ("tally", "refuse", 409)]  # type: ignore[attr-defined]
    async with client_of(sm.metrics_app()) as scraper:
        seen = samples((await scraper.get("/")).text)
    assert seen["starmodel_events_total", (("entity", "tally"), ("event", "add"), ("status", "422"))] == 2
    assert seen["starmodel_events_total", (("entity", "tally"), ("event", "refuse"), ("status", "409"))] == 1
    assert ("starmodel_events_total", (("entity", "tally"), ("event", "add"), ("status", "200"))) not in seen


async def test_metrics_show_open_live_streams_and_the_broadcast_lag() -> None:
    redis_url = require("STARMODEL_TEST_REDIS_URL", "Redis")
    prefix = f"test-metrics-{uuid.uuid4().hex}:"
    sm = StarModel([Tally], secret_key="k", metrics=True, broadcast=RedisBroadcast(redis_url, prefix=prefix))
    assert sm.metrics is not None

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        assert sm.metrics is not None
        return samples(_text(sm.metrics.registry))

    try:
        async with Page(sm) as page:
            async with page.live("/tally/live") as live:
                await live.wait(lambda live: "tally" in live.signals)
                assert scrape()["starmodel_live_streams", (("entity", "tally"),)] == 1
                assert sm.live_streams() == {"tally": 1}
                await page.run("@post('/tally/add')")
                await live.wait(lambda live: live.signals["tally"]["count"] == 1)
            assert ("starmodel_live_streams", (("entity", "tally"),)) not in scrape()
            assert sm.live_streams() == {}
        seen = scrape()
        assert seen["starmodel_broadcast_lag_seconds_count", ()] >= 1
        assert 0 < seen["starmodel_broadcast_lag_seconds_sum", ()] < 5
    finally:
        await sm.aclose()
        await drop_redis_keys(redis_url, prefix)


def _text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


async def test_metrics_go_in_the_registry_given_and_never_in_the_global_one() -> None:
    mine = CollectorRegistry()
    first = StarModel([Tally], secret_key="k", metrics=mine)
    second = StarModel([Tally], secret_key="k", metrics=True)  # a registry of its own: no clash
    assert first.metrics is not None and first.metrics.registry is mine
    assert second.metrics is not None and second.metrics.registry is not mine
    async with client_of(first) as client:
        await client.post("/tally/add", headers=JSON)
    assert "starmodel_events_total" in _text(mine)
    assert "starmodel_events_total{" not in _text(second.metrics.registry)
    assert "starmodel" not in _text(REGISTRY)


def test_metrics_are_off_by_default_and_say_how_to_turn_them_on(monkeypatch: pytest.MonkeyPatch) -> None:
    sm = StarModel([Tally], secret_key="k")
    assert sm.metrics is None
    with pytest.raises(RuntimeError, match=r"metrics=True"):
        sm.metrics_app()
    monkeypatch.setenv("STARMODEL_METRICS", "true")
    assert StarModel([Tally], secret_key="k").metrics is not None


def test_metrics_without_their_extra_fail_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"starmodel-asgi\[metrics\]"):
        StarModel([Tally], secret_key="k", metrics=True)


# -- tracing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tracing", [None, False])
async def test_span_names_carry_the_route_template_never_the_record_id(tracing: bool | None) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    host = FastAPI()
    sm = StarModel([Ticket, Tally], secret_key="k", tracing=tracing)
    host.mount("/sm", sm)
    traced = OpenTelemetryMiddleware(host, tracer_provider=provider, exclude_spans=["receive", "send"])
    async with client_of(traced) as client:
        ticket = (await client.post("/sm/ticket", json={}, headers=JSON)).json()
        assert (await client.post(f"/sm/ticket/{ticket['id']}/close", headers=JSON)).status_code == 200
        await client.post("/sm/tally/add", headers=JSON)
    names = [span.name for span in exporter.get_finished_spans()]
    if tracing is False:  # the middleware's own name: the raw path, id and all
        assert f"POST /sm/ticket/{ticket['id']}/close" in names
        return
    assert names == ["POST /sm/ticket", "POST /sm/ticket/{id}/close", "POST /sm/tally/add"]
    routes = [span.attributes["http.route"] for span in exporter.get_finished_spans() if span.attributes]
    assert routes == ["/sm/ticket", "/sm/ticket/{id}/close", "/sm/tally/add"]


async def test_fastapis_own_tracing_gets_the_route_template_too() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        pytest.skip("this FastAPI has no tracing of its own (FastAPI(telemetry=...) came later)")
    host = FastAPI(telemetry={"tracer_provider": provider, "metrics": False, "logs": False})  # type: ignore[call-arg]
    host.mount("/sm", StarModel([Ticket], secret_key="k"))
    async with client_of(host) as client:
        ticket = (await client.post("/sm/ticket", json={}, headers=JSON)).json()
        assert (await client.post(f"/sm/ticket/{ticket['id']}/close", headers=JSON)).status_code == 200
    spans = exporter.get_finished_spans()
    assert [(s.name, (s.attributes or {}).get("http.route")) for s in spans] == [
        ("POST /sm/ticket", "/sm/ticket"),
        ("POST /sm/ticket/{id}/close", "/sm/ticket/{id}/close"),
    ]


async def test_the_route_template_is_in_the_scope_for_middleware_that_reads_it() -> None:
    seen: list[Any] = []
    sm = StarModel([Ticket], secret_key="k", tracing=False)

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        await sm(scope, receive, send)
        seen.append(scope.get("route"))

    async with client_of(outer) as client:
        await client.get("/ticket/abc123", headers=JSON)
    assert seen[0].path_format == "/ticket/{id}" and "abc123" not in seen[0].path


# -- slow events and the loggers --------------------------------------------------------------


async def test_a_slow_event_logs_a_warning_naming_entity_event_duration_and_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sm = StarModel([Tally], secret_key="k", slow_event=0.05)
    with caplog.at_level(logging.WARNING, logger="starmodel_asgi"):
        async with client_of(sm) as client:
            await client.post("/tally/crawl?seconds=0", headers=JSON)
            assert not caplog.records  # a quick event says nothing
            await client.post("/tally/crawl?seconds=0.1", headers={**JSON, "X-Request-ID": "req-42"})
    [record] = caplog.records
    assert record.name == "starmodel_asgi.events" and record.levelno == logging.WARNING
    assert "tally.crawl took 0.1" in record.getMessage()
    assert (record.entity, record.event, record.request_id) == ("tally", "crawl", "req-42")  # type: ignore[attr-defined]
    assert 0.1 <= record.seconds < 5  # type: ignore[attr-defined]


def test_the_slow_event_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARMODEL_SLOW_EVENT", "off")
    assert StarModel([Tally], secret_key="k").settings.slow_event is None
    monkeypatch.setenv("STARMODEL_SLOW_EVENT", "0.25")
    assert StarModel([Tally], secret_key="k").settings.slow_event == 0.25
    assert StarModel([Tally], secret_key="k", slow_event=2).settings.slow_event == 2  # code wins
    monkeypatch.setenv("STARMODEL_SLOW_EVENT", "soon")
    with pytest.raises(ValueError, match="STARMODEL_SLOW_EVENT='soon'"):
        StarModel([Tally], secret_key="k")


async def test_records_logged_during_an_event_name_its_entity_event_and_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sm = StarModel([Tally], secret_key="k")
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
        async with client_of(sm) as client:
            await client.post("/tally/boom", headers={**JSON, "X-Request-ID": "abc-1"})
            await client.post("/tally/boom", headers=JSON)
    first, second = caplog.records
    assert first.name == "starmodel_asgi.events" and first.exc_info is not None
    assert (first.entity, first.event, first.request_id) == ("tally", "boom", "abc-1")  # type: ignore[attr-defined]
    made_up = second.request_id  # type: ignore[attr-defined]
    assert len(made_up) == 32 and made_up != "abc-1"  # none sent: one is made up


class Unreachable:
    """A broadcast whose every publish fails (queued: not in-process)."""

    async def publish(self, channel: str, message: str) -> None:
        raise ConnectionError("the broadcast is down")

    def subscribe(self, channel: str, *, every: bool = False) -> Any:  # pragma: no cover - not used here
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


async def test_records_of_the_apps_own_tasks_are_about_no_request(caplog: pytest.LogCaptureFixture) -> None:
    sm = StarModel([Tally], secret_key="k", broadcast=Unreachable())
    with caplog.at_level(logging.ERROR, logger="starmodel_asgi"):
        async with client_of(sm) as client:
            await client.post("/tally/add", headers={**JSON, "X-Request-ID": "starter"})
            await anyio.sleep(0.05)  # the outbox publishes (and fails) in its own task
        await sm.aclose()
    [record] = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert record.name == "starmodel_asgi.live"
    assert (record.entity, record.event, record.request_id) == (None, None, None)  # type: ignore[attr-defined]


def test_the_loggers_are_per_concern() -> None:
    from starmodel_asgi import live, outbox, unit
    from starmodel_asgi.stores import sql

    assert unit.logger.logger.name == "starmodel_asgi.events"
    assert live.logger.logger.name == outbox.logger.logger.name == "starmodel_asgi.live"
    assert sql.logger.logger.name == "starmodel_asgi.stores"
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    record.__dict__.update(unit.logger.process("m", {})[1]["extra"])  # outside a request: present, None
    assert (record.entity, record.event, record.request_id) == (None, None, None)  # type: ignore[attr-defined]


# -- viewers ----------------------------------------------------------------------------------


async def test_viewers_counts_the_live_streams_watching_an_instance() -> None:
    sm = StarModel([Room, Line, Tally], secret_key="k", stores={"memory": MemoryStore()})
    line = await sm.create(Line, text="hi")
    async with Page(sm) as page:
        assert sm.viewers(Room) == 0
        async with page.live("/room/live") as first, page.live("/room/live") as second:
            await first.wait(lambda live: live.signals.get("room", {}).get("_viewers") == 2)
            await second.wait(lambda live: live.signals.get("room", {}).get("_viewers") == 2)
            assert sm.viewers(Room) == 2  # was 0: the count was kept under the channel's name
            async with page.live(f"/line/{line.id}/live") as one, page.live("/line/live") as listing:
                await one.wait(lambda live: live.signals.get("line", {}).get("_viewers") == 1)
                await listing.wait(lambda live: live.signals.get("line", {}).get("_viewers") == 1)
                assert (sm.viewers(Line, line.id), sm.viewers(Line)) == (1, 1)
        assert sm.viewers(Room) == 0
    with pytest.raises(TypeError, match="presence"):
        sm.viewers(Tally)
    await sm.aclose()


def test_the_operations_benchmark_runs() -> None:
    """``benchmarks/bench_ops.py`` (CPU per event, metrics off and on), with tiny numbers."""
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_ops.py", "--requests", "20", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "metrics off (default)" in result.stdout and "metrics on" in result.stdout

"""Host tooling that walks the route table: Prometheus instrumentation (prometheus-fastapi-instrumentator
and starlette-exporter) on a FastAPI host that mounts the app at ``/sm`` beside a ``StaticFiles``
mount declared after it. Requests through the mount still answer, and the metrics list them."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator
from starlette_exporter import PrometheusMiddleware, handle_metrics

from starmodel_asgi import StarModel
from tests.support.entities import Counter
from tests.support.headers import DATASTAR, JSON
from tests.support.servers import read_live, run_server

pytestmark = pytest.mark.anyio


def instrumented_host(static: Path) -> FastAPI:
    """FastAPI with both exporters, the app at ``/sm`` and static files mounted after it."""
    host = FastAPI()
    host.add_middleware(PrometheusMiddleware, app_name="host", prefix="exporter", group_paths=True)
    host.add_route("/exporter-metrics", handle_metrics)
    Instrumentator(registry=CollectorRegistry()).instrument(host).expose(host, endpoint="/metrics")

    @host.get("/")
    async def home(request: Request) -> dict[str, str]:
        return {"css": str(request.url_for("static", path="site.css"))}

    host.mount("/sm", StarModel([Counter], secret_key="k"))
    host.mount("/static", StaticFiles(directory=static), name="static")
    return host


def counts(metrics: str, metric: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of ``metric`` in a Prometheus text page, keyed by the values of ``labels``."""
    found: dict[tuple[str, ...], float] = {}
    for sample, value in re.findall(rf"^{metric}\{{([^}}]*)\}} (\S+)$", metrics, re.MULTILINE):
        given = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        found[tuple(given[label] for label in labels)] = float(value)
    return found


async def test_prometheus_exporters_count_the_mounted_app_and_url_for_still_works(tmp_path: Path) -> None:
    (tmp_path / "site.css").write_text("body {}")
    host = instrumented_host(tmp_path)
    with run_server(host) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            home = await client.get("/")
            assert home.status_code == 200, home.text
            assert home.json() == {"css": f"{url}/static/site.css"}
            assert (await client.get("/static/site.css")).text == "body {}"

            answer = await client.post("/sm/counter/increment?amount=2", headers=DATASTAR)
            assert answer.status_code == 200, answer.text
            assert (await client.get("/sm/counter", headers=JSON)).json()["count"] == 2
            with anyio.fail_after(5):
                async with read_live(client, "/sm/counter/live") as live:
                    assert live.status == 200
                    assert (await live.next()).signals["counter"]["count"] == 2
                    await client.post("/sm/counter/increment", headers=DATASTAR)
                    assert (await live.next()).signals == {"counter": {"count": 3}}

            # the live stream is counted once the server has seen it end, a moment after the client left
            with anyio.fail_after(5):
                while True:
                    instrumentator = await client.get("/metrics")
                    exporter = await client.get("/exporter-metrics")
                    assert instrumentator.status_code == 200 and exporter.status_code == 200
                    handled = counts(instrumentator.text, "http_requests_total", "handler", "method", "status")
                    exported = counts(exporter.text, "exporter_requests_total", "path", "method", "status_code")
                    if handled[("/sm", "GET", "2xx")] == 2 and exported[("/sm", "GET", "200")] == 2:
                        break
                    await anyio.sleep(0.05)
    # the app has no routes to walk: both label every request under it with the mount's path,
    # "/sm" (two POSTs; two GETs: the JSON state and the live stream)
    assert handled[("/sm", "POST", "2xx")] == 2 and handled[("/sm", "GET", "2xx")] == 2
    assert handled[("/static", "GET", "2xx")] == 1
    assert exported[("/sm", "POST", "200")] == 2 and exported[("/sm", "GET", "200")] == 2
    assert not any(status.startswith("5") for (_, _, status) in exported)

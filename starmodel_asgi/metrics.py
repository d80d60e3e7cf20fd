"""Prometheus metrics of one app, in a registry of its own (or the one given): events by entity,
event and status, their duration, the live streams open in this process and how long live
messages wait to be published. Needs ``prometheus_client`` (the ``metrics`` extra)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp

#: Event durations: a counter event takes well under a millisecond, a slow one seconds.
EVENT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Broadcast lag: a healthy backend publishes within a millisecond or two.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    """``StarModel(metrics=True)`` makes one; ``sm.metrics.registry`` is what to scrape
    (``sm.metrics_app()`` serves it)."""

    def __init__(self, streams: Callable[[], Mapping[str, int]], registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self.events = Counter(
            "starmodel_events",
            "Events (and record creates and deletes) answered, by entity, event and HTTP status",
            ["entity", "event", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "starmodel_event_seconds",
            "How long events took, from routing to the answer's last byte",
            ["entity", "event"],
            buckets=EVENT_BUCKETS,
            registry=self.registry,
        )
        self.lag = Histogram(
            "starmodel_broadcast_lag_seconds",
            "How long a live message waited between its commit and the broadcast accepting it",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Streams(streams))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def event(self, entity: str, event: str, status: int, seconds: float) -> None:
        """One event answered."""
        children = self._children.get((entity, event, status))
        if children is None:
            children = self.events.labels(entity, event, str(status)), self.seconds.labels(entity, event)
            self._children[entity, event, status] = children
        children[0].inc()
        children[1].observe(seconds)

    def app(self) -> ASGIApp:
        """The registry in Prometheus' text format, as an ASGI app to mount (``/metrics``)."""
        return make_asgi_app(self.registry)


class _Streams(Collector):
    """The live streams open in this process, by entity, read when scraped."""

    def __init__(self, streams: Callable[[], Mapping[str, int]]) -> None:
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "starmodel_live_streams", "Live streams open in this process, by entity", labels=["entity"]
        )
        for entity, count in sorted(self.streams().items()):
            gauge.add_metric([entity], count)
        yield gauge

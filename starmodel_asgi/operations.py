"""What operations see of an app: each routed request's context for the logs, its route template
for tracing, its duration for metrics and the slow-event warning; and the app's operations API
(``sm.metrics_app()``, ``sm.viewers(...)``)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Send

from starmodel_asgi.endpoints import Endpoints
from starmodel_asgi.extras import require
from starmodel_asgi.incoming import Incoming
from starmodel_asgi.logs import CURRENT_REQUEST, EVENTS, RequestContext, get_logger
from starmodel_asgi.responses import outcome
from starmodel_asgi.routing import Route
from starmodel_asgi.settings import Settings
from starmodel_asgi.spec import GLOBAL_KEY
from starmodel_asgi.tracing import SpanNamer
from starmodel_asgi.wire import channel_name, list_channel

if TYPE_CHECKING:
    from starmodel_asgi.entity import Entity
    from starmodel_asgi.metrics import Metrics
    from starmodel_asgi.presence import Presence
    from starmodel_asgi.spec import EntitySpec

logger = get_logger(EVENTS)


class Observer:
    """Serves a routed request the way operations see it. What changes state (events, creates,
    deletes) is timed when metrics or the slow-event warning want it; nothing else is."""

    def __init__(
        self, endpoints: Endpoints, metrics: Metrics | None, slow_event: float | None, name_span: SpanNamer | None
    ) -> None:
        self.endpoints, self.metrics, self.slow_event, self.name_span = endpoints, metrics, slow_event, name_span
        self.timed = metrics is not None or slow_event is not None

    async def __call__(
        self, incoming: Incoming, route: Route, params: Mapping[str, str], receive: Receive, send: Send
    ) -> None:
        scope = incoming.scope
        scope["route"] = route.template
        action = route.handler_for(incoming.method)
        event = None if action is None else action.event or ("create" if action.changes_state else None)
        token = CURRENT_REQUEST.set(RequestContext(route.spec.name, event, incoming.headers))
        try:
            if self.name_span is not None:
                self.name_span(scope, route.template)
            if event is None or not self.timed:
                response = await self.endpoints.serve(incoming, route, params)
                await response(scope, receive, send)
                return
            start, status = time.perf_counter(), 500
            try:
                response = await self.endpoints.serve(incoming, route, params)
                status = outcome(response)
                await response(scope, receive, send)
            finally:
                self.finished(route.spec.name, event, status, time.perf_counter() - start)
        finally:
            CURRENT_REQUEST.reset(token)

    def finished(self, entity: str, event: str, status: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.event(entity, event, status, seconds)
        if self.slow_event is not None and seconds >= self.slow_event:
            logger.warning(
                "slow event: %s.%s took %.3f s (slow_event=%s)",
                entity,
                event,
                seconds,
                self.slow_event,
                extra={"seconds": seconds, "status": status},
            )


def observer(settings: Settings, endpoints: Endpoints) -> Observer:
    """The app's observer, with metrics if asked for (their extra checked here) and span names when
    ``tracing`` is on (by default: when ``opentelemetry`` is installed)."""
    metrics = None
    if settings.metrics is not False:
        require("prometheus_client", "metrics", "metrics=True")
        from starmodel_asgi.metrics import Metrics

        registry = None if settings.metrics is True else settings.metrics
        metrics = Metrics(endpoints.live.open_streams, registry)
        endpoints.dispatcher.outbox.waited = metrics.lag.observe
    name_span = None
    if settings.tracing:
        require("opentelemetry.trace", "tracing", "tracing=True")
    if settings.tracing or (settings.tracing is None and importlib.util.find_spec("opentelemetry") is not None):
        from starmodel_asgi.tracing import span_namer

        name_span = span_namer()
    return Observer(endpoints, metrics, settings.slow_event, name_span)


class Operations:
    """The operations side of ``StarModel``'s API."""

    specs: dict[str, EntitySpec]
    presence: Presence
    observer: Observer
    spec: Callable[[type[Entity]], EntitySpec]  # StarModel.spec

    @property
    def metrics(self) -> Metrics | None:
        """The app's Prometheus metrics (``StarModel(metrics=True)``), else ``None``."""
        return self.observer.metrics

    def metrics_app(self) -> ASGIApp:
        """The metrics in Prometheus' text format, as an ASGI app: ``host.mount("/metrics", sm.metrics_app())``."""
        if self.observer.metrics is None:
            raise RuntimeError("sm.metrics_app() needs StarModel(metrics=True) (or STARMODEL_METRICS=true)")
        return self.observer.metrics.app()

    def viewers(self, entity: type[Entity], key: str | None = None) -> int:
        """How many live streams watch an instance across all workers: a ``presence`` entity's
        ``_viewers``. ``key`` is the session, user or record id (``None``: the global instance,
        or a record entity's live list)."""
        spec = self.spec(entity)
        if not spec.presence:
            raise TypeError(f'sm.viewers: {entity.__name__} does not count its viewers (model_config "presence": True)')
        if key is None and spec.scope in ("session", "user"):
            raise TypeError(f"sm.viewers({entity.__name__}, key=...) needs the {spec.scope} id")
        if key is None:
            return self.presence.count(list_channel(spec) if spec.is_record else channel_name(spec, GLOBAL_KEY))
        return self.presence.count(channel_name(spec, key))

    def live_streams(self) -> dict[str, int]:
        """The live streams open in this process, by entity name."""
        return dict(self.observer.endpoints.live.open_streams())

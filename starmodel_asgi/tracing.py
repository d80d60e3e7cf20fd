"""Span names for OpenTelemetry: the server span a host's tracing middleware opened for a request
is renamed after the route (``POST /sm/task/{id}/toggle``), never the raw path with its record id,
and gets its ``http.route``. Needs ``opentelemetry-api`` (the ``tracing`` extra)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Scope

from starmodel_asgi.routing import RouteTemplate

#: ``name(scope, template)``: names the current span after the route.
SpanNamer = Callable[[Scope, RouteTemplate], None]


def span_namer() -> SpanNamer:
    """What renames the current span; import it only when ``opentelemetry`` is installed."""
    from opentelemetry import trace

    def name(scope: Scope, template: RouteTemplate) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            route = f"{scope.get('root_path', '')}{template.path}"
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
            # FastAPI's own tracing (FastAPI(telemetry=...)) sets http.route again as the request
            # ends, from the route it saw: the mount's "/sm/{path}" unless told this one
            telemetry = scope.get("fastapi.telemetry")
            if telemetry is not None and hasattr(telemetry, "route"):
                telemetry.route = route

    return name

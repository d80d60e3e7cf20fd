"""The route table: every URL shape of every entity, built once from the specs, resolved by dict lookups."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starmodel_asgi.errors import EventError
from starmodel_asgi.spec import EntitySpec

if TYPE_CHECKING:
    from starlette.responses import Response

    from starmodel_asgi.values import EventRequest

#: What serves one method of one route, given the call the endpoint built.
Handler = Callable[["EventRequest"], Awaitable["Response"]]


@dataclass(frozen=True)
class MethodHandler:
    """One method of a route: its handler, and whether it may change state (then the request
    must pass the cross-site check, whatever its method)."""

    handler: Handler
    changes_state: bool = False
    event: str | None = None  # the event's name, for authorize
    #: a create: a four-argument ``authorize`` is asked about the new record, by the handler
    checks_new_record: bool = False


@dataclass(frozen=True)
class RouteTemplate:
    """A route's path with its id as ``{id}`` (``/task/{id}/toggle``), relative to the mount: the
    app puts it in ``scope["route"]``, where tracing and metrics middleware read a route's
    ``path_format`` (as FastAPI's routes give it), so spans name the route, never a record's id."""

    path: str

    @property
    def path_format(self) -> str:
        return self.path


@dataclass
class Route:
    spec: EntitySpec
    template: RouteTemplate
    handlers: dict[str, MethodHandler] = field(default_factory=dict)

    @property
    def allow(self) -> str:
        return ", ".join(self.handlers)

    def handler_for(self, method: str) -> MethodHandler | None:
        return self.handlers.get("GET" if method == "HEAD" else method)


class RouteTable:
    """Paths relative to the mount: ``/counter``, ``/counter/live``, ``/counter/increment`` are
    looked up whole; for record entities, the id segment is a wildcard (``/task/*``,
    ``/task/*/live``, ``/task/*/toggle``), and its value becomes the ``id`` path parameter."""

    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._with_id: dict[tuple[str, str], Route] = {}

    def add(self, spec: EntitySpec, tail: str, method: str, handler: MethodHandler, *, with_id: bool = False) -> None:
        """Serve ``method`` on ``/{spec.name}[/{id}]/{tail}`` (``tail`` may be empty)."""
        path = "/" + "/".join(filter(None, (spec.name, "{id}" if with_id else "", tail)))
        if with_id:
            route = self._with_id.setdefault((spec.name, tail), Route(spec, RouteTemplate(path)))
        else:
            route = self._exact.setdefault(path, Route(spec, RouteTemplate(path)))
        if method in route.handlers:
            raise ValueError(f"{spec.entity.__name__}: two handlers for {method} /{spec.name}/{tail}")
        route.handlers[method] = handler

    def resolve(self, path: str) -> tuple[Route, Mapping[str, str]] | None:
        """The route for a path and its parameters, or ``None``."""
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        parts = path.split("/")  # "", name, id[, tail]
        if len(parts) == 3:
            route = self._with_id.get((parts[1], ""))
        elif len(parts) == 4:
            route = self._with_id.get((parts[1], parts[3]))
        return (route, {"id": parts[2]}) if route is not None and parts[2] else None


def route_path(scope: Mapping[str, object]) -> str:
    """The path below the mount. Starlette's ``Mount`` keeps the full ``path`` and extends
    ``root_path``; other hosts strip the prefix. A trailing slash is ignored (Litestar adds one)."""
    path = str(scope["path"])
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


def not_found(specs: Mapping[str, EntitySpec], path: str) -> EventError:
    """A 404 naming what the path lacks: the entity, or its event."""
    name, _, rest = path.strip("/").partition("/")
    spec = specs.get(name)
    if spec is None:
        return EventError(404, f"No entity {name!r}")
    if spec.is_record and rest.count("/") < 2:
        return EventError(404, f"{name} has no event {rest.partition('/')[2]!r}", name)
    return EventError(404, f"{name} has no event {rest!r}" if "/" not in rest else "Not found", name)

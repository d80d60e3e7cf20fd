"""The route table: every URL shape of every entity, built once from the specs, resolved by dict lookups."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from starmodel_asgi.entity import Entity
from starmodel_asgi.errors import EventError
from starmodel_asgi.spec import EntitySpec

logger = logging.getLogger("starmodel_asgi")

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

    def __iter__(self) -> Iterator[Route]:
        """Every route: the exact paths, then those with an id, each in the order first added."""
        yield from self._exact.values()
        yield from self._with_id.values()

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
    name = path.strip("/").partition("/")[0]
    spec = specs.get(name)
    if spec is None:
        return EventError(404, f"No entity {name!r}")
    event = missing_event(spec, path)
    return EventError(404, "Not found" if event is None else f"{name} has no event {event!r}", name)


def missing_event(spec: EntitySpec, path: str) -> str | None:
    """The event a path below ``spec``'s entity names, if it names one (``/task/t1/toggle``)."""
    rest = path.strip("/").partition("/")[2]
    if spec.is_record and rest.count("/") < 2:
        return rest.partition("/")[2]
    return None if "/" in rest else rest


#: Distinct mount points warned about, at most: ``root_path`` may come from a proxy's header.
MOUNTS_NAMED = 8


class Wiring:
    """Wiring mistakes seen in requests, each logged once with its fix: a mount point that is not
    ``base_path`` (the actions the app builds then post where the host does not route them), and an
    action posted to a method that lacks ``@event``."""

    def __init__(self, base_path: str) -> None:
        self.base_path = base_path
        self.mounts: set[str] = {base_path}
        self.methods: set[tuple[type, str]] = set()

    def check_mount(self, scope: Mapping[str, object]) -> None:
        given = scope.get("root_path")
        if given and given in self.mounts:  # mounted where it was before: the usual case, told quickly
            return
        root = mount_point(scope)
        if root is None or root in self.mounts or len(self.mounts) > MOUNTS_NAMED:
            return
        self.mounts.add(root)
        logger.warning("%s", mount_advice(self.base_path, root))

    def not_found(self, specs: Mapping[str, EntitySpec], path: str) -> EventError:
        """``not_found``, and a warning when the missing event is a method without ``@event``."""
        error = not_found(specs, path)
        spec = specs.get(error.entity or "")
        event = None if spec is None else missing_event(spec, path)
        if spec is not None and event and (spec.entity, event) not in self.methods and _plain_method(spec, event):
            self.methods.add((spec.entity, event))
            who = spec.entity.__name__
            logger.warning(
                "%s.%s is called as an action but is not an event: add @event above def %s", who, event, event
            )
        return error


def mount_point(scope: Mapping[str, object]) -> str | None:
    """Where the host mounted the app: ``root_path``, else what the host cut from the front of the
    path the client sent (Litestar strips its mount without setting ``root_path``); ``None`` when
    that cannot be told."""
    root = str(scope.get("root_path") or "")
    raw = scope.get("raw_path")
    if not root and isinstance(raw, bytes):
        if len(raw) == len(str(scope["path"])):  # nothing cut from the front: served at the root
            return ""
        sent, tail = unquote(raw.decode("latin-1")).rstrip("/"), str(scope["path"]).rstrip("/")
        if not sent.endswith(tail):
            return None
        root = sent[: len(sent) - len(tail)]
    return root.rstrip("/")


def mount_advice(base_path: str, root: str) -> str:
    """What to do when the app, built for ``base_path``, is mounted at ``root``."""
    wanted = base_path or "/"
    if root:
        return (
            f'StarModel(base_path="{base_path}") is mounted at "{root}": the actions and live URLs it builds '
            f'start with {wanted}, where the host does not route to it: mount it at "{wanted}" '
            f'or pass StarModel(base_path="{root}")'
        )
    return (
        f'StarModel(base_path="{base_path}") is served at the root, not mounted: the actions and live URLs it '
        f'builds start with {wanted}, where nothing routes to it: mount it at "{wanted}" '
        f'(app.mount("{wanted}", sm)), pass StarModel(base_path=""), or, behind a proxy that strips '
        f"{wanted}, tell the server its root path (uvicorn --root-path {wanted})"
    )


def _plain_method(spec: EntitySpec, name: str) -> bool:
    """``name`` is a public method the entity defines without ``@event`` (not one of Entity's own)."""
    method = getattr(spec.entity, name, None)
    return not name.startswith("_") and inspect.isfunction(method) and not hasattr(Entity, name)

"""Mount a StarModel app in Litestar.

    from starmodel_asgi.contrib.litestar import mount
    app = Litestar(route_handlers=[mount(sm)], lifespan=[sm.lifespan])

Litestar's ASGI mount handler strips the mount path and appends a ``/`` to what remains
(``/sm/counter/increment`` reaches the app as ``/counter/increment/``); ``mount`` removes it again.
"""

from __future__ import annotations

from typing import Any

from litestar.handlers import ASGIRouteHandler, asgi
from litestar.types import Receive, Scope, Send

from starmodel_asgi.app import StarModel


def mount(sm: StarModel, path: str | None = None, **kwargs: Any) -> ASGIRouteHandler:
    """An ``@asgi(path, is_mount=True)`` route handler serving ``sm`` (default path: ``sm.base_path``).

    Extra keyword arguments go to ``litestar.asgi`` (``guards``, ``name``, ``opt``...).
    """

    async def starmodel(scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["path"]
        if len(route) > 1 and route.endswith("/"):
            scope["path"] = route[:-1]
        await sm(scope, receive, send)  # type: ignore[arg-type]

    kwargs.setdefault("name", "starmodel")
    handler: ASGIRouteHandler = asgi(path or sm.base_path or "/", is_mount=True, copy_scope=True, **kwargs)(starmodel)
    return handler

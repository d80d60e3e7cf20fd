"""Mount a StarModel app in Litestar.

    from starmodel_asgi.contrib.litestar import mount
    app = Litestar(route_handlers=[mount(sm)], lifespan=[sm.lifespan])

``mount(sm)`` is Litestar's own ``asgi(sm.base_path, is_mount=True, copy_scope=True)(sm)``; Litestar hands
the app ``/counter/increment/`` (a trailing ``/`` added), which StarModel accepts.
"""

from __future__ import annotations

from typing import Any

from litestar.handlers import ASGIRouteHandler, asgi

from starmodel_asgi.app import StarModel


def mount(sm: StarModel, path: str | None = None, **kwargs: Any) -> ASGIRouteHandler:
    """An ``@asgi(path, is_mount=True)`` route handler serving ``sm`` (default path: ``sm.base_path``).

    Extra keyword arguments go to ``litestar.asgi`` (``guards``, ``name``, ``opt``...).
    """
    kwargs.setdefault("name", "starmodel")
    kwargs.setdefault("copy_scope", True)
    handler: ASGIRouteHandler = asgi(path or sm.base_path or "/", is_mount=True, **kwargs)(sm)
    return handler

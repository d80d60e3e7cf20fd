"""Serve a StarModel app from a Django project's ASGI application.

    # asgi.py
    from django.core.asgi import get_asgi_application
    from starmodel_asgi.contrib.django import django_user, mount

    sm = StarModel(entities=[...], base_path="/sm", get_user=django_user)
    application = mount(get_asgi_application(), sm)

``mount`` sends requests under the prefix to ``sm`` and the rest to Django, and answers the ASGI
lifespan for Django (which has none), so the server's shutdown closes what ``sm`` opened.

Django's authentication runs in its request middleware, which ``sm`` never passes through, so the
ASGI scope carries no user. ``django_user`` is a ``get_user`` hook that reads Django's session
cookie and asks ``django.contrib.auth`` for the user (in a thread, as the ORM requires); it only
runs for ``scope="user"`` entities, and gives the user's primary key.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from starmodel_asgi.app import StarModel


def _user_id(session_key: str) -> str | None:
    engine = import_module(settings.SESSION_ENGINE)
    request = HttpRequest()
    request.session = engine.SessionStore(session_key)
    user = auth.get_user(request)
    return str(user.pk) if user.is_authenticated else None


async def django_user(request: Request) -> str | None:
    """``StarModel(get_user=django_user)``: the primary key of the Django user logged in with this
    request's session cookie, or ``None``."""
    session_key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    return await sync_to_async(_user_id)(session_key)


class DjangoMount:
    """Routes ``prefix`` and everything under it to ``sm`` (the full path kept, ``root_path``
    extended, as Starlette's ``Mount`` does), the rest to ``django_app``."""

    def __init__(self, django_app: ASGIApp, sm: StarModel, prefix: str | None = None) -> None:
        self.django_app = django_app
        self.sm = sm
        prefix = sm.base_path if prefix is None else prefix
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.sm(scope, receive, send)
            return
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        full = not root_path or path.startswith(root_path + "/")  # the path includes root_path
        route = path[len(root_path) :] if root_path and full else path
        if scope["type"] == "http" and (route == self.prefix or route.startswith(self.prefix + "/")):
            if not full:  # a server that strips root_path from path: strip our prefix too
                path = route[len(self.prefix) :]
            await self.sm({**scope, "path": path, "root_path": root_path + self.prefix}, receive, send)
            return
        await self.django_app(scope, receive, send)


def mount(django_app: Any, sm: StarModel, prefix: str | None = None) -> DjangoMount:
    """``application = mount(get_asgi_application(), sm)``: ``sm`` at ``prefix`` (default:
    ``sm.base_path``), Django everywhere else."""
    return DjangoMount(django_app, sm, prefix)

"""Ways to serve a StarModel app: bare, or mounted under a host framework at a prefix.

Each host takes the app and returns ``(asgi_app, prefix)``; the contract suite runs against all.
Host frameworks are imported inside each function, so one missing framework fails its own tests only.
Every host also runs the StarModel's shutdown from its own lifespan (see ``test_hosts.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from starmodel_asgi import StarModel

Host = Callable[[StarModel], tuple[Any, str]]
DJANGO_SECRET = "django-test-secret-key-not-for-production"


def bare(sm: StarModel) -> tuple[Any, str]:
    return sm, ""


class StripPrefix:
    """The other ``root_path`` convention: the prefix is cut from ``path`` and ``root_path`` says
    where it went (what Starlette did before 0.33, and what some servers and proxies still do)."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(self.prefix + "/"):
            raise AssertionError(f"{path} is not under {self.prefix}")
        scope = {**scope, "path": path[len(self.prefix) :], "root_path": scope.get("root_path", "") + self.prefix}
        await self.app(scope, receive, send)


def stripped(sm: StarModel) -> tuple[Any, str]:
    return StripPrefix(sm, "/sm"), "/sm"


def starlette(sm: StarModel) -> tuple[Any, str]:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    home = Route("/", lambda request: PlainTextResponse("host home"))
    return Starlette(routes=[home, Mount("/sm", app=sm)], lifespan=sm.lifespan), "/sm"


def starlette_nested(sm: StarModel) -> tuple[Any, str]:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[Mount("/apps", routes=[Mount("/sm", app=sm)])], lifespan=sm.lifespan), "/apps/sm"


def fastapi(sm: StarModel) -> tuple[Any, str]:
    from fastapi import FastAPI

    app = FastAPI(lifespan=sm.lifespan)

    @app.get("/")
    def home() -> dict[str, str]:
        return {"host": "fastapi"}

    app.mount("/sm", sm)
    return app, "/sm"


def fasthtml(sm: StarModel) -> tuple[Any, str]:
    from fasthtml.common import FastHTML, P

    app = FastHTML(secret_key="fasthtml-test-secret", on_shutdown=[sm.aclose])
    app.route("/")(lambda: P("host home"))
    app.mount("/sm", sm)
    return app, "/sm"


def litestar(sm: StarModel) -> tuple[Any, str]:
    from litestar import Litestar, asgi, get

    @get("/", sync_to_thread=False)
    def home() -> str:
        return "host home"

    # Litestar's own mount handler, no glue; logging_config=None: Litestar's default logging setup
    # would reconfigure the root logger for every test
    mounted = asgi("/sm", is_mount=True, copy_scope=True)(sm)
    app = Litestar(route_handlers=[home, mounted], lifespan=[sm.lifespan], logging_config=None)
    return app, "/sm"


def configure_django() -> None:
    """Django settings for the tests (once per process): auth and sessions in a SQLite file."""
    from django.conf import settings

    if settings.configured:
        return
    import django
    from django.core.management import call_command

    settings.configure(
        SECRET_KEY=DJANGO_SECRET,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.support.django_urls",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(Path(tempfile.mkdtemp(prefix="starmodel-django-")) / "db.sqlite3"),
            }
        },
        USE_TZ=True,
    )
    django.setup()
    # the ORM refuses to run in a thread with an event loop; tests build hosts inside one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(call_command, "migrate", verbosity=0).result()


def django(sm: StarModel) -> tuple[Any, str]:
    configure_django()
    from django.core.asgi import get_asgi_application

    from starmodel_asgi.contrib.django import mount

    return mount(get_asgi_application(), sm, "/sm"), "/sm"


#: hosts that put their own session in the ASGI scope (Starlette's SessionMiddleware): the app keeps
#: its session id there instead of issuing its own ``sm_session`` cookie
HOST_SESSIONS = frozenset({"fasthtml"})

HOSTS: dict[str, Host] = {
    "bare": bare,
    "stripped": stripped,
    "starlette": starlette,
    "starlette_nested": starlette_nested,
    "fastapi": fastapi,
    "fasthtml": fasthtml,
    "litestar": litestar,
    "django": django,
}

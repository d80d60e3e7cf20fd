"""Ways to serve a StarModel app: bare, or mounted under a host framework at a prefix.

Each host takes the app and returns ``(asgi_app, prefix)``; the contract suite runs against all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starmodel_asgi import StarModel

Host = Callable[[StarModel], tuple[Any, str]]


def bare(sm: StarModel) -> tuple[Any, str]:
    return sm, ""


HOSTS: dict[str, Host] = {"bare": bare}

"""Optional dependencies: each backend names the extra that installs it, when the app is built."""

from __future__ import annotations

import importlib


class MissingExtra(ImportError):
    """A setting needs an optional dependency that is not installed."""


def require(module: str, extra: str, setting: str) -> None:
    """Raises ``MissingExtra`` naming the ``pip install`` that provides ``module``."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f'{setting} needs pip install "starmodel-asgi[{extra}]" (could not import {module})'
        ) from exc

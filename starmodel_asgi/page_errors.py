"""Errors shown on the page: ``_error`` (a sentence) and ``_errors`` (a message per parameter or
field) in the entity's namespace of signals, blank when there is nothing to complain about; and
the ``sm_errors`` cookie naming the entities whose errors a browser was last sent, so their next
success clears them (Datastar never sends ``_``-signals back: the page cannot say it shows one)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.responses import Response

from starmodel_asgi.errors import EventError
from starmodel_asgi.incoming import Incoming

ERRORS_COOKIE = "sm_errors"


def no_errors(keys: Iterable[str]) -> dict[str, Any]:
    """The error signals of a page with nothing to complain about: every name blank."""
    return {"_error": "", "_errors": dict.fromkeys(sorted(keys), "")}


def error_signals(error: EventError) -> dict[str, Any]:
    """The error signals of a failure: its sentence, and a message per name (the others blank)."""
    return {"_error": error.message, "_errors": {**error.blank, **error.errors}}


def errors_shown(incoming: Incoming) -> frozenset[str]:
    """The entities whose errors the caller's page was last sent."""
    if "cookie" not in incoming.headers:
        return frozenset()
    value = incoming.cookies.get(ERRORS_COOKIE)
    return frozenset(value.split(".")) if value else frozenset()


def remember_errors(
    incoming: Incoming, response: Response, entity: str, shown: frozenset[str], failed: EventError | None
) -> None:
    """Adds ``entity`` to the errors cookie when a page was sent its error, drops it on success."""
    named = failed is not None and failed.entity == entity and incoming.is_datastar
    if named == (entity in shown):
        return
    names = shown | {entity} if named else shown - {entity}
    path = incoming.scope.get("root_path") or "/"  # where the app is mounted
    if names:
        response.set_cookie(ERRORS_COOKIE, ".".join(sorted(names)), path=path, httponly=True, samesite="lax")
    else:
        response.delete_cookie(ERRORS_COOKIE, path=path, httponly=True, samesite="lax")

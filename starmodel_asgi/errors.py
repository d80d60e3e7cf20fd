"""Failures the client is told about: ``EventError`` and the kinds Python callers can catch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starmodel_asgi.logs import EVENTS, get_logger

logger = get_logger(EVENTS)


@dataclass
class EventError(Exception):
    """A failure the client is told about: status, a message, and per-parameter details."""

    status: int
    message: str
    entity: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    #: the saved public state, when the caller was already sent steps that the failure undid
    reset: dict[str, Any] | None = None
    #: every name the entity's errors may use, blank: a page's older messages are cleared
    blank: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


class NotFound(EventError, LookupError):
    """A missing record: ``404`` over HTTP, a ``LookupError`` to Python callers."""


class Conflict(EventError, ValueError):
    """A record that already exists: ``409`` over HTTP, a ``ValueError`` to Python callers."""


class Invalid(EventError, ValueError):
    """Bad values: ``422`` over HTTP with a sentence per value, a ``ValueError`` to Python callers."""


def invalid(entity: str, errors: dict[str, str]) -> Invalid:
    """A 422 naming each bad value."""
    summary = "; ".join(f"{k}: {v}" for k, v in errors.items())
    return Invalid(422, f"Invalid input: {summary}", entity, errors)


def internal_error(exc: BaseException, doing: str, entity: str | None = None) -> EventError:
    """What the client is told of an exception that is not an ``EventError``: a 500 naming what
    failed, never the traceback, which goes to the log. ``EventError``s pass through."""
    if isinstance(exc, EventError):
        return exc
    logger.error("%s failed", doing, exc_info=exc)
    return EventError(500, f"Internal error in {doing}", entity)

"""The loggers, one per concern (``starmodel_asgi.events``, ``.live``, ``.stores``, and
``starmodel_asgi`` for the app itself), and the request each record is about: every record they
log carries ``entity``, ``event`` and ``request_id`` (``None`` outside a request), so a formatter
may name them (``%(request_id)s``) and a JSON handler finds them on the record."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Coroutine, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

EVENTS = "starmodel_asgi.events"
LIVE = "starmodel_asgi.live"
STORES = "starmodel_asgi.stores"
APP = "starmodel_asgi"


class RequestContext:
    """The request being served in this context: what its records say. The request id is the
    ``X-Request-ID`` the caller sent (when it is short, printable text), else one made up when a
    record first asks for it."""

    __slots__ = ("_request_id", "entity", "event", "headers")

    def __init__(self, entity: str | None, event: str | None, headers: Mapping[str, str]) -> None:
        self.entity, self.event, self.headers = entity, event, headers
        self._request_id: str | None = None

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            given = self.headers.get("x-request-id", "")
            self._request_id = given if 0 < len(given) <= 200 and given.isprintable() else uuid.uuid4().hex
        return self._request_id


#: The request this context serves (set by the app for each request it routes).
CURRENT_REQUEST: ContextVar[RequestContext | None] = ContextVar("starmodel_request", default=None)


def request_fields() -> dict[str, Any]:
    """What the records of the current context say of its request."""
    context = CURRENT_REQUEST.get()
    if context is None:
        return {"entity": None, "event": None, "request_id": None}
    return {"entity": context.entity, "event": context.event, "request_id": context.request_id}


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the current request's fields (``extra`` given to a call wins)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**request_fields(), **(kwargs.get("extra") or {})}
        return msg, kwargs


def get_logger(name: str) -> ContextLogger:
    """``get_logger(EVENTS)``: the concern's logger."""
    return ContextLogger(logging.getLogger(name))


def own_task(coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """A task of the app's own (a listener, the outbox, a heartbeat), in a context of its own:
    the records it logs are not about the request that happened to start it."""
    return asyncio.get_running_loop().create_task(coroutine, name=name, context=contextvars.Context())

"""Answer formats, chosen per request: Datastar SSE, JSON, or any ``Formatter`` a user adds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from datastar_py.consts import ElementPatchMode
from datastar_py.sse import SSE_HEADERS
from datastar_py.sse import ServerSentEventGenerator as SSE

from starmodel_asgi.errors import EventError
from starmodel_asgi.guards import guard_element
from starmodel_asgi.page_errors import error_signals
from starmodel_asgi.values import EventRequest, Update

ERROR_NAMESPACE = "sm"


@runtime_checkable
class Formatter(Protocol):
    """Turns updates and errors into a response body.

    The first formatter in ``StarModel(formatters=[...])`` whose ``matches`` says yes answers the
    request. A formatter that ``streams`` gets each update as it happens (``format`` with one
    update); one that does not gets them all at the end.
    """

    media_type: str
    streams: bool
    headers: dict[str, str]

    def matches(self, request: EventRequest) -> bool:
        """Whether this formatter answers ``request`` (e.g. by its headers)."""

    def format(self, updates: Sequence[Update]) -> str:
        """The response body for ``updates``: each one as it happens if ``streams``, else all at the end."""

    def format_error(self, error: EventError) -> str:
        """The response body for a failed request; the status code is ``error.status``."""


class DatastarFormatter:
    """``datastar-patch-signals`` with the changed fields, ``datastar-patch-elements`` per HTML."""

    media_type = "text/event-stream"
    streams = True
    headers = {k: v for k, v in SSE_HEADERS.items() if k != "Content-Type"}

    def matches(self, request: EventRequest) -> bool:
        """Requests from Datastar's client (``Datastar-Request: true``)."""
        return request.is_datastar

    def format(self, updates: Sequence[Update]) -> str:
        """Per update: the changed signals (the fields the page types into only where it did not
        type on since, see ``guards.py``), its elements, the signals it clears, and its redirect."""
        events: list[str] = []
        for update in updates:
            changed = update.changed
            if update.guarded:
                changed = {k: v for k, v in changed.items() if k not in update.guarded}
            if changed:
                events.append(SSE.patch_signals({update.entity: changed}))
            if update.guarded:
                events.append(guarded(update))
            for el in update.elements:
                mode = ElementPatchMode(el.mode) if el.mode else None
                events.append(SSE.patch_elements(el.html, el.selector, mode, el.use_view_transition))
            if update.cleared:
                events.append(SSE.patch_signals({update.entity: update.cleared}))
            if update.redirect is not None:
                events.append(SSE.redirect(script_string(update.redirect)))
        return "".join(events)

    def format_error(self, error: EventError) -> str:
        """Errors land in the entity's namespace as ``_error`` (a sentence) and ``_errors``
        (per parameter); leading underscores keep Datastar from sending them back."""
        namespace = error.entity or ERROR_NAMESPACE
        return SSE.patch_signals({namespace: error_signals(error)})


def guarded(update: Update) -> str:
    """The patch that sets the fields the page types into, where it did not type on since."""
    fields = {k: (sent, update.changed[k]) for k, sent in update.guarded.items() if k in update.changed}
    return SSE.patch_elements(guard_element(update.entity, fields, update.rebase), "body", ElementPatchMode.APPEND)


def script_string(text: str) -> str:
    """``text`` made safe inside a single-quoted string of an inline ``<script>``."""
    return json.dumps(text)[1:-1].replace("'", "\\u0027").replace("<", "\\u003c")


class JSONFormatter:
    """The instance's public state as a JSON object; errors as ``{"error": ..., "errors": {...}}``."""

    media_type = "application/json"
    streams = False
    headers: dict[str, str] = {}

    def matches(self, request: EventRequest) -> bool:
        """Every request: JSON is the fallback format."""
        return True

    def format(self, updates: Sequence[Update]) -> str:
        """The public state after the last update, as a JSON object (``{}`` if there is none)."""
        return json.dumps(updates[-1].state if updates else {})

    def format_error(self, error: EventError) -> str:
        """``{"error": message, "errors": {parameter: message}, "status": status}``."""
        return json.dumps({"error": error.message, "errors": error.errors, "status": error.status})


def default_formatters() -> list[Formatter]:
    """What ``StarModel(formatters=None)`` uses: Datastar SSE for Datastar requests, else JSON.
    Put your own before them: ``formatters=[HtmxFormatter(), *default_formatters()]``."""
    return [DatastarFormatter(), JSONFormatter()]

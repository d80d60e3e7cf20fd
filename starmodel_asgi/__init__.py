"""Live, server-side state for Datastar pages: entities, events, one ASGI app."""

from starmodel_asgi.app import SessionCookieMiddleware, StarModel
from starmodel_asgi.entity import ClientWritable, Entity, EntityConfig, ServerOnly, SignalRef
from starmodel_asgi.events import event
from starmodel_asgi.formatters import DatastarFormatter, Formatter, JSONFormatter
from starmodel_asgi.http import Element, EventError, EventRequest, Signals, Update

__all__ = [
    "ClientWritable",
    "DatastarFormatter",
    "Element",
    "Entity",
    "EntityConfig",
    "EventError",
    "EventRequest",
    "Formatter",
    "JSONFormatter",
    "ServerOnly",
    "SessionCookieMiddleware",
    "SignalRef",
    "Signals",
    "StarModel",
    "Update",
    "event",
]

"""Live, server-side state for Datastar pages: entities, events, one ASGI app."""

from importlib.metadata import PackageNotFoundError, version

from starlette.datastructures import UploadFile

from starmodel_asgi.app import SessionCookieMiddleware, StarModel
from starmodel_asgi.changes import Change
from starmodel_asgi.depends import Depends
from starmodel_asgi.entity import ClientWritable, Entity, EntityConfig, ServerOnly, SignalRef
from starmodel_asgi.errors import EventError
from starmodel_asgi.events import Action, event
from starmodel_asgi.formatters import DatastarFormatter, Formatter, JSONFormatter
from starmodel_asgi.messages import Message
from starmodel_asgi.pages import SafeHTML, datastar_script
from starmodel_asgi.values import Element, EventRequest, Redirect, Signals, Update

try:
    __version__ = version("starmodel-asgi")
    """The installed distribution's version (pyproject.toml's ``version``)."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "Action",
    "Change",
    "ClientWritable",
    "DatastarFormatter",
    "Depends",
    "Element",
    "Entity",
    "EntityConfig",
    "EventError",
    "EventRequest",
    "Formatter",
    "JSONFormatter",
    "Message",
    "Redirect",
    "SafeHTML",
    "ServerOnly",
    "SessionCookieMiddleware",
    "SignalRef",
    "Signals",
    "StarModel",
    "Update",
    "UploadFile",
    "datastar_script",
    "event",
]

"""Entity: the base class users subclass, its settings, signal references and page helpers."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar, Literal, cast
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from starmodel_asgi.events import EventDescriptor, event_table

Scope = Literal["session", "user", "global", "record"]
SCOPES: tuple[str, ...] = ("session", "user", "global", "record")
STORES: tuple[str, ...] = ("memory", "sql", "redis", "client")
GLOBAL_KEY = "global"


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``Annotated[str, ClientWritable]``: the browser may set this field through its signals.
ClientWritable = _Marker("ClientWritable")
#: ``Annotated[str, ServerOnly]``: stored, never sent to the browser nor accepted from it.
ServerOnly = _Marker("ServerOnly")


def snake_case(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class SignalRef(str):
    """``"$counter.count"``; ``.path`` is ``"counter.count"`` for ``data-bind``."""

    __slots__ = ()

    @property
    def path(self) -> str:
        return self[1:]


class _Signals:
    """``Counter.signal.count`` -> ``"$counter.count"``."""

    def __get__(self, obj: Any, owner: type[Entity]) -> _BoundSignals:
        return _BoundSignals(owner)


class _BoundSignals:
    def __init__(self, entity: type[Entity]) -> None:
        self._entity = entity

    def __getattr__(self, field: str) -> SignalRef:
        if field.startswith("_") or field not in self._entity.public_fields():
            raise AttributeError(f"{self._entity.__name__} has no public field {field!r}")
        return SignalRef(f"${self._entity.entity_name()}.{field}")

    def __call__(self, field: str) -> SignalRef:
        return getattr(self, field)


class EntityConfig(ConfigDict, total=False):
    """``model_config`` keys of an entity, besides Pydantic's own."""

    scope: Scope
    store: Literal["memory", "sql", "redis", "client"]
    name: str
    ttl: float
    client_writable: Iterable[str]


class Entity(BaseModel):
    """A piece of server-side state whose ``@event`` methods are HTTP endpoints.

    Settings are plain keys of ``model_config``: ``scope`` (``"session"``, ``"user"``,
    ``"global"``, ``"record"``), ``store`` (``"memory"``, ``"sql"``, ``"redis"``, ``"client"``),
    ``name`` (URL segment and signal namespace), ``ttl`` (seconds an idle session or user
    instance is kept), ``client_writable`` (field names the browser may set).
    """

    model_config: ClassVar[EntityConfig] = EntityConfig(
        ignored_types=(EventDescriptor, _Signals),
        validate_assignment=True,
        allow_inf_nan=False,  # NaN and Infinity are not JSON: no page could read them
    )

    id: str = ""

    signal: ClassVar[_Signals] = _Signals()
    #: base path of the StarModel app this entity is registered with, for action builders
    __starmodel_base__: ClassVar[str] = "/sm"

    @classmethod
    def entity_name(cls) -> str:
        return _name(cls)

    @classmethod
    def entity_scope(cls) -> str:
        scope = str(cls.model_config.get("scope", "session"))
        if scope not in SCOPES:
            raise ValueError(f"{cls.__name__}: scope must be one of {SCOPES}, not {scope!r}")
        return scope

    @classmethod
    def entity_store(cls) -> str:
        return str(cls.model_config.get("store", "memory"))

    @classmethod
    def entity_ttl(cls) -> float | None:
        ttl = cls.model_config.get("ttl")
        return None if ttl is None else float(ttl)

    @classmethod
    def events(cls) -> dict[str, EventDescriptor]:
        return _events(cls)

    @classmethod
    def server_only_fields(cls) -> frozenset[str]:
        return _marked(cls, ServerOnly)

    @classmethod
    def public_fields(cls) -> frozenset[str]:
        return _public(cls)

    @classmethod
    def client_writable_fields(cls) -> frozenset[str]:
        return _writable(cls)

    def public_state(self) -> dict[str, Any]:
        """The state the browser sees: signals under the entity's namespace, and JSON answers."""
        return self.model_dump(mode="json", include=cast(set[str], self.public_fields()))

    def stored_state(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def render(self) -> Any:
        """Override to return HTML (a ``str`` or anything with ``__html__``) pushed with live updates."""
        return None

    @classmethod
    def signals_json(cls, instance: Entity | None = None) -> str:
        state = (instance or cls()).public_state()
        return json.dumps({cls.entity_name(): state}, separators=(",", ":"))

    @classmethod
    def holder(cls, instance: Entity | None = None, *, sync: Literal["get", "live", None] = "get") -> str:
        """A ``<div>`` declaring the entity's signals, so a page starts in sync.

        ``sync="get"`` fetches the caller's current state on load, ``"live"`` keeps a live stream
        open, ``None`` only declares the given (or default) state.
        """
        attrs = f"data-signals='{html.escape(cls.signals_json(instance), quote=True)}'"
        if sync is not None:
            base = f"{cls.__starmodel_base__}/{cls.entity_name()}"
            if cls.entity_scope() == "record":
                if instance is None:
                    raise TypeError(f"{cls.__name__} is a record entity: pass the instance to sync")
                base += f"/{quote(instance.id, safe='')}"
            url = base if sync == "get" else f"{base}/live"
            attrs += f" data-init=\"@get('{url}')\""
        return f'<div id="{cls.entity_name()}-signals" {attrs} hidden></div>'


# Per-class facts, computed once: they are read on every request.


@cache
def _name(entity: type[Entity]) -> str:
    return str(entity.model_config.get("name") or snake_case(entity.__name__))


@cache
def _events(entity: type[Entity]) -> dict[str, EventDescriptor]:
    return event_table(entity)


@cache
def _marked(entity: type[Entity], marker: _Marker) -> frozenset[str]:
    return frozenset(name for name, f in entity.model_fields.items() if marker in f.metadata)


@cache
def _public(entity: type[Entity]) -> frozenset[str]:
    hidden = set(_marked(entity, ServerOnly))
    if entity.entity_scope() != "record":
        hidden.add("id")
    return frozenset(entity.model_fields) - hidden


@cache
def _writable(entity: type[Entity]) -> frozenset[str]:
    listed = set(entity.model_config.get("client_writable", ()))
    unknown = listed - set(entity.model_fields)
    if unknown:
        raise ValueError(f"{entity.__name__}: client_writable names unknown fields {unknown}")
    return frozenset((listed | _marked(entity, ClientWritable)) - _marked(entity, ServerOnly) - {"id"})

"""The frozen facts of one entity: read from its class once, checked, and held by the app serving it."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType, UnionType
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from starmodel_asgi.events import EventDescriptor, event_table
from starmodel_asgi.page_errors import no_errors
from starmodel_asgi.query import Query, build_query, filterable

Scope = Literal["session", "user", "global", "record"]
StoreKind = Literal["memory", "sql", "redis", "client"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
STORES: tuple[StoreKind, ...] = get_args(StoreKind)
#: The key of the one instance of a ``scope="global"`` entity.
GLOBAL_KEY = "global"
DEFAULT_BASE_PATH = "/sm"


class Marker:
    """A field marker for ``Annotated[...]``: ``ClientWritable`` or ``ServerOnly``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


ClientWritable = Marker("ClientWritable")
"""``Annotated[str, ClientWritable]``: the browser may set this field through its signals (``data-bind``);
other fields change only through event parameters. ``model_config = {"client_writable": [...]}`` says the same."""
ServerOnly = Marker("ServerOnly")
"""``Annotated[str, ServerOnly]``: stored, never sent to the browser nor accepted from it, and left out of
``repr()`` and ``str()``."""


class EntityConfig(ConfigDict, total=False):
    """``model_config`` keys of an entity, besides Pydantic's own."""

    scope: Scope
    store: StoreKind
    name: str
    ttl: float
    client_writable: Iterable[str]
    presence: bool
    indexes: Iterable[str]
    aggregates: Mapping[str, Mapping[str, Any]]


def snake_case(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


@dataclass(frozen=True, eq=False)
class EntitySpec:
    """What an app needs to serve one entity class; ``base_path`` is the serving app's."""

    entity: type[BaseModel]
    name: str
    scope: Scope
    store: StoreKind
    ttl: float | None
    events: Mapping[str, EventDescriptor]
    fields: frozenset[str]
    public: frozenset[str]
    server_only: frozenset[str]
    writable: frozenset[str]
    #: ``@computed_field``s: sent with the public state, never stored nor accepted
    computed: frozenset[str] = frozenset()
    #: the names an error can name (fields and event parameters), for clearing them
    error_keys: frozenset[str] = frozenset()
    base_path: str = DEFAULT_BASE_PATH
    #: live streams carry ``_viewers``, the number of open streams on the instance (or list)
    presence: bool = False
    #: the most records a list or a live list sends (the serving app's ``list_limit``)
    list_limit: int = 100
    #: ``render(self, viewer)``: each live stream renders for its own viewer (else once for all)
    renders_per_viewer: bool = False
    #: fields queries look up fast: a SQL index, a Redis set per value
    indexes: frozenset[str] = frozenset()
    #: counts a live list keeps up to date, as ``$name._count.<aggregate>``
    aggregates: Mapping[str, Query] = field(default_factory=dict)

    @cached_property
    def shown(self) -> frozenset[str]:
        """What the page sees: public fields and computed fields."""
        return self.public | self.computed

    @cached_property
    def plain_shown(self) -> tuple[str, ...] | None:
        """The shown fields in order when each holds only JSON's own ``int``, ``str``, ``bool``
        or ``None`` (validated on assignment, no computed field): the public state is then read
        straight off the instance, without a serialiser run."""
        if self.computed or not self.entity.model_config.get("validate_assignment"):
            return None
        fields = self.entity.model_fields
        names = tuple(name for name in fields if name in self.public)
        return names if all(_plain(fields[name].annotation) for name in names) else None

    @cached_property
    def no_errors(self) -> dict[str, Any]:
        """The ``_error``/``_errors`` signals of a page with nothing to complain about."""
        return no_errors(self.error_keys)

    @property
    def is_record(self) -> bool:
        return self.scope == "record"

    @property
    def in_browser(self) -> bool:
        """``store="client"``: the page holds the state; the server keeps and streams nothing."""
        return self.store == "client"

    def at(self, base_path: str) -> EntitySpec:
        """This spec as served by an app mounted at ``base_path``."""
        return replace(self, base_path=base_path)

    def url(self, id: str | int | None = None, *segments: str) -> str:
        """``/sm/counter``, ``/sm/task/<id>/toggle``: the instance's URL, plus ``segments``."""
        parts = [self.base_path.rstrip("/"), self.name]
        if self.is_record:
            if id is None:
                raise TypeError(f"{self.entity.__name__} is a record entity: pass id=...")
            parts.append(quote(str(id), safe=""))
        return "/".join([*parts, *segments])

    def collection_url(self, *segments: str) -> str:
        """``/sm/message``, ``/sm/message/live``: a record entity's collection, plus ``segments``."""
        return "/".join([self.base_path.rstrip("/"), self.name, *segments])

    def event_url(self, segment: str, id: str | int | None = None) -> str:
        descriptor = self.events.get(segment)
        collection = descriptor is not None and descriptor.info.collection
        if id is not None and (collection or not self.is_record):
            whose = "the collection" if collection else f'one instance per {self.scope} (scope="{self.scope}")'
            raise TypeError(f"{self.entity.__name__}.{segment} acts on {whose}: its action takes no id")
        if collection:
            return "/".join([self.base_path.rstrip("/"), self.name, segment])
        return self.url(id, segment)


def build_spec(entity: type[BaseModel], base_path: str = DEFAULT_BASE_PATH, list_limit: int = 100) -> EntitySpec:
    """Reads and checks an entity class's settings; every mistake is named here, at app build."""
    config: Mapping[str, Any] = entity.model_config
    who = entity.__name__
    _check_keys(who, config)
    scope, store, presence = _where(who, config)
    name = str(config.get("name") or snake_case(who))
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"{who}: name {name!r} must be lower case letters, digits and _ (it is a URL segment)")
    ttl = config.get("ttl")
    events = event_table(entity)
    for segment, descriptor in events.items():
        if not segment or "/" in segment or segment == "live":
            raise ValueError(
                f"{who}.{descriptor.info.name}: event path {segment!r} must be one non-empty URL segment "
                "(no '/') other than 'live'"
            )
        if descriptor.info.collection and (scope != "record" or segment == "count"):
            raise ValueError(
                f"{who}.{descriptor.info.name}: a collection event (@event on a @classmethod) needs "
                f'scope="record" and a path other than "count"'
            )
    fields = frozenset(entity.model_fields)
    if "id" in fields and entity.model_fields["id"].annotation is not str:
        raise ValueError(
            f"{who}: id is the key StarModel gives each instance (text); "
            "name your own field otherwise (number: int, code: str) instead of redeclaring id"
        )
    required = sorted(n for n, f in entity.model_fields.items() if f.is_required() and n != "id")
    if required and scope != "record":
        raise ValueError(
            f'{who}: a scope="{scope}" entity starts from its defaults; give {", ".join(required)} one '
            f'(`{required[0]}: str = ""`), or make it scope="record" to create each with its values'
        )
    server_only = _marked(entity, ServerOnly)
    public = fields - server_only - ({"id"} if scope != "record" else set())
    listed = set(_names(config.get("client_writable", ())))
    if unknown := listed - fields:
        raise ValueError(f"{who}: client_writable names unknown fields {sorted(unknown)}")
    writable = (listed | _marked(entity, ClientWritable)) - server_only - {"id"}
    computed = frozenset(entity.model_computed_fields)
    params = {name for d in events.values() for name in d.params_model.model_fields if name not in d.form_models}
    params |= {name for d in events.values() for model in d.form_models.values() for name in model.model_fields}
    spec = EntitySpec(
        entity=entity,
        name=name,
        scope=scope,
        store=store,
        ttl=None if ttl is None else float(ttl),
        events=MappingProxyType(events),
        fields=fields,
        public=public,
        server_only=server_only,
        writable=frozenset(writable),
        computed=computed,
        error_keys=frozenset(params | (fields - server_only - {"id"})),
        base_path=base_path,
        presence=presence,
        list_limit=list_limit,
        renders_per_viewer=_renders_per_viewer(entity),
        indexes=_indexes(who, entity, scope, config),
    )
    return replace(spec, aggregates=MappingProxyType(_aggregates(spec, config.get("aggregates") or {})))


def _indexes(who: str, entity: type[BaseModel], scope: Scope, config: Mapping[str, Any]) -> frozenset[str]:
    """``model_config = {"indexes": ["room"]}``: scalar fields of a record entity."""
    names = set(_names(config.get("indexes", ())))
    if names and scope != "record":
        raise ValueError(f'{who}: indexes speed up queries of records: only scope="record" entities have them')
    if unknown := names - set(entity.model_fields):
        raise ValueError(f"{who}: indexes names unknown fields {sorted(unknown)}")
    if wrong := names - set(filterable(entity, names)):
        raise ValueError(f"{who}: indexes takes bool, int, float and str fields, not {sorted(wrong)}")
    return frozenset(names)


def _aggregates(spec: EntitySpec, given: Mapping[str, Any]) -> dict[str, Query]:
    """``model_config = {"aggregates": {"left": {"done": False}}}``: each a filter on indexed fields."""
    who = spec.entity.__name__
    if given and not spec.is_record:
        raise ValueError(f'{who}: aggregates count records: only scope="record" entities have them')
    out = {}
    for name, where in given.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", str(name)) or not isinstance(where, Mapping):
            raise ValueError(f'{who}: aggregates maps names (lower case) to filters: {{"left": {{"done": False}}}}')
        if missing := set(where) - spec.indexes:
            raise ValueError(
                f'{who}: aggregate {name!r} filters on {sorted(missing)}: add them to model_config "indexes" '
                "(counts are kept cheap by the index)"
            )
        out[str(name)] = build_query(spec, where)
    return out


def _renders_per_viewer(entity: type[BaseModel]) -> bool:
    """Whether ``render`` takes the viewer: ``render(self)`` is rendered once for every stream,
    ``render(self, viewer)`` once per stream, given its ``EventRequest``."""
    render = getattr(entity, "render", None)
    if render is None:
        return False
    params = list(inspect.signature(render).parameters.values())[1:]  # after self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional[1:] if p.default is p.empty]
    required += [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required:
        names = ", ".join(["self", *(p.name for p in params)])
        raise ValueError(
            f"{entity.__name__}.render({names}): render takes no parameter (one HTML for"
            " every viewer) or one, the viewer (the stream's EventRequest: user_id, session_id, raw);"
            f" give {', '.join(p.name for p in required)} a default or drop it"
        )
    return bool(positional)


#: The ``model_config`` keys this package reads, and every key an entity's ``model_config`` may hold.
OWN_KEYS = tuple(sorted(EntityConfig.__optional_keys__ - ConfigDict.__optional_keys__))
CONFIG_KEYS = EntityConfig.__optional_keys__


def _check_keys(who: str, config: Mapping[str, Any]) -> None:
    """Every ``model_config`` key is Pydantic's or ours: a typo (``"scop"``) is refused, not ignored."""
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        key, close = unknown[0], difflib.get_close_matches(unknown[0], CONFIG_KEYS, n=1)
        raise ValueError(
            f'{who}: model_config has no key "{key}"{f": did you mean {close[0]!r}?" if close else ""} '
            f"(it takes {', '.join(OWN_KEYS)}, and Pydantic's ConfigDict keys)"
        )


def _where(who: str, config: Mapping[str, Any]) -> tuple[Scope, StoreKind, bool]:
    """``scope``, ``store`` and ``presence`` from ``model_config``, checked together."""
    scope, store = config.get("scope", "session"), config.get("store", "memory")
    if scope not in SCOPES:
        raise ValueError(f'{who}: model_config "scope" must be one of {SCOPES}, not {scope!r}')
    if store not in STORES:
        raise ValueError(f'{who}: model_config "store" must be one of {STORES}, not {store!r}')
    if scope == "record" and store == "client":
        raise ValueError(f'{who}: record entities need a server store, not store="client"')
    presence = config.get("presence", False)
    if not isinstance(presence, bool):
        raise ValueError(f'{who}: model_config "presence" must be True or False, not {presence!r}')
    if presence and store == "client":
        raise ValueError(f'{who}: presence counts live streams, and a store="client" entity has none')
    return scope, store, presence


def _marked(entity: type[BaseModel], marker: Marker) -> frozenset[str]:
    return frozenset(name for name, f in entity.model_fields.items() if marker in f.metadata)


def _names(value: Iterable[str] | str) -> Iterable[str]:
    return (value,) if isinstance(value, str) else value


#: The class attribute saying an app serves the entity (``spec_of`` alone builds a spec for any class).
SERVED = "__starmodel_served__"


def serve(entity: type[BaseModel], spec: EntitySpec) -> None:
    """``spec`` is how an app serves ``entity``: actions and page helpers built on the class use it."""
    type.__setattr__(entity, "__starmodel_spec__", spec)
    type.__setattr__(entity, SERVED, True)


def record_spec(spec: EntitySpec, who: str) -> EntitySpec:
    """``spec``, which ``who`` (``sm.list``, ``Todo.live_list``) needs to be a record entity's."""
    if not spec.is_record:
        name = spec.entity.__name__
        raise TypeError(f'{who} needs a record entity (scope="record"); {name} is scope="{spec.scope}"')
    return spec


def served_spec(entity: type[BaseModel]) -> EntitySpec:
    """The spec of the app that registered ``entity`` last; ``LookupError`` when none did (its
    actions would post to URLs nothing answers)."""
    if not entity.__dict__.get(SERVED):
        name = entity.__name__
        raise LookupError(
            f"no StarModel serves {name}, so its actions and live pages have no URL: "
            f"add it to StarModel(entities=[..., {name}])"
        )
    return spec_of(entity)


def spec_of(entity: type[BaseModel]) -> EntitySpec:
    """The class's spec: the one of the app that registered it last, else its own facts (base
    path ``/sm``), built once and kept on the class. One spec per class: the facts every app
    shares (fields, events, scope) are the same in each."""
    spec = entity.__dict__.get("__starmodel_spec__")
    if spec is None:
        spec = build_spec(entity)
        type.__setattr__(entity, "__starmodel_spec__", spec)
    assert isinstance(spec, EntitySpec)
    return spec


def instance_key(spec: EntitySpec, record_id: str | None, user_id: str | None, session_id: str | None) -> str | None:
    """Which instance of ``spec`` is meant: the record's, the global one, the user's or the
    session's (``None`` when the caller has no such id)."""
    if spec.is_record:
        return record_id
    if spec.scope == "global":
        return GLOBAL_KEY
    return user_id if spec.scope == "user" else session_id


_PLAIN = (int, str, bool, type(None))


def _plain(annotation: Any) -> bool:
    """``int``, ``str``, ``bool``, or an optional one: values JSON holds as they are."""
    if annotation in _PLAIN:
        return True
    return get_origin(annotation) in (Union, UnionType) and all(a in _PLAIN for a in get_args(annotation))

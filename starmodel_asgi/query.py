"""Queries of record entities: equality filters on scalar fields and an order, checked (and values
coerced by each field's type) before any store sees them. Every store answers the same ``Query``:
memory by a scan, SQL by a ``WHERE`` and ``ORDER BY`` (indexed where the entity declares
``indexes``), Redis from a sorted set per value of an indexed field."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from starmodel_asgi.errors import invalid

T = TypeVar("T")
State = dict[str, Any]

#: the field types a query can compare (and a SQL column holds as itself, not as JSON)
SCALARS = (bool, int, float, str)
#: the names ``GET /{entity}`` reads itself; every other query parameter is a filter
PAGING = frozenset({"limit", "offset", "order", "newest_first", "shown"})
#: ``order="created"`` (or ``"-created"``): creation order, unless a field has that name
CREATED = "created"


@dataclass(frozen=True)
class Query:
    """``where``: (field, value) pairs that must all be equal (``None`` matches a missing value);
    ``order``: a field, or ``None`` for creation order; ``descending`` reverses it. Ties keep
    creation order."""

    where: tuple[tuple[str, Any], ...] = ()
    order: str | None = None
    descending: bool = False

    def matches(self, state: Mapping[str, Any]) -> bool:
        return all(state.get(name) == value for name, value in self.where)

    @property
    def plain(self) -> bool:
        """Every record, oldest first: what stores answered before queries."""
        return not self.where and self.order is None and not self.descending

    @property
    def key(self) -> str:
        """A text naming the query (for sharing reads between live lists of the same query)."""
        return json.dumps([self.where, self.order, self.descending], default=str)

    def params(self) -> dict[str, Any]:
        """The query as ``GET /{entity}`` parameters (filters, then ``order``)."""
        out: dict[str, Any] = {name: _text(value) for name, value in self.where}
        if self.order is not None or self.descending:
            out["order"] = ("-" if self.descending else "") + (self.order or CREATED)
        return out

    def sort(self, states: list[State]) -> list[State]:
        """``states`` (in creation order) in this query's order."""
        if self.order is None:
            return states[::-1] if self.descending else states
        name = self.order
        if self.descending:  # Python's sort is stable either way: ties stay in creation order
            return sorted(states, key=lambda s: _sortable(s.get(name)), reverse=True)
        return sorted(states, key=lambda s: _sortable(s.get(name)))


#: every record, in creation order
EVERYTHING = Query()


def window(items: Sequence[T], limit: int, offset: int, newest: bool = False) -> list[T]:
    """``items[offset:offset + limit]``, or with ``newest`` the same counted from the end (still
    in order): what ``Store.list`` answers."""
    if newest:
        end = max(len(items) - offset, 0)
        return list(items[max(end - limit, 0) : end])
    return list(items[offset : offset + limit])


def _sortable(value: Any) -> tuple[bool, Any]:
    """``None`` before any value (SQL's ``NULLS FIRST`` ascending), the rest by value."""
    return (value is not None, value if value is not None else 0)


def _text(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def scalar_type(annotation: Any) -> type | None:
    """The scalar type (``bool``, ``int``, ``float``, ``str``) of a field, ``Optional`` ones too;
    ``None`` for any other type (lists, models, enums: not comparable in every store)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    return annotation if annotation in SCALARS else None


@cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def build_query(
    spec: Any,
    where: Mapping[str, Any] | None = None,
    order: str | None = None,
    *,
    public: bool = False,
) -> Query:
    """A checked query of ``spec``'s records: each value coerced by its field's type (``"false"``
    is ``False`` for a ``bool``), unknown or unfilterable fields and bad values refused with a 422
    (``Invalid``, a ``ValueError``) naming them. ``public``: a request's query, which may not name
    ``ServerOnly`` fields (they are not said to exist)."""
    fields = spec.entity.model_fields
    visible = spec.public if public else spec.fields
    errors: dict[str, str] = {}
    pairs: list[tuple[str, Any]] = []
    for name, value in (where or {}).items():
        annotation = fields[name].annotation if name in visible else None
        if annotation is None or scalar_type(annotation) is None:
            errors[name] = _unknown(spec, name, visible, "filter")
            continue
        try:
            pairs.append((name, None if value is None else _adapter(annotation).validate_python(value)))
        except ValidationError as exc:
            errors[name] = exc.errors()[0]["msg"]
    field, descending = None, False
    if order is not None:
        descending, name = order.startswith("-"), order.removeprefix("-")
        if name in visible and scalar_type(fields[name].annotation) is not None:
            field = name
        elif name != CREATED or name in fields:
            errors["order"] = _unknown(spec, name, visible, "order")
    if errors:
        raise invalid(spec.name, errors)
    return Query(tuple(sorted(pairs)), field, descending)


def from_request(spec: Any, query: Mapping[str, list[str]]) -> Query:
    """``GET /{entity}?room=x&order=-created``: the filters and order a request asks for."""
    if repeated := sorted(name for name, values in query.items() if len(values) > 1):
        raise invalid(spec.name, {name: f"{name} is given {len(query[name])} times: give it once" for name in repeated})
    where = {name: values[-1] for name, values in query.items() if name not in PAGING and values}
    order = query.get("order")
    return build_query(spec, where, order[-1] if order else None, public=True)


def filterable(entity: type[BaseModel], names: Iterable[str] | None = None) -> list[str]:
    """The fields of ``entity`` (of ``names``, else all) a query can compare: the scalar ones."""
    fields = entity.model_fields
    return sorted(n for n in (fields if names is None else names) if scalar_type(fields[n].annotation) is not None)


def _unknown(spec: Any, name: str, visible: frozenset[str], doing: str) -> str:
    can = ", ".join(filterable(spec.entity, visible)) or "none"
    extra = " or created" if doing == "order" else ""
    return f"{spec.entity.__name__} has no field {name!r} to {doing} by (it can {doing} by {can}{extra})"

"""Entity: the base class users subclass, its signal references and page helpers."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, cast

from pydantic import BaseModel

from starmodel_asgi.events import EventDescriptor
from starmodel_asgi.pages import SafeHTML, inert_json
from starmodel_asgi.record_pages import RecordPages, local_signals
from starmodel_asgi.spec import ClientWritable, EntityConfig, EntitySpec, ServerOnly, spec_of

if TYPE_CHECKING:
    from starmodel_asgi.values import EventRequest

__all__ = ["ClientWritable", "Entity", "EntityConfig", "ServerOnly", "SignalRef"]


class SignalRef(str):
    """``"$counter.count"``; ``.path`` is ``"counter.count"`` for ``data-bind``."""

    __slots__ = ()

    @property
    def path(self) -> str:
        """The reference without its ``$`` (``"counter.count"``), as ``data-bind:`` takes it."""
        return self[1:]


class _Signals:
    """``Counter.signal.count`` -> ``"$counter.count"``."""

    def __get__(self, obj: Any, owner: type[Entity]) -> _BoundSignals:
        return _BoundSignals(owner)


class _BoundSignals:
    def __init__(self, entity: type[Entity]) -> None:
        self._entity = entity

    def __getattr__(self, field: str) -> SignalRef:
        spec = spec_of(self._entity)
        if field.startswith("_") or field not in spec.shown:
            raise AttributeError(f"{self._entity.__name__} has no public field {field!r}")
        return SignalRef(f"${spec.name}.{field}")

    def __call__(self, field: str) -> SignalRef:
        return self.__getattr__(field)


EDITOR_KEY = "__starmodel_editor__"


class Editor(Protocol):
    async def enter(self, instance: Entity) -> None: ...
    async def exit(self, exc_info: tuple[Any, ...]) -> None: ...


class Entity(BaseModel, RecordPages):
    """A piece of server-side state whose ``@event`` methods are HTTP endpoints.

    Settings are plain keys of ``model_config``: ``scope`` (``"session"``, ``"user"``,
    ``"global"``, ``"record"``), ``store`` (``"memory"``, ``"sql"``, ``"redis"``, ``"client"``),
    ``name`` (URL segment and signal namespace), ``ttl`` (seconds an idle session or user
    instance is kept), ``client_writable`` (field names the browser may set), ``presence``
    (live streams carry ``_viewers``, how many pages watch the instance), and for records
    ``indexes`` (fields queries look up fast) and ``aggregates`` (counts live lists push as
    ``_count``).
    """

    model_config: ClassVar[EntityConfig] = EntityConfig(
        ignored_types=(EventDescriptor, _Signals),
        validate_assignment=True,
        allow_inf_nan=False,  # NaN and Infinity are not JSON: no page could read them
    )

    id: str = ""

    signal: ClassVar[_Signals] = _Signals()

    async def __aenter__(self) -> Self:
        """Inside an ``@event(background=True)``: take the instance under its lock, re-read fresh."""
        await self._editor().enter(self)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """Save and push live (nothing is saved when the block raised), then release the lock."""
        await self._editor().exit(exc_info)

    def _editor(self) -> Editor:
        # set in the instance's __dict__ only while a background event runs (a Pydantic private
        # attribute would slow the creation of every instance)
        editor = self.__dict__.get(EDITOR_KEY)
        if editor is None:
            raise RuntimeError(
                f"async with {type(self).__name__}: only inside an @event(background=True); elsewhere use sm.edit(...)"
            )
        return cast(Editor, editor)

    def public_state(self) -> dict[str, Any]:
        """The state the browser sees: signals under the entity's namespace, and JSON answers
        (public fields and ``@computed_field``s)."""
        spec = spec_of(type(self))
        plain = spec.plain_shown
        if plain is not None:
            values = self.__dict__
            return {name: values[name] for name in plain}
        return self.model_dump(mode="json", include=cast(set[str], spec.shown))

    def stored_state(self) -> dict[str, Any]:
        """The state a store keeps, as JSON-ready values: every field, ``ServerOnly`` ones included,
        without ``@computed_field``s (they are recomputed, never stored)."""
        computed = spec_of(type(self)).computed
        return self.model_dump(mode="json", exclude=cast(set[str], computed) if computed else None)

    def stored_json(self) -> str:
        """``stored_state()`` as JSON, in one step."""
        computed = spec_of(type(self)).computed
        return self.model_dump_json(exclude=cast(set[str], computed) if computed else None)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """``repr()`` and ``str()`` leave ``ServerOnly`` fields out, so a page that prints an
        instance cannot leak them."""
        hidden = spec_of(type(self)).server_only
        return ((name, value) for name, value in super().__repr_args__() if name not in hidden)

    @property
    def dom_id(self) -> str:
        """``message-<id>``: the id of the record's element in a live list (give it to the
        outer element ``render()`` returns)."""
        return f"{spec_of(type(self)).name}-{self.id}"

    def render(self, *args: Any, **kwargs: Any) -> Any:
        """Override to return HTML (a ``str`` or anything with ``__html__``) pushed with live updates.

        ``render(self)`` is rendered once per change for every page; ``render(self, viewer)``
        once per live stream, ``viewer`` being the stream's ``EventRequest`` (``user_id``,
        ``session_id``, ``raw``): what each viewer may see and do, at a cost per stream."""
        return None

    def on_create(self, request: EventRequest | None) -> Awaitable[None] | None:
        """Override (sync or async) to fill in a new record before its first save, e.g.
        ``self.owner = request.user_id``; ``request`` is ``None`` for ``sm.create`` from Python."""
        return None

    @classmethod
    def signals_json(cls, instance: Entity | None = None) -> str:
        """The page's first signals: the public state under the entity's namespace, as JSON that
        Datastar's expression reader cannot mistake for code (``data-signals`` is evaluated, and
        ``@post(`` or ``$name`` inside a string would be rewritten: they go as ``\\u0040``/``\\u0024``)."""
        state = (instance or cls()).public_state()
        return inert_json({spec_of(cls).name: state})

    @classmethod
    def holder(cls, instance: Entity | None = None, *, sync: Literal["get", "live", None] = "get") -> SafeHTML:
        """A ``<div>`` declaring the entity's signals, so a page starts in sync, and blank
        ``_error``/``_errors`` for showing failures next to fields.

        ``sync="get"`` fetches the caller's current state on load, ``"live"`` keeps a live stream
        open (reopened after the server restarts, except a record's: a deleted record's stream
        ends for good), ``None`` only declares the given (or default) state.
        """
        spec = cls.__starmodel_target__()
        attrs = f"data-signals='{html.escape(cls.signals_json(instance), quote=True)}'"
        # blank errors, declared once, so $name._errors.field reads "" until something fails
        errors = inert_json({spec.name: local_signals(spec)})
        attrs += f" data-signals__ifmissing='{html.escape(errors, quote=True)}'"
        if sync is not None:
            if spec.is_record and instance is None:
                raise TypeError(f"{cls.__name__} is a record entity: pass the instance to sync")
            base = spec.url(instance.id if instance is not None else None)
            url = base if sync == "get" else f"{base}/live"
            # a live stream the server ended as it stopped is asked again (Datastar retries only
            # a cut one); not a record's, whose stream also ends when it is deleted
            again = ", {retry: 'always'}" if sync == "live" and not spec.is_record else ""
            attrs += f" data-init=\"@get('{url}'{again})\""
        return SafeHTML(f'<div id="{spec.name}-signals" {attrs} hidden></div>')


def entity_class(spec: EntitySpec) -> type[Entity]:
    """The entity class a spec describes."""
    return cast("type[Entity]", spec.entity)

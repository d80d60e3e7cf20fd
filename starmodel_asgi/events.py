"""``@event``: marks entity methods as endpoints, and builds Datastar actions when called on the class."""

from __future__ import annotations

import inspect
import json
import math
import re
import types
import typing
from collections import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, cast, overload
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, create_model
from starlette.requests import HTTPConnection

from starmodel_asgi.depends import Depends, depends_of
from starmodel_asgi.values import EventRequest, Signals

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

#: what a class-level builder takes: ``...`` (anything) unless the mypy plugin (``starmodel_asgi.mypy_plugin``)
#: reads it from the event's signature
P = ParamSpec("P")


@dataclass(frozen=True)
class EventInfo:
    name: str
    method: str = "POST"
    path: str | None = None
    selector: str | None = None
    mode: str | None = None
    use_view_transition: bool | None = None
    #: runs without holding the instance; ``async with self:`` blocks take it (see ``event``)
    background: bool = False
    #: a sync event run in a worker thread (blocking code), not on the event loop
    thread: bool = False
    #: ``@event`` on a ``@classmethod`` of a record entity: acts on the collection, routed without an id
    collection: bool = False

    @property
    def segment(self) -> str:
        return (self.path or self.name).strip("/")


@dataclass
class Injected:
    """Parameters that receive framework objects instead of client values."""

    request: list[str] = field(default_factory=list)
    host_request: list[str] = field(default_factory=list)  # the host's own request object
    signals: list[str] = field(default_factory=list)
    depends: dict[str, Depends] = field(default_factory=dict)  # filled by providers


class EventDescriptor:
    """What ``@event`` puts on the class: a method on instances, an action builder on the class."""

    def __init__(self, func: Callable[..., Any], info: EventInfo) -> None:
        self.func = func
        self.info = info
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner
        if name != self.info.name:
            self.info = EventInfo(**{**self.info.__dict__, "name": name})

    @overload
    def __get__(self, obj: None, owner: type) -> ActionBuilder[...]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[..., Any]: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return ActionBuilder(self.info, owner=owner, accepts=self.accepts)
        return self.func.__get__(owner if self.info.collection else obj, owner)

    @cached_property
    def is_async_gen(self) -> bool:
        return inspect.isasyncgenfunction(self.func)

    @cached_property
    def is_sync_gen(self) -> bool:
        return inspect.isgeneratorfunction(self.func)

    @cached_property
    def is_coroutine(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @cached_property
    def _signature(self) -> tuple[type[BaseModel], Injected]:
        fields: dict[str, Any] = {}
        injected = Injected()
        params = list(inspect.signature(self.func).parameters.values())[1:]
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"@event {self.info.name}: *args/**kwargs are not supported")
            if p.annotation is p.empty:
                if p.default is p.empty or p.default is None:
                    raise TypeError(
                        f"@event {self.info.name}: parameter {p.name!r} needs a type ({p.name}: int, say), "
                        "so the request's value can be checked"
                    )
                annotation: Any = type(p.default)  # the default's type
            else:
                annotation = self._resolve(p.annotation)
            dependency = depends_of(annotation, p.default)
            if dependency is not None:
                injected.depends[p.name] = dependency
                continue
            if annotation is EventRequest:
                injected.request.append(p.name)
                continue
            if annotation is Signals:
                injected.signals.append(p.name)
                continue
            if isinstance(annotation, type) and issubclass(annotation, HTTPConnection):
                injected.host_request.append(p.name)
                continue
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (annotation, default)
        model = create_model(
            f"{self.info.name}_params",
            __config__=ConfigDict(extra="ignore", arbitrary_types_allowed=True, allow_inf_nan=False),
            **fields,
        )
        return model, injected

    def _resolve(self, annotation: Any) -> Any:
        if annotation is inspect.Parameter.empty:
            return Any
        if not isinstance(annotation, str):
            return annotation
        owner = getattr(self, "owner", None)
        localns = {**vars(owner), owner.__name__: owner} if owner else {}
        try:
            return eval(annotation, self.func.__globals__, localns)
        except NameError as exc:
            raise TypeError(f"@event {self.info.name}: cannot resolve annotation {annotation!r}") from exc

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        """The parameters the request binds (not the injected ones)."""
        return tuple(self.params_model.model_fields)

    @cached_property
    def accepts(self) -> frozenset[str]:
        """The names a request may give: the parameters, and the fields of a whole-form one."""
        fields = {key for model in self.form_models.values() for key in _field_names(model)}
        return frozenset(self.param_names) | fields

    @cached_property
    def sequence_params(self) -> frozenset[str]:
        """Parameters that take a list: a query string gives them every value of their name."""
        return sequence_names(self.params_model)

    @cached_property
    def form_models(self) -> dict[str, type[BaseModel]]:
        """Parameters typed as a Pydantic model: when no value carries their name, they are
        built from the form fields and signals named like the model's fields (a whole form)."""
        return {
            name: f.annotation
            for name, f in self.params_model.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
        }

    @property
    def params_model(self) -> type[BaseModel]:
        return self._signature[0]

    @property
    def injected(self) -> Injected:
        return self._signature[1]


class ActionTarget(Protocol):
    """Where an entity's events are served (an app's ``EntitySpec``)."""

    def event_url(self, segment: str, id: str | int | None = None) -> str: ...


class _Served(Protocol):
    @classmethod
    def __starmodel_target__(cls) -> ActionTarget: ...


class ActionBuilder(Generic[P]):
    """``Counter.increment(amount=1)`` -> ``"@post('/sm/counter/increment?amount=1')"``.

    Built on the class, it finds the app serving the entity when called (the usual one-app case);
    ``sm.action(Counter.increment, ...)`` names the app when an entity class serves several.
    Under mypy with ``plugins = ["starmodel_asgi.mypy_plugin"]``, ``P`` is the event's own
    parameters (minus the injected ones, each optional, with ``id`` first): a typo or a wrong type
    is a type error.
    """

    def __init__(
        self,
        info: EventInfo,
        *,
        owner: type | None = None,
        target: ActionTarget | None = None,
        accepts: frozenset[str] | None = None,
    ) -> None:
        self.info, self._owner, self._target, self._accepts = info, owner, target, accepts

    def at(self, target: ActionTarget) -> ActionBuilder[P]:
        return ActionBuilder(self.info, target=target, accepts=self._accepts)

    def url(self, id: str | int | None = None, **params: Any) -> str:
        if self._accepts is not None and (unknown := params.keys() - self._accepts):
            takes = ", ".join(sorted(self._accepts)) or "none"
            raise TypeError(f"{self.info.name}() has no parameter {', '.join(sorted(unknown))} (it takes: {takes})")
        target = self._target or cast("type[_Served]", self._owner).__starmodel_target__()
        return with_query(target.event_url(self.info.segment, id), params)

    if TYPE_CHECKING:

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Action: ...

    else:

        def __call__(self, id: str | int | None = None, **params: Any) -> Action:
            return self._action(id, **params)

    def _action(self, id: str | int | None = None, **params: Any) -> Action:
        """The action: what calling the builder gives."""
        return Action(self.info.method.lower(), self.url(id, **params))

    def __str__(self) -> str:
        return self._action()

    def __html__(self) -> str:
        return self._action()


class Action(str):
    """A Datastar action expression, ``@post('/sm/counter/increment')``: a ``str`` to put in a
    ``data-on:*`` attribute, with ``.options(...)`` for Datastar's action options."""

    method: str
    url: str
    opts: dict[str, Any]

    def __new__(cls, method: str, url: str, options: dict[str, Any] | None = None) -> Action:
        args = js_string(url) + (f", {js_value(options)}" if options else "")
        self = super().__new__(cls, f"@{method}({args})")
        self.method, self.url, self.opts = method, url, dict(options or {})
        return self

    def options(self, **options: Any) -> Action:
        """``.options(contentType="form")`` -> ``@post('/sm/product/p1/save', {contentType: 'form'})``;
        an option Datastar's fetch actions do not have is a ``TypeError`` naming it."""
        if unknown := options.keys() - ACTION_OPTIONS:
            known = ", ".join(sorted(ACTION_OPTIONS))
            raise TypeError(f"Datastar's actions have no option {', '.join(sorted(unknown))} (they take: {known})")
        return Action(self.method, self.url, {**self.opts, **options})

    def __html__(self) -> str:
        return str(self)


#: The options of Datastar's fetch actions (``@post(url, {...})``).
ACTION_OPTIONS = frozenset(
    {
        "contentType", "filterSignals", "selector", "headers", "openWhenHidden", "payload", "retry",
        "retryInterval", "retryScaler", "retryMaxWaitMs", "retryMaxCount", "requestCancellation",
    }
)  # fmt: skip

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def js_string(value: str) -> str:
    """A single-quoted JavaScript string literal."""
    return "'" + json.dumps(value)[1:-1].replace("'", "\\'").replace("<", "\\u003c") + "'"


def js_value(value: Any) -> str:
    """A JavaScript literal for an action option (strings, numbers, booleans, None, lists, dicts)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"action options take finite numbers, not {value!r}")
        return repr(value)
    if isinstance(value, str):
        return js_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(js_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{k if _IDENTIFIER.fullmatch(k) else js_string(k)}: {js_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"action options take str, numbers, bools, None, lists and dicts, not {type(value).__name__}")


@cache
def sequence_names(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that take a list."""
    return frozenset(
        field.alias or name for name, field in model.model_fields.items() if _is_sequence(field.annotation)
    )


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    target = origin or annotation
    return (
        isinstance(target, type)
        and issubclass(target, (list, tuple, set, frozenset, abc.Sequence, abc.Set))
        and not issubclass(target, (str, bytes))
    )


def with_query(url: str, params: dict[str, Any]) -> str:
    """``url`` with ``params`` (those not ``None``) as its query string, as events bind them."""
    query = {k: _query_value(v) for k, v in params.items() if v is not None}
    return f"{url}?{urlencode(query, doseq=True)}" if query else url


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_query_value(v) for v in value]
    return value


@overload
def event(func: Callable[..., Any] | classmethod[Any, Any, Any], /) -> EventDescriptor: ...
@overload
def event(
    *,
    method: str = "POST",
    path: str | None = None,
    selector: str | None = None,
    mode: str | None = None,
    use_view_transition: bool | None = None,
    background: bool = False,
    thread: bool = False,
) -> Callable[[Callable[..., Any] | classmethod[Any, Any, Any]], EventDescriptor]: ...
def event(
    func: Callable[..., Any] | classmethod[Any, Any, Any] | None = None,
    /,
    *,
    method: str = "POST",
    path: str | None = None,
    selector: str | None = None,
    mode: str | None = None,
    use_view_transition: bool | None = None,
    background: bool = False,
    thread: bool = False,
) -> Any:
    """Mark an entity method as an event: ``@event`` or ``@event(method="GET", selector="#out")``.

    ``selector``/``mode`` say where returned or yielded HTML lands (Datastar's element patch
    modes: ``outer``, ``inner``, ``replace``, ``prepend``, ``append``, ``before``, ``after``,
    ``remove``).

    ``background=True`` (async functions and async generators): the event runs without holding the
    instance, so other events on it go through meanwhile. ``self`` is the state when it started;
    each ``async with self:`` block re-reads it under the lock, and leaving the block saves it and
    pushes it live. Changes outside such blocks are not saved. Yields still stream to the caller;
    the event is cancelled when the caller goes away.

    A sync event (``def``, or a sync generator) runs on the event loop, as an ``async def`` with no
    ``await`` would: quick code that changes state costs no thread hop. ``thread=True`` runs it in
    a worker thread instead, for blocking code (a sync HTTP or database client, a long
    computation), so the loop keeps serving others meanwhile.

    ``@event`` above ``@classmethod`` on a record entity: a collection event, ``POST /{entity}/{name}``
    (no id), whose ``request.app.list/edit/delete`` calls run in one unit of work ("clear completed").
    """
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"@event method must be one of {METHODS}, not {method!r}")

    def wrap(f: Callable[..., Any] | classmethod[Any, Any, Any]) -> EventDescriptor:
        collection = isinstance(f, classmethod)
        if isinstance(f, classmethod):
            f = f.__func__
            if background or inspect.isasyncgenfunction(f) or inspect.isgeneratorfunction(f):
                raise TypeError(
                    f"@event on @classmethod {f.__name__}: a collection event is a plain (async) function, "
                    "not a generator nor background=True"
                )
        if background and not (inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)):
            raise TypeError(f"@event(background=True) {f.__name__}: needs an async def (function or generator)")
        if thread and (inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)):
            raise TypeError(f"@event(thread=True) {f.__name__}: only a sync def runs in a thread; await instead")
        info = EventInfo(f.__name__, method, path, selector, mode, use_view_transition, background, thread, collection)
        return EventDescriptor(f, info)

    return wrap(func) if func is not None else wrap


def event_table(entity: type) -> dict[str, EventDescriptor]:
    """The entity's events keyed by URL segment, inherited ones included (a subclass's method
    of the same name replaces its base's); two events on one path are refused."""
    events: dict[str, EventDescriptor] = {}
    for klass in reversed(entity.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, EventDescriptor):
                events[name] = value
            elif isinstance(value, classmethod) and isinstance(value.__func__, EventDescriptor):
                raise TypeError(f"{entity.__name__}: put @event above @classmethod, not below it")
            else:
                events.pop(name, None)
    table: dict[str, EventDescriptor] = {}
    for name, descriptor in events.items():
        segment = descriptor.info.segment
        if (other := table.get(segment)) is not None:
            raise ValueError(
                f"{entity.__name__}.{other.info.name} and {entity.__name__}.{name} both answer at path "
                f"{segment!r}: give one of them another @event(path=...)"
            )
        table[segment] = descriptor
    return table


def _field_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or key for key, field in model.model_fields.items()}

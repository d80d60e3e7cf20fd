"""Services for events, as FastAPI users know them: ``Annotated[Mailer, Depends(get_mailer)]`` on an
event's (or a subscriber's) parameter receives ``get_mailer()``'s result. Providers may be sync or
async functions or (async) generators, whose code after ``yield`` runs once the event's unit of
work has ended (on success and on failure); they may take an ``EventRequest`` and other ``Depends``
parameters; each runs once per call. ``sm.dependency_overrides[get_mailer] = fake`` replaces one."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from starmodel_asgi.errors import EventError
from starmodel_asgi.logs import EVENTS, get_logger
from starmodel_asgi.values import EventRequest

logger = get_logger(EVENTS)

Provider = Callable[..., Any]


class Depends:
    """Marks a parameter that a provider fills: ``Annotated[Mailer, Depends(get_mailer)]`` (or
    ``mailer: Mailer = Depends(get_mailer)``). Never bound from the request."""

    __slots__ = ("provider",)

    def __init__(self, provider: Provider) -> None:
        if not callable(provider):
            raise TypeError(f"Depends takes a provider function, not {provider!r}")
        self.provider = provider

    def __repr__(self) -> str:
        return f"Depends({_name(self.provider)})"


def depends_of(annotation: Any, default: Any) -> Depends | None:
    """The ``Depends`` a parameter declares, in its ``Annotated`` type or as its default."""
    if isinstance(default, Depends):
        return default
    if get_origin(annotation) is Annotated:
        return next((m for m in get_args(annotation)[1:] if isinstance(m, Depends)), None)
    return None


def wanted(function: Callable[..., Any]) -> dict[str, Depends]:
    """The parameters of ``function`` that a provider fills."""
    hints = _hints(function)
    found = {}
    for name, parameter in inspect.signature(function).parameters.items():
        dependency = depends_of(hints.get(name, parameter.annotation), parameter.default)
        if dependency is not None:
            found[name] = dependency
    return found


@asynccontextmanager
async def provided(
    wants: Mapping[str, Depends], request: EventRequest | None, overrides: Mapping[Provider, Provider]
) -> AsyncIterator[dict[str, Any]]:
    """The value of each wanted parameter, for the block; generator providers are closed when it
    ends (told of the exception it ended with, if any)."""
    async with AsyncExitStack() as stack:
        resolver = _Resolver(request, overrides, stack)
        yield {name: await resolver.value(dependency) for name, dependency in wants.items()}


class _Resolver:
    """One call's providers: each run once, in the order they are first wanted."""

    def __init__(
        self, request: EventRequest | None, overrides: Mapping[Provider, Provider], stack: AsyncExitStack
    ) -> None:
        self.request, self.overrides, self.stack = request, overrides, stack
        self.done: dict[Provider, Any] = {}

    async def value(self, dependency: Depends, chain: tuple[Provider, ...] = ()) -> Any:
        provider = self.overrides.get(dependency.provider, dependency.provider)
        if provider in self.done:
            return self.done[provider]
        if provider in chain:
            raise TypeError(f"providers depend on each other in a circle: {' -> '.join(map(_name, chain))}")
        kwargs = await self._arguments(provider, (*chain, provider))
        try:
            if inspect.isasyncgenfunction(provider):
                result = await self.stack.enter_async_context(asynccontextmanager(provider)(**kwargs))
            elif inspect.isgeneratorfunction(provider):
                result = self.stack.enter_context(contextmanager(provider)(**kwargs))
            else:
                result = provider(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except EventError:
            raise
        except Exception as exc:
            logger.exception("the provider %s failed", _name(provider))
            raise EventError(500, f"Internal error in the provider {_name(provider)}") from exc
        self.done[provider] = result
        return result

    async def _arguments(self, provider: Provider, chain: tuple[Provider, ...]) -> dict[str, Any]:
        hints = _hints(provider)
        kwargs: dict[str, Any] = {}
        for name, parameter in inspect.signature(provider).parameters.items():
            annotation = hints.get(name, parameter.annotation)
            dependency = depends_of(annotation, parameter.default)
            if dependency is not None:
                kwargs[name] = await self.value(dependency, chain)
            elif annotation is EventRequest:
                kwargs[name] = self.request
            elif parameter.default is parameter.empty:
                raise TypeError(
                    f"the provider {_name(provider)} takes {name!r}, which is neither an EventRequest "
                    "nor a Depends(...) parameter"
                )
        return kwargs


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(function, include_extras=True)
    except Exception:  # unresolvable names: read the raw annotations
        return {}


def _name(provider: Provider) -> str:
    return getattr(provider, "__qualname__", None) or repr(provider)

"""A mypy plugin that types the class-level action builders: with it, ``Counter.increment(amont=1)``
and ``Counter.increment(amount="two")`` are type errors.

Enable it in the mypy configuration (``[tool.mypy] plugins = ["starmodel_asgi.mypy_plugin"]``).
``Entity.event_name`` on the class is then ``ActionBuilder[(id=..., <the event's parameters>)]``:
each parameter of the event with its type, keyword-only and optional (a value the action leaves
out comes from the page's signals or form), the injected ones left out (``EventRequest``,
``Signals``, the host's request, a ``Depends(...)`` default), and a record's ``id`` first.
mypy reads ``Annotated[...]``'s extras away, so an ``Annotated[T, Depends(...)]`` parameter stays
in the builder's signature as an optional keyword: omitting it is right, passing it fails at run
time. Only mypy runs plugins: other checkers see the builder as taking anything.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.nodes import ARG_NAMED_OPT, ARG_OPT, CallExpr, Decorator, Expression, RefExpr
from mypy.plugin import AttributeContext, Plugin
from mypy.types import (
    CallableType,
    Instance,
    NoneType,
    Parameters,
    ProperType,
    Type,
    UnionType,
    get_proper_type,
)

EVENT = {"starmodel_asgi.event", "starmodel_asgi.events.event"}
BUILDER = "starmodel_asgi.events.ActionBuilder"
DEPENDS = {"starmodel_asgi.Depends", "starmodel_asgi.depends.Depends"}
INJECTED = {
    "starmodel_asgi.values.EventRequest",
    "starmodel_asgi.values.Signals",
    "starlette.requests.HTTPConnection",
}


class StarModelPlugin(Plugin):
    def get_class_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        symbol = self.lookup_fully_qualified(fullname)
        if symbol is None or not isinstance(symbol.node, Decorator) or not is_event(symbol.node):
            return None
        decorator = symbol.node
        return lambda ctx: builder_type(ctx, decorator)


def is_event(decorator: Decorator) -> bool:
    return any(decorator_name(d) in EVENT for d in decorator.original_decorators)


def decorator_name(expr: Expression) -> str | None:
    if isinstance(expr, CallExpr):  # @event(method="GET")
        expr = expr.callee
    return expr.fullname if isinstance(expr, RefExpr) else None


def builder_type(ctx: AttributeContext, decorator: Decorator) -> Type:
    """``ActionBuilder[(id=..., amount: int | None = ...)]`` for ``def increment(self, amount: int = 1)``."""
    builder = get_proper_type(ctx.default_attr_type)
    signature = decorator.func.type
    if not isinstance(builder, Instance) or builder.type.fullname != BUILDER or not isinstance(signature, CallableType):
        return ctx.default_attr_type
    none = NoneType()
    identifier = UnionType(
        [ctx.api.named_generic_type("builtins.str", []), ctx.api.named_generic_type("builtins.int", []), none]
    )
    collection = decorator.func.is_class  # @event above @classmethod: no id
    types: list[Type] = [] if collection else [identifier]
    kinds = [] if collection else [ARG_OPT]
    names: list[str | None] = [] if collection else ["id"]
    arguments = decorator.func.arguments[1:]  # without self
    parameters = zip(arguments, signature.arg_kinds[1:], signature.arg_names[1:], signature.arg_types[1:], strict=False)
    for argument, kind, name, typ in parameters:
        if name is None or kind.is_star() or is_injected(typ):
            continue
        if argument.initializer is not None and decorator_name(argument.initializer) in DEPENDS:
            continue
        types.append(UnionType.make_union([typ, none]))
        kinds.append(ARG_NAMED_OPT)
        names.append(name)
    return Instance(builder.type, [Parameters(types, kinds, names)])


def is_injected(typ: Type) -> bool:
    proper: ProperType = get_proper_type(typ)
    return isinstance(proper, Instance) and any(base.fullname in INJECTED for base in proper.type.mro)


def plugin(version: str) -> type[Plugin]:
    return StarModelPlugin

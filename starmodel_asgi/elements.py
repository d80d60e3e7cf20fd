"""HTML an event returns or yields, and an instance's ``render()``, as the elements a page patches."""

from __future__ import annotations

from typing import Any

from starmodel_asgi.entity import Entity
from starmodel_asgi.events import EventInfo
from starmodel_asgi.values import Element, EventRequest, Redirect


def to_elements(result: Any, info: EventInfo | None = None) -> list[Element]:
    """What an event returned or yielded, as HTML elements (``None``, entities and redirects are
    no HTML). A list of HTML is one element of the joined HTML, so ``mode="inner"`` fills the
    target with all of it; ``Element``s keep their own targets."""
    if result is None or isinstance(result, (Entity, Redirect)):
        return []
    if isinstance(result, Element):
        return [result]
    if isinstance(result, (list, tuple)):
        parts = [e for item in result for e in to_elements(item, None)]
        if any(e.selector is not None or e.mode is not None for e in parts):
            return [e if e.selector or e.mode else _placed(e.html, info) for e in parts]
        return [_placed("".join(e.html for e in parts), info)] if parts else []
    if hasattr(result, "__html__"):
        result = result.__html__()
    if isinstance(result, str):
        return [_placed(result, info)]
    raise TypeError(
        f"{type(result).__name__} is not HTML: return a str, something with __html__, an Element, a Redirect or None"
    )


def _placed(html: str, info: EventInfo | None) -> Element:
    if info is None:
        return Element(html)
    return Element(html, info.selector, info.mode, info.use_view_transition)


def rendered(instance: Entity, viewer: EventRequest | None = None) -> list[Element]:
    """The instance's own ``render()`` (``render(viewer)`` when one is given), as elements for
    live pushes."""
    return to_elements(instance.render() if viewer is None else instance.render(viewer))

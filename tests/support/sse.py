"""Helpers over ``starmodel_asgi.testing``'s SSE reading: a list element as the page holds it."""

from __future__ import annotations

import re
from typing import Any

from starmodel_asgi.testing import Event, merge, parse_events


def parse_sse(text: str) -> list[Event]:
    return [Event(name, data) for name, data in parse_events(text)]


def merged_signals(events: list[Event]) -> dict[str, Any]:
    """All signal patches applied in order, as the page would hold them."""
    merged: dict[str, Any] = {}
    for ev in events:
        if ev.event == "datastar-patch-signals":
            merge(merged, ev.signals, keep_none=True)
    return merged


class ListPage:
    """The children of one list element (``#message-list``) as Datastar would leave them after
    each element patch, for records rendered as one top-level element with an ``id``."""

    ELEMENT = re.compile(r'<(\w+) id="([^"]+)"[^>]*>.*?</\1>', re.S)

    def __init__(self, target: str) -> None:
        self.target = target
        self.children: dict[str, str] = {}  # element id -> outer HTML, in page order

    def apply(self, events: list[Event]) -> ListPage:
        for ev in events:
            if ev.event == "datastar-patch-elements":
                self._patch(ev.get("selector") or "", ev.get("mode") or "outer", ev.elements)
        return self

    def _patch(self, selector: str, mode: str, html: str) -> None:
        parsed = {m.group(2): m.group(0) for m in self.ELEMENT.finditer(html)}
        if selector == self.target:
            if mode == "inner":
                self.children = parsed
            elif mode == "append":
                self.children.update(parsed)
            elif mode == "prepend":
                self.children = {**parsed, **self.children}
            else:
                raise AssertionError(f"unexpected mode {mode} on the list")
            return
        element_id = selector.removeprefix("#")
        assert element_id in self.children, f"{selector} is not on the page"
        if mode == "remove":
            del self.children[element_id]
        elif mode == "outer":
            assert list(parsed) == [element_id], html
            self.children[element_id] = parsed[element_id]
        else:
            raise AssertionError(f"unexpected mode {mode} on {selector}")

    @property
    def texts(self) -> list[str]:
        """Each child's text, tags stripped."""
        return [re.sub(r"<[^>]+>", "", html) for html in self.children.values()]

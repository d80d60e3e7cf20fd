"""Reading Datastar SSE answers the way the browser client does."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from starmodel_asgi.testing import merge, parse_events


@dataclass
class SSEEvent:
    event: str
    lines: dict[str, list[str]] = field(default_factory=dict)

    @property
    def signals(self) -> dict[str, Any]:
        return json.loads("\n".join(self.lines.get("signals", [])))

    @property
    def elements(self) -> str:
        return "\n".join(self.lines.get("elements", []))

    def get(self, key: str) -> str | None:
        values = self.lines.get(key)
        return values[0] if values else None


def parse_sse(text: str) -> list[SSEEvent]:
    return [SSEEvent(name, data) for name, data in parse_events(text)]


def merged_signals(events: list[SSEEvent]) -> dict[str, Any]:
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

    def apply(self, events: list[SSEEvent]) -> ListPage:
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

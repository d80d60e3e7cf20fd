"""Reading a Datastar answer: SSE text split into events as the client splits them, and
``Answer``, what one request answered (with the protocol's names from ``datastar_py.consts``)."""

from __future__ import annotations

import html as htmllib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from datastar_py.consts import (
    DATASTAR_KEY,
    ELEMENTS_DATALINE_LITERAL,
    MODE_DATALINE_LITERAL,
    ONLY_IF_MISSING_DATALINE_LITERAL,
    SELECTOR_DATALINE_LITERAL,
    SIGNALS_DATALINE_LITERAL,
    EventType,
)

from starmodel_asgi.guards import GUARD_ATTRIBUTE
from starmodel_asgi.testing.html import top_level
from starmodel_asgi.testing.signals import merge

_GUARD = re.compile(GUARD_ATTRIBUTE + r'="([^"]*)"')
_REDIRECT = re.compile(r"window\.location\s*=\s*'((?:[^'\\]|\\.)*)'")


@dataclass
class Answer:
    """What one request answered: ``status``, the signal patches it carried (merged, as the page
    applies them), its element patches as ``(selector, mode, html)``, where it sends the page
    (``redirect``), and the raw ``headers`` and ``text``."""

    status: int
    signals: dict[str, Any] = field(default_factory=dict)
    elements: list[tuple[str, str, str]] = field(default_factory=list)
    redirect: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    #: each signal patch as sent, with its ``onlyIfMissing``, applied in order to the page
    patches: list[tuple[dict[str, Any], bool]] = field(default_factory=list, repr=False)
    #: how many datastar events it carried
    events: int = field(default=0, repr=False)

    def json(self) -> Any:
        """The body parsed as JSON (a JSON answer's state or error)."""
        return json.loads(self.text)

    def apply_to(self, signals: dict[str, Any]) -> None:
        """Apply the signal patches to a page's signals, as Datastar's client does."""
        for patch, only_if_missing in self.patches:
            merge(signals, patch, only_if_missing)

    def add_events(self, events: list[tuple[str, dict[str, list[str]]]]) -> None:
        """Take in datastar events as ``parse_events`` reads them: signal patches merged into
        ``signals``, element patches added to ``elements``, a redirect script to ``redirect``."""
        for name, data in events:
            self.events += 1
            if name == EventType.PATCH_SIGNALS:
                patch = json.loads("\n".join(data.get(SIGNALS_DATALINE_LITERAL, ["{}"])))
                self._patched(patch, data.get(ONLY_IF_MISSING_DATALINE_LITERAL) == ["true"])
            elif name == EventType.PATCH_ELEMENTS:
                html = "\n".join(data.get(ELEMENTS_DATALINE_LITERAL, []))
                to_body = data.get(SELECTOR_DATALINE_LITERAL) == ["body"]
                if to_body and (guard := _GUARD.search(html)):  # nothing types meanwhile: the new values hold
                    fields = json.loads(htmllib.unescape(guard.group(1)))
                    self._patched({name: {k: new for k, (_, new) in v.items()} for name, v in fields.items()}, False)
                    continue
                redirect = _REDIRECT.search(html) if to_body else None
                if redirect is not None:
                    self.redirect = json.loads('"' + redirect.group(1).replace("\\'", "'") + '"')
                    continue
                mode = (data.get(MODE_DATALINE_LITERAL) or ["outer"])[0]
                selector = (data.get(SELECTOR_DATALINE_LITERAL) or [""])[0]
                if selector or mode not in ("outer", "replace"):
                    self.elements.append((selector, mode, html))
                else:  # each top-level element patches the one with its id
                    self.elements += [(f"#{id}" if id else "", mode, part) for id, part in top_level(html)]

    def _patched(self, patch: dict[str, Any], only_if_missing: bool) -> None:
        self.patches.append((patch, only_if_missing))
        merge(self.signals, patch, keep_none=True)  # None says "removed"


@dataclass
class Event:
    """One datastar event as sent: its name (``datastar-patch-signals``) and its data lines by key
    (``{"signals": ['{"count": 1}']}``)."""

    event: str
    lines: dict[str, list[str]] = field(default_factory=dict)

    @property
    def signals(self) -> dict[str, Any]:
        """A signal patch's signals, as sent (``None`` where one removes a signal)."""
        return dict(json.loads("\n".join(self.lines.get(SIGNALS_DATALINE_LITERAL, ["{}"]))))

    @property
    def elements(self) -> str:
        """An element patch's HTML."""
        return "\n".join(self.lines.get(ELEMENTS_DATALINE_LITERAL, []))

    def get(self, key: str) -> str | None:
        """The first data line of ``key`` (``selector``, ``mode``), if sent."""
        values = self.lines.get(key)
        return values[0] if values else None


def parse_events(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """SSE text -> ``(event name, {data key: [lines]})`` per event, as Datastar's client splits them."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "", dict[str, list[str]]()
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                key, _, value = line[5:].removeprefix(" ").partition(" ")
                data.setdefault(key, []).append(value)
        if name.startswith(DATASTAR_KEY):
            events.append((name, data))
    return events

"""Reading Datastar SSE answers the way the browser client does."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        current: SSEEvent | None = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                current = SSEEvent(line[len("event: ") :])
            elif line.startswith("data: ") and current is not None:
                key, _, value = line[len("data: ") :].partition(" ")
                current.lines.setdefault(key, []).append(value)
        if current is not None:
            events.append(current)
    return events


def merged_signals(events: list[SSEEvent]) -> dict[str, Any]:
    """All signal patches applied in order, as the page would hold them."""
    merged: dict[str, Any] = {}
    for ev in events:
        if ev.event == "datastar-patch-signals":
            _merge(merged, ev.signals)
    return merged


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value

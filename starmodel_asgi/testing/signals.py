"""Signals as Datastar's client keeps them: patches merged into the page's signals, and the
signals an action sends."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

_LOCAL = re.compile(r"(^|\.)_")  # Datastar's default exclude: signals whose name starts with "_"


def nested(path: str, value: Any) -> dict[str, Any]:
    """``"todo.title", "x"`` -> ``{"todo": {"title": "x"}}``."""
    result: Any = value
    for part in reversed(path.split(".")):
        result = {part: result}
    return dict(result)


def merge(
    target: MutableMapping[str, Any], patch: Mapping[str, Any], only_if_missing: bool = False, keep_none: bool = False
) -> None:
    """A Datastar signal patch (JSON merge patch: ``None`` removes, unless ``keep_none``, which
    composes patches) applied to ``target``; ``only_if_missing`` sets only what is not there."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, Mapping):
            if not isinstance(current, dict):
                if only_if_missing and key in target and not isinstance(target[key], Mapping):
                    continue
                current = target[key] = {}
            merge(current, value, only_if_missing, keep_none)
        elif value is None and not keep_none:
            if not only_if_missing:
                target.pop(key, None)
        elif not (only_if_missing and key in target):
            target[key] = value


def filtered(signals: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The signals an action sends: each whose dotted path matches ``include`` and not ``exclude``
    (Datastar's ``filterSignals``; by default all but those with a part starting with ``_``)."""
    include = re.compile((options or {}).get("include", ""))
    exclude = re.compile((options or {}).get("exclude", _LOCAL.pattern))
    result: dict[str, Any] = {}
    for path, value in leaves(signals):
        if include.search(path) and not exclude.search(path):
            merge(result, nested(path, value), keep_none=True)
    return result


def leaves(signals: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]``."""
    found: list[tuple[str, Any]] = []
    for key, value in signals.items():
        path = f"{prefix}{key}"
        found += leaves(value, path + ".") if isinstance(value, Mapping) and value else [(path, value)]
    return found

"""Reading a page's HTML as Datastar's client would: the signals it declares, its ``data-init``
actions, and the top-level elements of a patch."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any, cast

from starmodel_asgi.testing.expressions import actions_in, read_object
from starmodel_asgi.testing.signals import nested


class PageReader(HTMLParser):
    """The signals an HTML page declares (``data-signals``, ``data-bind``) and its ``data-init`` actions."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.signals: list[tuple[dict[str, Any], bool]] = []
        self.inits: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = dict(attrs)
        for name, value in attrs:
            head, _, key = name.partition(":")
            base = head.partition("__")[0]
            key, _, modifiers = key.partition("__")
            if_missing = "ifmissing" in name
            path = key if "case.kebab" in modifiers else camel(key)  # Datastar camel-cases keys
            if base == "data-signals" and not key:
                self.signals.append((read_object(value or "{}"), if_missing))
            elif base == "data-signals":
                self.signals.append((nested(path, read_object(value or "null")), if_missing))
            elif base == "data-bind":
                self.signals.append((nested(path or value or "", bound_value(tag, given)), True))
            elif base == "data-init" and value:
                self.inits += actions_in(value)


def bound_value(tag: str, attrs: Mapping[str, str | None]) -> Any:
    """What a ``data-bind`` input gives its new signal (a ``<textarea>``'s or ``<select>``'s
    content is not read: declare those signals with ``data-signals``)."""
    kind = (attrs.get("type") or "").lower()
    if kind == "checkbox":
        return "checked" in attrs
    value = attrs.get("value") or ""
    if kind in ("number", "range") and value:
        number = float(value)
        return int(number) if number.is_integer() else number
    return value


def camel(key: str) -> str:
    """``my-count`` -> ``myCount``, each dotted part, as Datastar reads attribute keys."""
    return ".".join(re.sub(r"-([a-z0-9])", lambda m: m.group(1).upper(), part) for part in key.split("."))


def top_level(html: str) -> list[tuple[str | None, str]]:
    """Each top-level element of ``html`` with its id: ``[("a", '<p id="a">A</p>'), ...]``."""
    reader = _TopLevel(html)
    reader.feed(html)
    reader.close()
    return reader.found or [(None, html)]


class _TopLevel(HTMLParser):
    VOID = frozenset(
        ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"]
    )

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=False)
        self.html, self.depth, self.found = html, 0, list[tuple[str | None, str]]()
        self._lines = [0]
        for line in html.splitlines(keepends=True):
            self._lines.append(self._lines[-1] + len(line))
        self._start, self._id = 0, cast(str | None, None)

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            self._start, self._id = self._offset(), dict(attrs).get("id")
        if tag in self.VOID:
            if self.depth == 0:
                self._close_at(self._offset() + len(self.get_starttag_text() or ""))
            return
        self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            self._start, self._id = self._offset(), dict(attrs).get("id")
            self._close_at(self._offset() + len(self.get_starttag_text() or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0:
            self._close_at(self.html.index(">", self._offset()) + 1)

    def _close_at(self, end: int) -> None:
        self.found.append((self._id, self.html[self._start : end]))

"""Reading what a page's attributes hold: Datastar actions (``@post('/sm/x', {...})``) and the
JavaScript object literals of ``data-signals`` and action options."""

from __future__ import annotations

import json
import re
from typing import Any

from starmodel_asgi.events import ACTION_OPTIONS, Action

_ACTION = re.compile(r"""^\s*@(get|post|put|patch|delete)\(\s*'((?:[^'\\]|\\.)*)'\s*(?:,\s*(\{.*\}))?\s*\)\s*$""", re.S)
_ACTION_START = re.compile(r"@(?:get|post|put|patch|delete)\(")
_OPTIONS = ACTION_OPTIONS


def actions_in(expression: str) -> list[str]:
    """Each ``@verb('...', {...})`` action in a Datastar expression, whole (nested braces, strings)."""
    found = []
    for start in _ACTION_START.finditer(expression):
        depth, quote_char, i = 0, "", start.end() - 1
        while i < len(expression):
            char = expression[i]
            if quote_char:
                if char == "\\":
                    i += 1
                elif char == quote_char:
                    quote_char = ""
            elif char in "'\"`":
                quote_char = char
            elif char in "({[":
                depth += 1
            elif char in ")}]":
                depth -= 1
                if depth == 0:
                    found.append(expression[start.start() : i + 1])
                    break
            i += 1
        else:
            raise ValueError(f"Page cannot read the action in {expression!r}")
    return found


def parse_action(action: str) -> tuple[str, str, dict[str, Any]]:
    """``"@post('/sm/x/y', {contentType: 'form'})"`` -> ``("POST", "/sm/x/y", {"contentType": "form"})``."""
    if isinstance(action, Action):  # from the builder: Counter.increment(amount=2)
        method, url, options = action.method.upper(), action.url, action.opts
    else:
        found = _ACTION.match(action)
        if found is None:
            raise ValueError(f"not a Datastar action: {action!r} (expected @post('/path') and the like)")
        verb, quoted, given = found.groups()
        method, url = verb.upper(), json.loads('"' + quoted.replace("\\'", "'") + '"')
        options = read_object(given) if given else {}
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"{action!r}: Page does not know the action options {sorted(unknown)}")
    return method, url, options


#: what a JavaScript object literal has that JSON has not: single-quoted strings, regular
#: expressions, trailing commas, bare keys (double-quoted strings are matched to be skipped)
_JS_LITERAL = re.compile(
    r"""'((?:[^'\\]|\\.)*)'|("(?:[^"\\]|\\.)*")|/((?:[^/\\\n]|\\.)+)/[a-z]*|,(\s*[}\]])|([A-Za-z_$][\w$]*)(\s*:)"""
)


def read_object(text: str) -> Any:
    """A ``data-signals`` value or action options: JSON, or a JavaScript literal of quoted or bare
    keys, single- or double-quoted strings, and regular expressions (read as their source)."""
    try:
        return json.loads(text)
    except ValueError:
        pass

    def to_json(m: re.Match[str]) -> str:
        single, double, regex, closing, key, colon = m.groups()
        if single is not None:
            return json.dumps(re.sub(r"\\(.)", r"\1", single))
        if double is not None:
            return double
        if regex is not None:
            return json.dumps(regex)
        if closing is not None:
            return closing
        return json.dumps(key) + colon

    try:
        return json.loads(_JS_LITERAL.sub(to_json, text))
    except ValueError:
        raise ValueError(f"Page reads data-signals as JSON or a plain object literal, not {text!r}") from None

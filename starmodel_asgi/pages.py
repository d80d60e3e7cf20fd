"""Small helpers for the host's own pages."""

from __future__ import annotations

import html
import json
import os
import string
from typing import Any

#: The official Datastar 1.0 browser build; override with ``STARMODEL_DATASTAR_URL`` or ``url=``.
DATASTAR_CDN = "https://cdn.jsdelivr.net/gh/starfederation/datastar@1.0.1/bundles/datastar.js"


def datastar_url(url: str | None = None) -> str:
    return url or os.environ.get("STARMODEL_DATASTAR_URL") or DATASTAR_CDN


class SafeHTML(str):
    """HTML that page builders insert as is (it has ``__html__``, as FastHTML and Jinja expect)."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


#: What a page says when the Datastar client did not load (``datastar_script(notice=...)``).
OFFLINE_NOTICE = "This page could not load its script, so its buttons do nothing. Check your connection and reload."


def datastar_script(url: str | None = None, *, notice: str | None = OFFLINE_NOTICE, delay: float = 2.0) -> SafeHTML:
    """``<script type="module" src="...">`` loading the Datastar client, and a notice that says so
    when it did not load (the CDN unreachable, a local copy missing, or blocked for want of CORS).

    The notice is a banner at the top of ``<body>`` (a ``body::before``, so this fits in ``<head>``)
    that shows ``delay`` seconds after the page loads unless Datastar ran: Datastar switches its
    stylesheet off (``data-attr:media``). ``notice=None`` leaves it out.
    """
    script = f'<script type="module" src="{html.escape(datastar_url(url))}"></script>'
    return SafeHTML(script if notice is None else script + offline_notice(notice, delay))


def offline_notice(text: str, delay: float = 2.0) -> str:
    """A ``<style>`` showing ``text`` atop the page after ``delay`` seconds, switched off by
    Datastar once it runs."""
    if not 0 <= delay < 3600:
        raise ValueError(f"datastar_script(delay={delay!r}): the notice waits 0 to 3600 seconds")
    banner = (
        f"body::before{{content:{css_string(text)};display:block;padding:.75em 1em;background:#fff3cd;"
        "color:#4d3800;border-bottom:1px solid #e0b400;font:1rem/1.4 system-ui,sans-serif;"
        f"visibility:hidden;animation:starmodel-offline 0s {delay:g}s forwards}}"
        "@keyframes starmodel-offline{to{visibility:visible}}"
    )
    return f'<style id="starmodel-offline" data-attr:media="\'not all\'">{banner}</style>'


def css_string(text: str) -> str:
    """A double-quoted CSS string: anything but plain letters, digits and punctuation as CSS escapes,
    so no text can end the string or the ``<style>``."""
    return '"' + "".join(c if c in _CSS_PLAIN else f"\\{ord(c):x} " for c in text) + '"'


_CSS_PLAIN = frozenset(string.ascii_letters + string.digits + " .,;:!?()-")


def inert_json(value: Any) -> str:
    """JSON for a Datastar attribute that is evaluated as an expression: ``@`` and ``$`` (action
    and signal markers, rewritten even inside strings) are escaped, so stored text stays text."""
    return json.dumps(value, separators=(",", ":")).replace("@", "\\u0040").replace("$", "\\u0024")

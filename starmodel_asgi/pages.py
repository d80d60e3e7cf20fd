"""Small helpers for the host's own pages."""

from __future__ import annotations

import html
import json
import os
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


def datastar_script(url: str | None = None) -> SafeHTML:
    """``<script type="module" src="...">`` loading the Datastar client."""
    return SafeHTML(f'<script type="module" src="{html.escape(datastar_url(url))}"></script>')


def inert_json(value: Any) -> str:
    """JSON for a Datastar attribute that is evaluated as an expression: ``@`` and ``$`` (action
    and signal markers, rewritten even inside strings) are escaped, so stored text stays text."""
    return json.dumps(value, separators=(",", ":")).replace("@", "\\u0040").replace("$", "\\u0024")

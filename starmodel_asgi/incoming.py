"""One HTTP request as the endpoints read it: each part parsed once, on first use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request, cookie_parser
from starlette.types import Receive, Scope


class Incoming:
    """Lower-case headers in a plain dict (repeated names joined, as HTTP allows), cookies and the
    query string parsed when first asked for, and ``request``, Starlette's view of the same
    request for hooks that take one (``get_user``, an event's host request)."""

    __slots__ = ("_cookies", "_query", "_request", "headers", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope, self.receive = scope, receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name in headers:
                value = headers[name] + ("; " if name == "cookie" else ", ") + value
            headers[name] = value
        self.headers = headers
        self._cookies: dict[str, str] | None = None
        self._query: dict[str, list[str]] | None = None
        self._request: Request | None = None

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = cookie_parser(self.headers.get("cookie", ""))
        return self._cookies

    @property
    def query(self) -> dict[str, list[str]]:
        """Each name of the query string with all its values."""
        if self._query is None:
            raw = self.scope.get("query_string", b"")
            self._query = multi(_pairs(raw.decode("latin-1"))) if raw else {}
        return self._query

    @property
    def request(self) -> Request:
        if self._request is None:
            self._request = Request(self.scope, self.receive)
        return self._request

    @property
    def is_datastar(self) -> bool:
        return self.headers.get("datastar-request", "").lower() == "true"


def _pairs(query: str) -> Iterable[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its cost when nothing is escaped."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [(name, value) for name, _, value in (part.partition("=") for part in query.split("&")) if name or value]


def multi(items: Iterable[tuple[str, Any]]) -> dict[str, list[Any]]:
    """Each name with all its values, in order."""
    values: dict[str, list[Any]] = {}
    for name, value in items:
        values.setdefault(name, []).append(value)
    return values

"""An HTTP scope as a server passes it to an app, for tests that call the app directly."""

from __future__ import annotations

from typing import Any


def http_scope(method: str, path: str, headers: dict[str, str], root_path: str = "") -> dict[str, Any]:
    """``headers`` as given (a ``host`` of ``t`` unless they name one), no query string."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "t", **headers}.items()],
        "server": ("t", 80),
        "client": ("127.0.0.1", 1),
        "state": {},
    }

"""Reading what a request sends (the signals in its body or query) and the cross-site check."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from starmodel_asgi.http import EventError, Signals

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
JSON_TYPES = ("application/json", "text/json")
FORM_TYPE = "application/x-www-form-urlencoded"


def content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def check_origin(headers: Mapping[str, str], trusted_origins: Collection[str]) -> None:
    """Refuses (403) a request that may change state and comes from another site. A cross-site
    form or link can fire a simple POST or GET; it cannot send Datastar's header or JSON without a
    CORS preflight, which this app never grants."""
    if headers.get("datastar-request", "").lower() == "true":
        return
    if content_type(headers) in JSON_TYPES:
        return
    origin = headers.get("origin")
    if origin is None:
        if headers.get("sec-fetch-site") == "cross-site":
            raise EventError(403, "Cross-site request refused")
        return
    if urlsplit(origin).netloc == headers.get("host", "") or origin.rstrip("/") in trusted_origins:
        return
    raise EventError(403, "Cross-site request refused")


async def read_body(request: Request, max_body_size: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to pass ``max_body_size``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_size:
        raise EventError(413, f"Request body over {max_body_size} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_size:
            raise EventError(413, f"Request body over {max_body_size} bytes")
    return bytes(body)


async def read_signals(request: Request, max_body_size: int) -> Signals:
    """Datastar's signals: the ``datastar`` query parameter of GET/HEAD/DELETE requests, else the
    body (a JSON object, or urlencoded form fields)."""
    if request.method in ("GET", "HEAD", "DELETE"):
        raw = request.query_params.get("datastar")
        return parse_json(raw.encode()) if raw else Signals()
    body = await read_body(request, max_body_size)
    if not body.strip():
        return Signals()
    if content_type(request.headers) == FORM_TYPE:
        return Signals(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return parse_json(body)


def parse_json(body: bytes) -> Signals:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventError(400, f"Malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EventError(400, "The body must be a JSON object of signals")
    return Signals(value)

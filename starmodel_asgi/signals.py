"""Reading what a request sends (the signals in its body or query) and the cross-site check."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
from python_multipart.exceptions import FormParserError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from starmodel_asgi.http import EventError, Signals, invalid
from starmodel_asgi.incoming import Incoming, multi

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
JSON_TYPES = ("application/json", "text/json")
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
#: What a page of another site can send without a CORS preflight (an HTML form's encodings).
SIMPLE_TYPES = (FORM_TYPE, MULTIPART_TYPE, "text/plain")


def content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def check_origin(headers: Mapping[str, str], trusted_origins: Collection[str], scheme: str = "http") -> None:
    """Refuses (403) a request that may change state and comes from another site, as Django's
    CSRF check does without a token. Datastar's header or a JSON body cannot be sent cross-site
    without a CORS preflight, which this app never grants: those pass. Otherwise (a plain form or
    link) the ``Origin`` must be this site (scheme and host) or a trusted origin; without
    ``Origin``, a ``Sec-Fetch-Site`` other than same-origin is refused, and the ``Referer`` must be
    this site or trusted (required for a form over https, where browsers always send one)."""
    if headers.get("datastar-request", "").lower() == "true":
        return
    if content_type(headers) in JSON_TYPES:
        return
    own = f"{scheme}://{headers.get('host', '')}"
    origin = headers.get("origin")
    if origin is not None:
        if _same(origin, own, trusted_origins):
            return
        raise EventError(403, "Cross-site request refused (Origin)")
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise EventError(403, "Cross-site request refused (Sec-Fetch-Site)")
    referer = headers.get("referer")
    if referer is None:
        # a form a browser posts over https carries an Origin or a Referer; a client that sends
        # neither and no form is not a browser, and no browser can be made to send it
        if scheme == "https" and content_type(headers) in SIMPLE_TYPES:
            raise EventError(403, "Cross-site request refused (no Referer over https)")
        return
    if not _same(referer, own, trusted_origins):
        raise EventError(403, "Cross-site request refused (Referer)")


def _same(url: str, own: str, trusted_origins: Collection[str]) -> bool:
    """Whether ``url`` (an Origin or a Referer) is of this site, scheme included, or trusted (a
    malformed one is not)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    return origin == own.lower() or origin in trusted_origins


def too_big(max_body_size: int) -> EventError:
    return EventError(413, f"Request body over {max_body_size} bytes")


def too_slow(timeout: float) -> EventError:
    return EventError(408, f"The request body did not arrive within {timeout:g} s")


#: A body declared this small that arrives in one piece is read without a timer (the usual case);
#: one larger, in pieces or of unknown length must arrive within the timeout.
SMALL_BODY = 64 * 1024


def declared_length(incoming: Incoming, max_body_size: int) -> int | None:
    """``Content-Length``, if given; 413 before reading when it already says the body is too big."""
    length = incoming.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    if int(length) > max_body_size:
        raise too_big(max_body_size)
    return int(length)


async def read_body(incoming: Incoming, max_body_size: int, timeout: float = 30.0) -> bytes:
    """The whole body, refused (413) as soon as it is known to pass ``max_body_size`` and (408)
    when it has not all arrived within ``timeout`` seconds."""
    declared = declared_length(incoming, max_body_size)
    if declared is not None and declared <= SMALL_BODY:
        message = await incoming.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body = message.get("body", b"")  # the usual case: all of it at once
            if len(body) > max_body_size:
                raise too_big(max_body_size)
            return bytes(body)
        chunks = bytearray(message.get("body", b""))
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
    else:
        chunks = bytearray()
    with anyio.move_on_after(timeout):
        while True:
            if len(chunks) > max_body_size:
                raise too_big(max_body_size)
            message = await incoming.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunks += message.get("body", b"")
            if not message.get("more_body", False):
                if len(chunks) > max_body_size:
                    raise too_big(max_body_size)
                return bytes(chunks)
    raise too_slow(timeout)


@dataclass
class Body:
    """What a request sent: Datastar's signals, or a form's fields (each name with all its
    values; a multipart form's files are ``UploadFile``s, closed by ``aclose``)."""

    signals: Signals = field(default_factory=Signals)
    form: dict[str, list[Any]] = field(default_factory=dict)
    uploads: FormData | None = None

    async def aclose(self) -> None:
        if self.uploads is not None:
            await self.uploads.close()


async def read_input(incoming: Incoming, max_body_size: int, timeout: float = 30.0) -> Body:
    """The signals in the ``datastar`` query parameter of GET/HEAD/DELETE requests, else the body:
    a JSON object of signals, or a urlencoded or multipart form (what Datastar's
    ``{contentType: 'form'}`` and plain HTML forms send), within ``timeout`` seconds."""
    if incoming.method in ("GET", "HEAD", "DELETE"):
        raw = incoming.query.get("datastar") if incoming.scope.get("query_string") else None
        return Body(parse_json(raw[-1].encode())) if raw and raw[-1] else Body()
    kind = content_type(incoming.headers)
    if kind == MULTIPART_TYPE:
        return await read_multipart(incoming, max_body_size, timeout)
    body = await read_body(incoming, max_body_size, timeout)
    if kind == FORM_TYPE:
        return Body(form=multi(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
    return Body(parse_json(body)) if body.strip() else Body()


async def read_multipart(incoming: Incoming, max_body_size: int, timeout: float = 30.0) -> Body:
    """A ``multipart/form-data`` body, read as it arrives (files spooled to disk past 1 MB),
    refused (413) once it passes ``max_body_size`` and (408) when not all there within ``timeout``."""
    declared_length(incoming, max_body_size)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await incoming.receive()
        received += len(message.get("body", b""))
        if received > max_body_size:
            raise too_big(max_body_size)
        return message

    try:
        form = None
        with anyio.move_on_after(timeout):
            form = await Request(incoming.scope, receive).form()
        if form is None:
            raise too_slow(timeout)
    except (MultiPartException, HTTPException, FormParserError) as exc:
        # older Starlettes let python-multipart's own parse errors through
        message = exc.message if isinstance(exc, MultiPartException) else getattr(exc, "detail", str(exc))
        raise EventError(400, f"Malformed form: {message}") from None
    # a file input left empty still sends a part, with no name and no bytes: that is no file
    items = [(k, v) for k, v in form.multi_items() if not (isinstance(v, UploadFile) and not v.filename and not v.size)]
    for name, value in items:  # whatever charset a part declared, what it gives must be text
        text = value.filename or "" if isinstance(value, UploadFile) else value
        if not (_is_text(name) and _is_text(text)):
            await form.close()
            raise EventError(400, f"Malformed form: {name!r} is not text (a lone surrogate); send UTF-8")
    return Body(form=multi(items), uploads=form)


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


#: How deep signals may nest: deeper values could exhaust the stack of whatever handles them next.
MAX_DEPTH = 64


class _NonFinite(Exception):
    """A number no page can hold: the body is read again, noting where."""


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NonFinite
    return number


def _no_constant(name: str) -> float:
    raise _NonFinite


#: One decoder for every body (``json.loads`` with hooks builds a decoder per call).
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def parse_json(body: bytes) -> Signals:
    """A JSON object of signals, refused (400) when malformed, not UTF-8 (RFC 8259: no UTF-16 or
    UTF-32, whose surrogates would slip past the checks), nested past ``MAX_DEPTH`` or holding
    text no store could keep (a lone surrogate), and (422, naming the signal) when it holds NaN or
    an infinite number anywhere, which no page can hold either."""
    numbers = Numbers()
    try:
        text = body.decode("utf-8")  # strict: no encoded surrogate gets through
        try:
            value = _DECODER.decode(text)
        except _NonFinite:
            value = json.loads(text, parse_constant=numbers.constant, parse_float=numbers.number)
    except UnicodeDecodeError:
        raise EventError(400, "Malformed JSON: the body must be UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise EventError(400, f"Malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EventError(400, "The body must be a JSON object of signals")
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise EventError(400, f"The signals nest deeper than {MAX_DEPTH} levels")
    if b"\\u" in body and b"\\ud" in body.lower():  # only a \\uXXXX escape can make a lone surrogate
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise EventError(400, "Malformed JSON: a \\u escape is half of a character (a lone surrogate)") from None
    if numbers.infinite:
        errors = {name: "Send a finite number." for name, item in value.items() if not _finite(item)}
        raise invalid("", errors)
    return Signals(value)


class Numbers:
    """``json.loads`` hooks that note a number no page can hold (NaN, Infinity, 1e999)."""

    def __init__(self) -> None:
        self.infinite = False

    def constant(self, name: str) -> float:
        self.infinite = True
        return math.nan

    def number(self, text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            self.infinite = True
        return number


def _finite(value: Any) -> bool:
    """Whether every number in ``value`` is finite."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest

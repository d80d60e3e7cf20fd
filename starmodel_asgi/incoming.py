"""One HTTP request as the endpoints read it: headers, cookies and query parsed once, on first
use, and its body (Datastar's signals, or a form) read within its bounds."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
from python_multipart.exceptions import FormParserError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request, cookie_parser
from starlette.types import Message, Receive, Scope

from starmodel_asgi.errors import EventError, invalid
from starmodel_asgi.values import Signals, is_datastar


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
        return is_datastar(self.headers)


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


JSON_TYPES = ("application/json", "text/json")
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
#: What a page of another site can send without a CORS preflight (an HTML form's encodings).
SIMPLE_TYPES = (FORM_TYPE, MULTIPART_TYPE, "text/plain")


def content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def too_big(max_body_size: int) -> EventError:
    return EventError(413, f"Request body over {max_body_size} bytes")


def gone() -> EventError:
    """The client went away before its whole body arrived: nobody reads the answer, nothing is
    logged as an error."""
    return EventError(400, "The client went away before sending its whole body")


def too_slow(timeout: float) -> EventError:
    return EventError(408, f"The request body did not arrive within {timeout:g} s")


#: A body declared this small that arrives in one piece is read without a timer (the usual case);
#: one larger, in pieces or of unknown length must arrive within the timeout.
SMALL_BODY = 64 * 1024


def declared_length(incoming: Incoming, max_body_size: int) -> int | None:
    """``Content-Length``, if given; 413 before reading when it already says the body is too big."""
    length = incoming.headers.get("content-length")
    if length is None or not (length.isascii() and length.isdigit()):
        return None
    if int(length) > max_body_size:
        raise too_big(max_body_size)
    return int(length)


def large_body(incoming: Incoming) -> bool:
    """Whether the request brings a body worth refusing before it is read: a multipart form, or
    a body past ``SMALL_BODY``, sent in pieces or of unknown length."""
    if incoming.method in ("GET", "HEAD", "DELETE"):
        return False
    length = incoming.headers.get("content-length")
    if length is None or not (length.isascii() and length.isdigit()) or int(length) > SMALL_BODY:
        return True
    return content_type(incoming.headers) == MULTIPART_TYPE


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
            raise gone()
    else:
        chunks = bytearray()
    with anyio.move_on_after(timeout):
        while True:
            if len(chunks) > max_body_size:
                raise too_big(max_body_size)
            message = await incoming.receive()
            if message["type"] == "http.disconnect":
                raise gone()
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


#: Nothing sent (most reads): one ``Body`` for all, never changed; its empty signals and form are
#: not handed on (``EventRequest`` has its own).
EMPTY = Body()


async def read_input(incoming: Incoming, max_body_size: int, timeout: float = 30.0) -> Body:
    """The signals in the ``datastar`` query parameter of GET/HEAD/DELETE requests, else the body:
    a JSON object of signals, or a urlencoded or multipart form (what Datastar's
    ``{contentType: 'form'}`` and plain HTML forms send), within ``timeout`` seconds."""
    if incoming.method in ("GET", "HEAD", "DELETE"):
        raw = incoming.query.get("datastar") if incoming.scope.get("query_string") else None
        return Body(parse_json(raw[-1].encode())) if raw and raw[-1] else EMPTY
    kind = content_type(incoming.headers)
    if kind == MULTIPART_TYPE:
        try:
            return await read_multipart(incoming, max_body_size, timeout)
        except ClientDisconnect:  # Starlette's form parser found the client gone
            raise gone() from None
    body = await read_body(incoming, max_body_size, timeout)
    if kind == FORM_TYPE:
        return Body(form=multi(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
    return Body(parse_json(body)) if body.strip() else EMPTY


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

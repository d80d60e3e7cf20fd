"""``Page``: a browser page's stand-in for testing your own pages, in-process, with no browser.

    async with Page(app) as page:             # your host app, or the StarModel itself
        await page.open("/")                  # the HTML page: its declared signals, its data-init
        answer = await page.run(Counter.increment(amount=2))
        assert answer.signals == {"counter": {"count": 2}}
        assert page.signals["counter"]["count"] == 2

It speaks to the ASGI app directly, as Datastar's browser client would: cookies kept, every
signal sent with each action (those whose name starts with ``_`` left out), answers applied to
``page.signals`` (only ``200`` answers, as the client does). ``page.live(...)`` reads a live stream
as it arrives.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote, urlencode, urlsplit

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import ASGIApp, Message, Scope

from starmodel_asgi.app import StarModel
from starmodel_asgi.events import Action

__all__ = ["Answer", "LivePage", "Page"]

logger = logging.getLogger("starmodel_asgi")

_ACTION = re.compile(r"""^\s*@(get|post|put|patch|delete)\(\s*'((?:[^'\\]|\\.)*)'\s*(?:,\s*(\{.*\}))?\s*\)\s*$""", re.S)
_ACTION_START = re.compile(r"@(?:get|post|put|patch|delete)\(")
_REDIRECT = re.compile(r"window\.location\s*=\s*'((?:[^'\\]|\\.)*)'")
#: the options of Datastar's fetch actions (``@post(url, {...})``)
_OPTIONS = {
    "contentType", "filterSignals", "selector", "headers", "openWhenHidden", "payload", "retry",
    "retryInterval", "retryScaler", "retryMaxWaitMs", "retryMaxCount", "requestCancellation",
}  # fmt: skip
_LOCAL = re.compile(r"(^|\.)_")  # Datastar's default exclude: signals whose name starts with "_"


@dataclass
class Answer:
    """What one request answered: ``status``, the signal patches it carried (merged, as the page
    applies them), its element patches as ``(selector, mode, html)``, where it sends the page
    (``redirect``), and the raw ``headers`` and ``text``."""

    status: int
    signals: dict[str, Any] = field(default_factory=dict)
    elements: list[tuple[str, str, str]] = field(default_factory=list)
    redirect: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    #: each signal patch as sent, with its ``onlyIfMissing``, applied in order to the page
    patches: list[tuple[dict[str, Any], bool]] = field(default_factory=list, repr=False)
    #: how many datastar events it carried
    events: int = field(default=0, repr=False)

    def json(self) -> Any:
        return json.loads(self.text)

    def apply_to(self, signals: dict[str, Any]) -> None:
        """Apply the signal patches to a page's signals, as Datastar's client does."""
        for patch, only_if_missing in self.patches:
            merge(signals, patch, only_if_missing)

    def _read(self, events: list[tuple[str, dict[str, list[str]]]]) -> None:
        for name, data in events:
            self.events += 1
            if name == "datastar-patch-signals":
                patch = json.loads("\n".join(data.get("signals", ["{}"])))
                self.patches.append((patch, data.get("onlyIfMissing") == ["true"]))
                merge(self.signals, patch, keep_none=True)  # None says "removed"
            elif name == "datastar-patch-elements":
                html = "\n".join(data.get("elements", []))
                redirect = _REDIRECT.search(html) if data.get("selector") == ["body"] else None
                if redirect is not None:
                    self.redirect = json.loads('"' + redirect.group(1).replace("\\'", "'") + '"')
                    continue
                mode = (data.get("mode") or ["outer"])[0]
                selector = (data.get("selector") or [""])[0]
                if selector or mode not in ("outer", "replace"):
                    self.elements.append((selector, mode, html))
                else:  # each top-level element patches the one with its id
                    self.elements += [(f"#{id}" if id else "", mode, part) for id, part in top_level(html)]


class Page:
    """One browser tab on ``app``: cookies, the page's merged signals, and its requests.

    ``app`` is any ASGI app: the host app with StarModel mounted inside (actions' paths are
    absolute, ``/sm/...``), or a ``StarModel`` alone (it is then addressed at its ``base_path``).
    ``async with Page(app)`` also runs the app's lifespan (background tasks it starts), when the
    app has one.
    """

    def __init__(self, app: ASGIApp, base_url: str = "http://testserver", headers: Mapping[str, str] | None = None):
        self.app = app
        parts = urlsplit(base_url)
        self.scheme, self.host = parts.scheme or "http", parts.netloc or "testserver"
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.cookies: dict[str, str] = {}
        self.signals: dict[str, Any] = {}
        self._root_path = app.base_path if isinstance(app, StarModel) else ""
        self._lifespan: _Lifespan | None = None

    async def __aenter__(self) -> Self:
        self._lifespan = _Lifespan(self.app)
        await self._lifespan.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lifespan is not None:
            await self._lifespan.stop()

    # -- what a page does --------------------------------------------------------------

    async def open(self, path: str, timeout: float = 5.0) -> Answer:
        """Load an HTML page: its ``data-signals`` and ``data-bind`` inputs become ``page.signals``,
        then each ``data-init`` action runs as the browser would (a live one until its first answer,
        for at most ``timeout`` seconds). The answer's ``signals``, ``elements`` and ``redirect``
        are what those actions brought."""
        answer = await self.request("GET", path, accept="text/html")
        if answer.status != 200:
            return answer
        reader = _PageReader()
        reader.feed(answer.text)
        self.signals = {}
        for declared, if_missing in reader.signals:
            merge(self.signals, declared, only_if_missing=if_missing)
        for action in reader.inits:
            if parse_action(action)[1].split("?")[0].endswith("/live"):
                async with self.live(action, timeout) as stream:
                    first = await stream.next()
            else:
                first = await self.run(action)
            merge(answer.signals, first.signals, keep_none=True)
            answer.patches += first.patches
            answer.elements += first.elements
            answer.redirect = first.redirect or answer.redirect
        return answer

    async def run(self, action: str, **signals: Any) -> Answer:
        """Run a Datastar action (``Counter.increment(amount=2)``, or the string a page holds,
        ``"@post('/sm/counter/increment')"``) after setting ``signals`` as the page's inputs would
        (``counter={"step": 3}``, ``draft="hi"``): the signals go with it as the browser sends them
        (all but those starting with ``_``, or as the action's ``filterSignals`` and ``payload`` say)."""
        method, url, options = parse_action(action)
        if options.get("contentType") == "form":
            raise ValueError(f"{action} posts a form: use page.submit(action, fields, files=...)")
        merge(self.signals, signals)
        sent = options["payload"] if "payload" in options else filtered(self.signals, options.get("filterSignals"))
        return await self._send(method, url, self._outgoing(method, sent), options.get("headers"))

    async def submit(
        self,
        action: str,
        fields: Mapping[str, str | list[str]],
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> Answer:
        """Run an action with ``{contentType: 'form'}`` as a form would post it: ``fields`` (name
        -> value(s)) and ``files`` (name -> ``(filename, content, content type)``), multipart when
        there are files, else urlencoded. Datastar sends no signals with a form."""
        method, url, options = parse_action(action)
        pairs = [(k, v) for k, values in fields.items() for v in ([values] if isinstance(values, str) else values)]
        payload: tuple[bytes, str] | None = None
        if method in ("GET", "DELETE"):
            url += ("&" if "?" in url else "?") + urlencode(pairs)
        elif files:
            payload = multipart(pairs, files)
        else:
            payload = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
        return await self._send(method, url, payload, options.get("headers"))

    @asynccontextmanager
    async def live(self, action: str, timeout: float = 5.0) -> AsyncIterator[LivePage]:
        """Open a live stream (``Counter.holder(sync="live")``'s ``@get('/sm/counter/live')``, a
        list's ``/sm/message/live``, or the path) and read it as it arrives: ``await stream.next()``
        is the next answer, applied to ``page.signals`` when the stream's ``status`` is 200.
        Leaving the block disconnects."""
        method, url, options = parse_action(action) if action.lstrip().startswith("@") else ("GET", action, {})
        sent = filtered(self.signals, options.get("filterSignals"))
        scope, body = self._scope(
            method, url, self._outgoing(method, sent), "text/event-stream", options.get("headers")
        )
        exchange = _Exchange(self.app, scope, body)
        failure: BaseException | None = None  # raised as itself, not wrapped in the task group's group
        async with anyio.create_task_group() as tg:
            await exchange.start(tg)
            try:
                stream = LivePage(self, exchange, url, timeout)
                await stream.started()
                yield stream
            except BaseException as exc:
                failure = exc
            finally:
                if not await exchange.disconnect():
                    tg.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """A plain request with this page's cookies (no Datastar header): a JSON client, a link.
        An exception the host app lets through (a host route's own bug) is raised here."""
        _refuse_live(path)
        payload = (body, content_type or "application/json") if body is not None else None
        scope, sent = self._scope(method, path, payload, accept, headers, datastar=False)
        return self._answered(await _Exchange(self.app, scope, sent).run())

    # -- the wire ----------------------------------------------------------------------

    @staticmethod
    def _outgoing(method: str, signals: Any) -> tuple[bytes, str] | str | None:
        """The signals Datastar sends: a JSON body, or for GET and DELETE the ``datastar`` query value."""
        sent = json.dumps(signals, separators=(",", ":"))
        return sent if method in ("GET", "DELETE") else (sent.encode(), "application/json")

    async def _send(
        self,
        method: str,
        url: str,
        payload: tuple[bytes, str] | str | None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        _refuse_live(url)
        scope, sent = self._scope(method, url, payload, "text/event-stream, text/html, application/json", headers)
        answer = self._answered(await _Exchange(self.app, scope, sent).run())
        if answer.status == 200:  # Datastar's client applies only 200 answers
            answer.apply_to(self.signals)
        return answer

    def _scope(
        self,
        method: str,
        url: str,
        payload: tuple[bytes, str] | str | None,
        accept: str,
        extra: Mapping[str, str] | None = None,
        datastar: bool = True,
    ) -> tuple[Scope, bytes]:
        """The ASGI scope of a request from this page, and its body."""
        path, _, query = url.partition("?")
        if isinstance(payload, str):  # signals in the query string, in place of any there
            kept = [part for part in query.split("&") if part and not part.startswith("datastar=")]
            query = "&".join([*kept, "datastar=" + quote(payload, safe="")])
            payload = None
        headers = {"host": self.host, "accept": accept, **self.headers}
        if datastar:
            headers["datastar-request"] = "true"
        if method not in ("GET", "HEAD"):
            headers["origin"] = f"{self.scheme}://{self.host}"
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = b""
        if payload is not None:
            body, headers["content-type"] = payload
            headers["content-length"] = str(len(body))
        headers.update({k.lower(): v for k, v in (extra or {}).items()})
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": self.scheme,
            "server": (self.host.partition(":")[0], int(self.host.partition(":")[2] or 80)),
            "client": ("127.0.0.1", 50000),
            "root_path": self._root_path,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            "state": {},
        }
        return scope, body

    def _answered(self, exchange: _Exchange) -> Answer:
        self._keep_cookies(exchange.raw_headers)
        answer = Answer(exchange.status, headers=exchange.headers, text=exchange.text)
        if exchange.headers.get("content-type", "").startswith("text/event-stream"):
            answer._read(parse_events(answer.text))
        elif 300 <= answer.status < 400:
            answer.redirect = exchange.headers.get("location")
        return answer

    def _keep_cookies(self, headers: list[tuple[str, str]]) -> None:
        for name, value in headers:
            if name != "set-cookie":
                continue
            for key, morsel in SimpleCookie(value).items():
                expired = morsel["max-age"] in ("0", "-1") or not morsel.value
                if expired:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value


class LivePage:
    """An open live stream: ``await stream.next()`` is what arrived next, applied to the page
    (when the stream's ``status`` is 200, as the client does)."""

    def __init__(self, page: Page, exchange: _Exchange, url: str, timeout: float) -> None:
        self.page, self._exchange, self.url, self.timeout = page, exchange, url, timeout
        self.status = 0
        self._buffer = ""

    async def started(self) -> None:
        try:
            with anyio.fail_after(self.timeout):
                self.status = await self._exchange.started()
        except TimeoutError:
            raise TimeoutError(f"{self.url} did not answer within {self.timeout} s") from None
        self.page._keep_cookies(self._exchange.raw_headers)

    async def next(self, timeout: float | None = None) -> Answer:
        """The next datastar events to arrive (keep-alives skipped), as one answer; ``TimeoutError``
        after ``timeout`` seconds (the stream's default, 5) with nothing, ``EOFError`` when it ended."""
        answer = Answer(self.status, headers=self._exchange.headers)
        wait = self.timeout if timeout is None else timeout
        try:
            with anyio.fail_after(wait):
                while not answer.events:
                    chunk = await self._exchange.chunk()
                    if chunk is None:
                        raise EOFError(f"{self.url} ended (status {self.status}): {self._buffer[-300:]!r}")
                    self._buffer += chunk
                    complete, sep, self._buffer = self._buffer.rpartition("\n\n")
                    answer.text += complete + sep
                    answer._read(parse_events(complete + sep))
        except TimeoutError:
            raise TimeoutError(f"nothing arrived on {self.url} within {wait} s") from None
        if self.status == 200:
            answer.apply_to(self.page.signals)
        return answer

    async def until(self, condition: Callable[[Answer], object], timeout: float | None = None) -> Answer:
        """The first answer from now on for which ``condition(answer)`` is true (each one applied to
        the page as it comes): ``await stream.until(lambda a: a.elements)``; ``TimeoutError`` after
        ``timeout`` seconds in all (the stream's default, 5)."""
        wait = self.timeout if timeout is None else timeout
        deadline = anyio.current_time() + wait
        while True:
            answer = await self.next(max(deadline - anyio.current_time(), 0))
            if condition(answer):
                return answer


class _Exchange:
    """One request to the ASGI app, its answer kept as it streams."""

    def __init__(self, app: ASGIApp, scope: Scope, body: bytes = b"") -> None:
        self.app, self.scope = app, scope
        self._body: bytes | None = body
        self.status = 0
        self.raw_headers: list[tuple[str, str]] = []
        self.headers: dict[str, str] = {}
        self.text = ""
        self._disconnected = anyio.Event()
        self._chunks: MemoryObjectSendStream[str | None]
        self._received: MemoryObjectReceiveStream[str | None]
        self._chunks, self._received = anyio.create_memory_object_stream[str | None](math.inf)
        self._decoder = codecs.getincrementaldecoder("utf-8")()  # a character may span two writes
        self._head = anyio.Event()
        self._done = anyio.Event()
        self._failure: BaseException | None = None

    async def run(self) -> _Exchange:
        await self.app(self.scope, self._receive, self._send)
        self._chunks.send_nowait(None)
        while (chunk := self._received.receive_nowait()) is not None:
            self.text += chunk
        return self

    async def start(self, tg: TaskGroup) -> None:
        tg.start_soon(self._run_streaming)

    async def _run_streaming(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        except BaseException as exc:  # handed to the reader, who raises it
            self._failure = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._head.set()
            self._done.set()
            self._chunks.send_nowait(None)

    async def started(self) -> int:
        await self._head.wait()
        self._raise_failure()
        return self.status

    async def chunk(self) -> str | None:
        chunk = await self._received.receive()
        if chunk is None:
            self._raise_failure()
        return chunk

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def disconnect(self) -> bool:
        """Tells the app the client went away; whether it finished within 5 seconds."""
        self._disconnected.set()
        with anyio.move_on_after(5):
            await self._done.wait()
        return self._done.is_set()

    async def _receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.raw_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in message["headers"]]
            self.headers = dict(self.raw_headers)
            if "content-encoding" in self.headers:
                raise AssertionError("Page sends no Accept-Encoding: the answer should not be compressed")
            self._head.set()
        elif message["type"] == "http.response.body" and message.get("body"):
            self._chunks.send_nowait(self._decoder.decode(message["body"]))


class _Lifespan:
    """Runs an app's ASGI lifespan; an app without one (it raises on the scope, or returns without
    a word) is taken as having nothing to start, as uvicorn does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._to_app: MemoryObjectSendStream[Message]
        self._from_page: MemoryObjectReceiveStream[Message]
        self._to_app, self._from_page = anyio.create_memory_object_stream[Message](math.inf)
        self._replies: MemoryObjectSendStream[Message]
        self._from_app: MemoryObjectReceiveStream[Message]
        self._replies, self._from_app = anyio.create_memory_object_stream[Message](math.inf)
        self._answered: set[str] = set()
        self._tg: TaskGroup | None = None

    async def start(self) -> None:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            self._tg.start_soon(self._run)
            await self._to_app.send({"type": "lifespan.startup"})
            reply = await self._from_app.receive()
        except BaseException:
            await self._close()
            raise
        if reply["type"] == "lifespan.startup.failed":
            await self._close()
            raise RuntimeError(f"the app's lifespan failed to start: {reply.get('message', '')}")

    async def _run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

        async def send(message: Message) -> None:
            self._answered.add(message["type"].rpartition(".")[0])  # lifespan.startup, lifespan.shutdown
            await self._replies.send(message)

        try:
            await self.app(scope, self._from_page.receive, send)
        except Exception:
            if "lifespan.startup" in self._answered:  # it started, then crashed: the app's own bug
                logger.exception("the app's lifespan failed")
            else:  # it refused the scope: no lifespan, nothing to run
                logger.debug("the app has no lifespan", exc_info=True)
        for phase in ("lifespan.startup", "lifespan.shutdown"):
            if phase not in self._answered:
                await self._replies.send({"type": f"{phase}.complete"})

    async def stop(self) -> None:
        if self._tg is None:
            return
        await self._to_app.send({"type": "lifespan.shutdown"})
        reply: Message = {}
        with anyio.move_on_after(10):
            while not (reply := await self._from_app.receive())["type"].startswith("lifespan.shutdown."):
                pass
        await self._close()
        if reply.get("type") == "lifespan.shutdown.failed":
            raise RuntimeError(f"the app's lifespan failed to shut down: {reply.get('message', '')}")

    async def _close(self) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)


class _PageReader(HTMLParser):
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


def _refuse_live(url: str) -> None:
    if url.split("?")[0].endswith("/live"):
        raise ValueError(f"{url} is a live stream: read it with `async with page.live(action) as stream`")


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


def parse_events(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """SSE text -> ``(event name, {data key: [lines]})`` per event, as Datastar's client splits them."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "", dict[str, list[str]]()
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                key, _, value = line[5:].removeprefix(" ").partition(" ")
                data.setdefault(key, []).append(value)
        if name.startswith("datastar"):
            events.append((name, data))
    return events


def multipart(pairs: list[tuple[str, str]], files: Mapping[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type."""
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in pairs:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content, content_type) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"

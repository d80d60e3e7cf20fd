"""``Page``, one browser tab on an app, and ``LivePage``, a live stream it reads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit

import anyio
from datastar_py.consts import DATASTAR_KEY
from starlette.types import ASGIApp, Scope

from starmodel_asgi.app import StarModel
from starmodel_asgi.testing.expressions import parse_action
from starmodel_asgi.testing.html import PageReader
from starmodel_asgi.testing.signals import filtered, merge
from starmodel_asgi.testing.sse import Answer, parse_events
from starmodel_asgi.testing.transport import Exchange, Lifespan, multipart, refuse_live


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
        self._lifespan: Lifespan | None = None

    async def __aenter__(self) -> Self:
        self._lifespan = Lifespan(self.app)
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
        reader = PageReader()
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
        exchange = Exchange(self.app, scope, body)
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
        refuse_live(path)
        payload = (body, content_type or "application/json") if body is not None else None
        scope, sent = self._scope(method, path, payload, accept, headers, datastar=False)
        return self._answered(await Exchange(self.app, scope, sent).run())

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
        refuse_live(url)
        scope, sent = self._scope(method, url, payload, "text/event-stream, text/html, application/json", headers)
        answer = self._answered(await Exchange(self.app, scope, sent).run())
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
            kept = [part for part in query.split("&") if part and not part.startswith(f"{DATASTAR_KEY}=")]
            query = "&".join([*kept, f"{DATASTAR_KEY}=" + quote(payload, safe="")])
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
            "state": dict(self._lifespan.state) if self._lifespan is not None else {},
        }
        return scope, body

    def _answered(self, exchange: Exchange) -> Answer:
        self._keep_cookies(exchange.raw_headers)
        answer = Answer(exchange.status, headers=exchange.headers, text=exchange.text)
        if exchange.headers.get("content-type", "").startswith("text/event-stream"):
            answer.add_events(parse_events(answer.text))
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

    def __init__(self, page: Page, exchange: Exchange, url: str, timeout: float) -> None:
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
                    answer.add_events(parse_events(complete + sep))
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

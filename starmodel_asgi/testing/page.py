"""``Page``, one browser tab on an app, and ``LivePage``, a live stream it reads."""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from datastar_py.consts import DATASTAR_KEY
from starlette.types import ASGIApp

from starmodel_asgi.app import StarModel
from starmodel_asgi.testing.expressions import parse_action
from starmodel_asgi.testing.html import PageReader
from starmodel_asgi.testing.signals import filtered, merge
from starmodel_asgi.testing.sse import Answer, Event, parse_events
from starmodel_asgi.testing.transport import Lifespan, StreamingTransport, refuse_live

RequestParts = dict[str, Any]  # httpx's keyword arguments for a request's body or query


class Page:
    """One browser tab on ``app``: cookies, the page's merged signals, and its requests.

    ``app`` is any ASGI app: the host app with StarModel mounted inside (actions' paths are
    absolute, ``/sm/...``), or a ``StarModel`` alone (it is then addressed at its ``base_path``).
    ``async with Page(app)`` also runs the app's lifespan (background tasks it starts), when the
    app has one. ``app`` may also be an ``httpx.AsyncClient`` (a real server, say): the page then
    speaks through it, with its cookies and ``base_url``, and runs no lifespan.
    """

    def __init__(
        self,
        app: ASGIApp | httpx.AsyncClient,
        base_url: str = "http://testserver",
        headers: Mapping[str, str] | None = None,
    ):
        self.app = app
        self.signals: dict[str, Any] = {}
        self._lifespan: Lifespan | None = None
        self._transport: StreamingTransport | None = None
        if isinstance(app, httpx.AsyncClient):
            self.client = app
        else:
            root_path = app.base_path if isinstance(app, StarModel) else ""
            self._transport = StreamingTransport(app, root_path=root_path, state=self._state)
            self._lifespan = Lifespan(app)
            self.client = httpx.AsyncClient(transport=self._transport, base_url=base_url)
            del self.client.headers["accept-encoding"]  # Page reads answers as sent: not compressed
        self.headers = dict(headers or {})
        self._stack = AsyncExitStack()

    @property
    def cookies(self) -> httpx.Cookies:
        """The page's cookies (httpx's jar: ``Path``, ``Max-Age`` and ``Expires`` applied)."""
        return self.client.cookies

    def _state(self) -> Mapping[str, Any]:
        return self._lifespan.state if self._lifespan is not None else {}

    async def __aenter__(self) -> Self:
        await self._stack.__aenter__()
        if self._transport is not None:
            assert self._lifespan is not None
            await self._lifespan.start()
            self._stack.push_async_callback(self._lifespan.stop)
            await self._stack.enter_async_context(self.client)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

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
        return await self._send(method, url, self._outgoing(method, url, sent), options.get("headers"))

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
        form = {name: [v for n, v in pairs if n == name] for name, _ in pairs}
        payload: RequestParts = {"data": form, "files": dict(files or {})}
        if method in ("GET", "DELETE"):
            payload = {"params": httpx.URL(url).params.merge(tuple(pairs))}
        return await self._send(method, url, payload, options.get("headers"))

    @asynccontextmanager
    async def live(self, action: str, timeout: float = 5.0) -> AsyncIterator[LivePage]:
        """Open a live stream (``Counter.holder(sync="live")``'s ``@get('/sm/counter/live')``, a
        list's ``/sm/message/live``, or the path) and read it as it arrives: ``await stream.next()``
        is the next answer, applied to ``page.signals`` when the stream's ``status`` is 200.
        Leaving the block disconnects."""
        method, url, options = parse_action(action) if action.lstrip().startswith("@") else ("GET", action, {})
        sent = filtered(self.signals, options.get("filterSignals"))
        payload = self._outgoing(method, url, sent)
        request = self._request(method, url, payload, "text/event-stream", options.get("headers"))
        request.extensions["stream"] = True  # whatever format the action's headers ask for
        failure: BaseException | None = None  # raised as itself, not wrapped in the task group's group
        async with AsyncExitStack() as stack:
            if self._transport is not None:
                await stack.enter_async_context(self._transport.streaming())
            try:
                with anyio.fail_after(timeout):
                    response = await self.client.send(request, stream=True)
            except TimeoutError:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            stack.push_async_callback(response.aclose)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            stream = LivePage(self, response, url, timeout)
            tg.start_soon(stream._read)
            try:
                yield stream
            except BaseException as exc:
                failure = exc
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
        payload: RequestParts = {}
        if body is not None:
            payload = {"content": body, "headers": {"content-type": content_type or "application/json"}}
        request = self._request(method, path, payload, accept, headers, datastar=False)
        return self._answered(await self.client.send(request))

    # -- the wire ----------------------------------------------------------------------

    @staticmethod
    def _outgoing(method: str, url: str, signals: Any) -> RequestParts:
        """The signals Datastar sends: a JSON body, or for GET and DELETE the ``datastar`` query
        value (in place of any the URL holds)."""
        sent = json.dumps(signals, separators=(",", ":"))
        if method in ("GET", "DELETE"):
            return {"params": httpx.URL(url).params.set(DATASTAR_KEY, sent)}
        return {"content": sent.encode(), "headers": {"content-type": "application/json"}}

    async def _send(
        self, method: str, url: str, payload: RequestParts, headers: Mapping[str, str] | None = None
    ) -> Answer:
        refuse_live(url)
        accept = "text/event-stream, text/html, application/json"
        answer = self._answered(await self.client.send(self._request(method, url, payload, accept, headers)))
        if answer.status == 200:  # Datastar's client applies only 200 answers
            answer.apply_to(self.signals)
        return answer

    def _request(
        self,
        method: str,
        url: str,
        payload: RequestParts,
        accept: str,
        extra: Mapping[str, str] | None = None,
        datastar: bool = True,
    ) -> httpx.Request:
        """A request from this page: its headers as Datastar's client sends them."""
        base = self.client.base_url
        headers = {"accept": accept, **self.headers, **payload.get("headers", {})}
        if datastar:
            headers["datastar-request"] = "true"
        if method not in ("GET", "HEAD"):
            headers["origin"] = f"{base.scheme}://{base.netloc.decode()}"
        headers.update(extra or {})
        if "params" in payload:
            url = url.partition("?")[0]
        body = {k: v for k, v in payload.items() if k != "headers"}
        return self.client.build_request(method, url, headers=headers, **body)

    @staticmethod
    def _answered(response: httpx.Response) -> Answer:
        answer = Answer(response.status_code, headers=dict(response.headers), text=response.text)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            answer.add_events(parse_events(answer.text))
        elif 300 <= answer.status < 400:
            answer.redirect = response.headers.get("location")
        return answer


class LivePage:
    """An open live stream, read as it arrives: ``await stream.next()`` is what arrived since the
    last ``next``, applied to the page (when the stream's ``status`` is 200, as the client does).
    What the whole stream carried so far is ``stream.text``, ``stream.signals`` (its patches
    merged, ``None`` where one removes a signal), ``stream.elements`` and ``stream.events`` (each
    datastar event as sent); ``ended`` says the server closed it, ``cut`` that the connection
    broke. ``await stream.wait(condition)`` waits until the whole stream so far meets it."""

    def __init__(self, page: Page, response: httpx.Response, url: str, timeout: float) -> None:
        self.page, self.response, self.url, self.timeout = page, response, url, timeout
        self.status = response.status_code
        self.headers = dict(response.headers)
        self.received = Answer(self.status, headers=self.headers)
        self.ended = self.cut = False
        self.events: list[Event] = []
        self._unread = Answer(self.status, headers=self.headers)
        self._buffer = ""
        self._changed = anyio.Event()
        self._failure: BaseException | None = None

    @property
    def text(self) -> str:
        """The stream's whole body so far, as sent."""
        return self.received.text

    @property
    def signals(self) -> dict[str, Any]:
        """Every signal patch the stream carried so far, merged (``None`` where one removes a signal)."""
        return self.received.signals

    @property
    def elements(self) -> list[tuple[str, str, str]]:
        """Every element patch the stream carried so far, as ``(selector, mode, html)``."""
        return self.received.elements

    async def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")()  # a character may span two writes
        try:
            async for chunk in self.response.aiter_bytes():
                self._buffer += decoder.decode(chunk)
                complete, sep, self._buffer = self._buffer.rpartition("\n\n")
                if sep:
                    self._arrived(complete + sep)
        except httpx.TransportError:  # the server went away mid-stream (a killed worker)
            self.cut = True
        except Exception as exc:  # the app's own failure, raised to the test where it waits
            self._failure = exc
        self.ended = True
        self._changed.set()

    def _arrived(self, text: str) -> None:
        events = parse_events(text)
        self.events += [Event(name, lines) for name, lines in events]
        for answer in (self.received, self._unread):
            answer.text += text
            answer.add_events(events)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, condition: Callable[[LivePage], object], timeout: float | None = None) -> None:
        """Until ``condition(stream)`` holds for what the stream carried so far
        (``await stream.wait(lambda s: s.signals.get("count") == 3)``); ``TimeoutError`` after
        ``timeout`` seconds (the stream's default, 5)."""
        wait = self.timeout if timeout is None else timeout
        try:
            with anyio.fail_after(wait):
                while not condition(self):
                    self._raise_failure()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.url}: still not so after {wait} s; it sent {self.text[-300:]!r}") from None

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def next(self, timeout: float | None = None) -> Answer:
        """The datastar events that arrived since the last ``next`` (keep-alives skipped), as one
        answer, waiting for one if none has; ``TimeoutError`` after ``timeout`` seconds (the
        stream's default, 5) with nothing, ``EOFError`` when it ended."""
        wait = self.timeout if timeout is None else timeout
        try:
            with anyio.fail_after(wait):
                while not self._unread.events:
                    self._raise_failure()
                    if self.ended:
                        raise EOFError(f"{self.url} ended (status {self.status}): {self.text[-300:]!r}")
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"nothing arrived on {self.url} within {wait} s") from None
        answer, self._unread = self._unread, Answer(self.status, headers=self.headers)
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

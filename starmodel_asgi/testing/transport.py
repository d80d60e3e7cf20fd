"""The page's wire: httpx's transport to an ASGI app in this process, answers streamed as the
app sends them, and the app's lifespan."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import ASGIApp, Message, Scope

logger = logging.getLogger("starmodel_asgi")


class StreamingTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=StreamingTransport(app))``: requests to ``app`` in this
    process. Unlike ``httpx.ASGITransport``, which waits for the whole answer, the answer to a GET
    that accepts ``text/event-stream`` (a live stream), or of a request sent with
    ``extensions={"stream": True}``, arrives as the app sends it, so it can be
    read with ``client.stream(...)``; leaving the stream tells the app the client went away
    (``http.disconnect``). Other answers end on their own and are read whole, which costs no task.

    Streaming needs the client entered (``async with httpx.AsyncClient(...)``): it runs the app
    beside the caller. A client used without ``async with`` gets each answer once the app has
    finished, as with httpx's own transport. An exception the app lets through is raised to the
    caller, as a server would log it. ``state`` gives each request's ``scope["state"]`` (a copy,
    as servers give lifespan state)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        root_path: str = "",
        client: tuple[str, int] = ("127.0.0.1", 50000),
        state: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.app, self.root_path, self.client = app, root_path, client
        self._state = state
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)

    @asynccontextmanager
    async def streaming(self) -> AsyncIterator[None]:
        """Streams answers within the block, if the client is not entered already."""
        if self._tg is not None:
            yield
            return
        async with self:
            yield

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport method: runs ``request`` through the app and returns once the answer
        has started; the body streams while the client is entered, else it is already complete."""
        exchange = Exchange(self.app, self._scope(request), request)
        if self._tg is None or not streams(request):  # the whole answer: as cheap as httpx's own transport
            await self.app(exchange.scope, exchange.receive, exchange.send)
            content = b"".join(chunk for chunk in exchange.chunks if chunk is not None)
            return httpx.Response(exchange.head(), headers=exchange.headers, content=content, request=request)
        self._tg.start_soon(exchange.run)
        status = await exchange.started()
        return httpx.Response(status, headers=exchange.headers, stream=Body(exchange), request=request)

    def _scope(self, request: httpx.Request) -> Scope:
        url = request.url
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "client": self.client,
            "root_path": self.root_path,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "state": dict(self._state()) if self._state is not None else {},
        }


def streams(request: httpx.Request) -> bool:
    """Whether an answer may be read as it arrives: a GET that accepts an event stream (a live
    stream, a GET event), or any request sent with ``extensions={"stream": True}`` (a live stream
    asked for in another format). Other answers (a POSTed event, a page, JSON) end on their own,
    so they are read whole."""
    if request.extensions.get("stream"):
        return True
    return request.method == "GET" and "text/event-stream" in request.headers.get("accept", "")


class Body(httpx.AsyncByteStream):
    """An answer's body as the app sends it; closing it early is the client going away."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.exchange.chunk()) is not None:
            yield chunk

    async def aclose(self) -> None:
        await self.exchange.disconnect()


class Exchange:
    """One request to the ASGI app, its answer kept as it streams."""

    def __init__(self, app: ASGIApp, scope: Scope, request: httpx.Request) -> None:
        self.app, self.scope = app, scope
        self._body: AsyncIterator[bytes] | None = None
        try:
            self._whole: bytes | None = request.content  # a body given whole: one message
        except httpx.RequestNotRead:  # a streamed body: a message per piece
            self._whole, self._body = None, aiter(request.stream)  # type: ignore[arg-type]
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes | None] = deque()
        self._arrived = anyio.Event()
        self._head = anyio.Event()
        self._finished = anyio.Event()
        self._disconnected: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._failure: BaseException | None = None

    async def run(self) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                await self.app(self.scope, self.receive, self.send)
        except Exception as exc:  # handed to the reader, who raises it
            self._failure = exc
        finally:
            self._scope = None
            self._finished.set()
            self._head.set()
            self._put(None)

    async def started(self) -> int:
        await self._head.wait()
        return self.head()

    def head(self) -> int:
        if self.status == 0:
            self._raise_failure()
            raise RuntimeError(f"{self.scope['method']} {self.scope['path']}: the app ended without an answer")
        return self.status

    async def chunk(self) -> bytes | None:
        while not self.chunks:
            await self._arrived.wait()
            self._arrived = anyio.Event()
        chunk = self.chunks.popleft()
        if chunk is None:
            self.chunks.append(None)  # the end stays the end
            self._raise_failure()
        return chunk

    def _put(self, chunk: bytes | None) -> None:
        self.chunks.append(chunk)
        self._arrived.set()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def disconnect(self) -> None:
        """Tells the app the client went away; an app still running 5 seconds later is cancelled."""
        if self._scope is None:  # it has finished
            return
        if self._disconnected is None:
            self._disconnected = anyio.Event()
        self._disconnected.set()
        with anyio.move_on_after(5):
            await self._finished.wait()
        if self._scope is not None:
            self._scope.cancel()

    async def receive(self) -> Message:
        if self._whole is not None:
            body, self._whole = self._whole, None
            return {"type": "http.request", "body": body, "more_body": False}
        if self._body is not None:
            try:
                return {"type": "http.request", "body": await anext(self._body), "more_body": True}
            except StopAsyncIteration:
                self._body = None
                return {"type": "http.request", "body": b"", "more_body": False}
        if self._disconnected is None:
            self._disconnected = anyio.Event()
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
            self._head.set()
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self._put(message["body"])
            if not message.get("more_body", False):  # the answer is whole: a server ends it there,
                self._put(None)  # and the app's next receive() hears the client gone, as uvicorn's does
                if self._disconnected is None:
                    self._disconnected = anyio.Event()
                self._disconnected.set()


class Lifespan:
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
        #: what the app's lifespan put in its state; each request gets a copy, as servers do
        self.state: dict[str, Any] = {}

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
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}

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


def refuse_live(url: str) -> None:
    if url.split("?")[0].endswith("/live"):
        raise ValueError(f"{url} is a live stream: read it with `async with page.live(action) as stream`")

"""The page's wire: one request to the ASGI app with its answer kept as it streams, the app's
lifespan, and a multipart body."""

from __future__ import annotations

import codecs
import logging
import math
import secrets
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import ASGIApp, Message, Scope

logger = logging.getLogger("starmodel_asgi")


class Exchange:
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

    async def run(self) -> Exchange:
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

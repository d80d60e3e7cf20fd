"""A minimal ASGI client for the benchmarks: what a server would send, without the network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Send


@dataclass(kw_only=True)
class HeldOpen:
    """A client of a stream: sends its empty request, then waits until ``close()`` to go away."""

    closed: anyio.Event = field(default_factory=anyio.Event)
    _requested: bool = False

    async def receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.closed.wait()
        return {"type": "http.disconnect"}

    def close(self) -> None:
        self.closed.set()


def scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [*headers, (b"host", b"bench")],
        "server": ("bench", 80),
        "client": ("127.0.0.1", 1),
    }


@dataclass
class Driver:
    """Calls an ASGI app as a server would, keeping the cookies it sets."""

    app: ASGIApp
    cookies: dict[bytes, bytes] = field(default_factory=lambda: {b"sid": b"bench"})

    def cookie_header(self) -> tuple[bytes, bytes]:
        return b"cookie", b"; ".join(k + b"=" + v for k, v in self.cookies.items())

    async def __call__(
        self, method: str, path: str, query: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> int:
        """One request with a body; the status of its answer."""
        headers = [*headers, self.cookie_header(), (b"content-length", str(len(body)).encode())]
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = 0

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message["headers"]:
                    if name == b"set-cookie":
                        key, _, rest = value.partition(b"=")
                        self.cookies[key] = rest.split(b";")[0]

        await self.app(scope(method, path, query, headers), receive, send)
        return status

    async def stream(
        self, path: str, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send, query: bytes = b""
    ) -> None:
        """A GET left open: ``receive`` decides when the client goes away."""
        await self.app(scope("GET", path, query, [*headers, self.cookie_header()]), receive, send)

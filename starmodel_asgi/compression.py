"""Compressed answers (the ``compress`` extra: brotli and zstandard), chosen by ``Accept-Encoding``.

A stream is compressed and flushed event by event, so a live page gets each change as soon as
it is sent, in fewer bytes; a whole answer is compressed once, when it is worth it. Streams are
compressed with zstd only: a zstd body may be several frames, so a stream that falls quiet ends
its frame and frees its compressor (``REST``), and an idle live page costs no compressor memory.
A brotli body is one stream to its end, whose encoder would stay allocated (about 0.3 MB) for as
long as the page is open.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from starlette.types import Message, Send

from starmodel_asgi.extras import require

#: Whole answers shorter than this go as they are: compressing them saves too little.
MIN_SIZE = 1024


class Encoder(Protocol):
    def chunk(self, data: bytes) -> bytes:
        """``data`` compressed and flushed: everything so far can be decoded."""
        ...

    def end(self) -> bytes: ...


#: An ASGI body message's key that says the stream falls quiet after it: its encoder may end
#: what it has begun and free its memory (the message's own body is sent first).
REST = "starmodel.rest"


class Brotli:
    """``stream=True``: a 64 KB window (``lgwin=16``), about 0.3 MB per open stream instead of 1.1
    MB, as small a result for SSE events (each is far shorter than the window)."""

    def __init__(self, stream: bool = False) -> None:
        import brotli

        self._compressor = brotli.Compressor(quality=5, lgwin=16) if stream else brotli.Compressor(quality=5)

    def chunk(self, data: bytes) -> bytes:
        return bytes(self._compressor.process(data) + self._compressor.flush())

    def end(self) -> bytes:
        return bytes(self._compressor.finish())


class Zstd:
    """``stream=True``: a 64 KB window and 4 K-entry match tables, about 80 KB while a stream is
    busy instead of 0.8 MB (level 3's tables), as small a result for SSE events; ``rest`` ends
    the frame and frees all of it until the next chunk starts a new frame."""

    def __init__(self, stream: bool = False) -> None:
        import zstandard

        self._zstd = zstandard
        self._stream = stream
        self._compressor: Any = None if stream else zstandard.ZstdCompressor(level=3).compressobj()

    def _active(self) -> Any:
        if self._compressor is None:
            zstd = self._zstd
            small = zstd.ZstdCompressionParameters.from_level(3, window_log=16, hash_log=12, chain_log=12)
            self._compressor = zstd.ZstdCompressor(compression_params=small).compressobj()
        return self._compressor

    def chunk(self, data: bytes) -> bytes:
        compressor = self._active()
        return bytes(compressor.compress(data) + compressor.flush(self._zstd.COMPRESSOBJ_FLUSH_BLOCK))

    def rest(self, data: bytes) -> bytes:
        """``data`` compressed, then the frame ended and the compressor let go."""
        compressor, self._compressor = self._active(), None
        return bytes(compressor.compress(data) + compressor.flush())

    def end(self) -> bytes:
        compressor, self._compressor = self._compressor, None
        return b"" if compressor is None else bytes(compressor.flush())


#: Content-Encoding -> (module, encoder), in order of preference (zstd costs the least CPU).
ENCODERS: dict[str, tuple[str, Callable[..., Encoder]]] = {"zstd": ("zstandard", Zstd), "br": ("brotli", Brotli)}
#: The encodings a streamed answer may use.
STREAMED = ("zstd",)


class Compression:
    """Which encodings this app offers: ``enabled=None`` offers what is installed, ``True``
    requires the ``compress`` extra (checked now), ``False`` offers none."""

    def __init__(self, enabled: bool | None = None) -> None:
        if enabled:
            for module, _ in ENCODERS.values():
                require(module, "compress", "compress=True")
        self.offered = [] if enabled is False else [n for n, (m, _) in ENCODERS.items() if _installed(m)]

    def choose(self, headers: Mapping[str, str], stream: bool = False) -> str | None:
        """The encoding to answer with, from the request's ``Accept-Encoding``, or ``None``; a
        ``stream`` only in zstd (see the module's docstring)."""
        offered = [name for name in self.offered if name in STREAMED] if stream else self.offered
        if not offered:
            return None
        accepted = _accepted(headers.get("accept-encoding", ""))
        return next((name for name in offered if name in accepted), None)

    def whole(self, encoding: str, body: bytes) -> bytes:
        encoder = ENCODERS[encoding][1]()
        return encoder.chunk(body) + encoder.end()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _accepted(value: str) -> set[str]:
    """``gzip, br;q=0.9, zstd;q=0`` -> ``{"gzip", "br"}`` (a zero quality refuses)."""
    names = set()
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        quality = params.strip().removeprefix("q=")
        if name and not (params and quality.replace(".", "").strip("0") == ""):
            names.add(name.strip().lower())
    return names


def compressing(send: Send, encoding: str) -> Send:
    """``send`` for a streamed answer, compressing each body message and flushing it (with the
    small-memory settings: a live page may keep its stream open for hours); a message marked
    ``REST`` also lets the encoder free its memory."""
    encoder = cast(Zstd, ENCODERS[encoding][1](stream=True))

    async def send_compressed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = [(k, v) for k, v in message.get("headers", []) if k != b"content-length"]
            headers += [(b"content-encoding", encoding.encode()), (b"vary", b"accept-encoding")]
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if message.get(REST):
                data = encoder.rest(body)
            elif body:
                data = encoder.chunk(body)
            else:
                data = b""
            if not more:
                data += encoder.end()
            message = {k: v for k, v in message.items() if k != REST}
            message["body"] = data
        await send(message)

    return send_compressed

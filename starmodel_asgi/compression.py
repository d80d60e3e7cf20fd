"""Compressed answers (the ``compress`` extra: brotli and zstandard), chosen by ``Accept-Encoding``.

A stream is compressed and flushed event by event, so a live page gets each change as soon as
it is sent, in fewer bytes; a whole answer is compressed once, when it is worth it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.types import Message, Send

from starmodel_asgi.extras import require

#: Whole answers shorter than this go as they are: compressing them saves too little.
MIN_SIZE = 1024


class Encoder(Protocol):
    def chunk(self, data: bytes) -> bytes:
        """``data`` compressed and flushed: everything so far can be decoded."""
        ...

    def end(self) -> bytes: ...


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
    """``stream=True``: a 64 KB window and 4 K-entry match tables, about 80 KB per open stream
    instead of 0.8 MB (level 3's tables), as small a result for SSE events."""

    def __init__(self, stream: bool = False) -> None:
        import zstandard

        self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        if stream:
            small = zstandard.ZstdCompressionParameters.from_level(3, window_log=16, hash_log=12, chain_log=12)
            self._compressor = zstandard.ZstdCompressor(compression_params=small).compressobj()
        else:
            self._compressor = zstandard.ZstdCompressor(level=3).compressobj()

    def chunk(self, data: bytes) -> bytes:
        return bytes(self._compressor.compress(data) + self._compressor.flush(self._flush_block))

    def end(self) -> bytes:
        return bytes(self._compressor.flush())


#: Content-Encoding -> (module, encoder), in order of preference (zstd costs the least CPU).
ENCODERS: dict[str, tuple[str, Callable[..., Encoder]]] = {"zstd": ("zstandard", Zstd), "br": ("brotli", Brotli)}


class Compression:
    """Which encodings this app offers: ``enabled=None`` offers what is installed, ``True``
    requires the ``compress`` extra (checked now), ``False`` offers none."""

    def __init__(self, enabled: bool | None = None) -> None:
        if enabled:
            for module, _ in ENCODERS.values():
                require(module, "compress", "compress=True")
        self.offered = [] if enabled is False else [n for n, (m, _) in ENCODERS.items() if _installed(m)]

    def choose(self, headers: Mapping[str, str]) -> str | None:
        """The encoding to answer with, from the request's ``Accept-Encoding``, or ``None``."""
        if not self.offered:
            return None
        accepted = _accepted(headers.get("accept-encoding", ""))
        return next((name for name in self.offered if name in accepted), None)

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
    small-memory settings: a live page may keep its stream open for hours)."""
    encoder = ENCODERS[encoding][1](stream=True)

    async def send_compressed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = [(k, v) for k, v in message.get("headers", []) if k != b"content-length"]
            headers += [(b"content-encoding", encoding.encode()), (b"vary", b"accept-encoding")]
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            data = encoder.chunk(body) if body else b""
            if not more:
                data += encoder.end()
            message = {**message, "body": data}
        await send(message)

    return send_compressed

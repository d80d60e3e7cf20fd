"""Compressed answers and live streams: chosen by Accept-Encoding, flushed event by event."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
import zstandard

from starmodel_asgi import Entity, StarModel, event
from starmodel_asgi.compression import _accepted
from starmodel_asgi.extras import MissingExtra
from starmodel_asgi.testing import StreamingTransport
from tests.support.servers import run_server

pytestmark = pytest.mark.anyio


class Feed(Entity):
    model_config = {"scope": "global"}
    count: int = 0
    text: str = ""

    @event
    def post(self, text: str) -> None:
        self.count += 1
        self.text = text

    def render(self) -> str:
        return f'<ul id="feed">{"".join(f"<li>item {i}: {self.text}</li>" for i in range(20))}</ul>'


@asynccontextmanager
async def live_feed(url: str, headers: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.Response]]:
    """A client of the server at ``url`` and its open ``/feed/live`` stream."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/feed/live", headers=headers) as response,
    ):
        yield client, response


class ZstdFrames:
    """Decodes a zstd body of one or more frames, as browsers do."""

    def __init__(self) -> None:
        self.frames = 0
        self._next()

    def _next(self) -> None:
        self.frames += 1
        self._decoder = zstandard.ZstdDecompressor().decompressobj()

    def decode(self, data: bytes) -> bytes:
        out = b""
        while data:
            out += self._decoder.decompress(data)
            if not self._decoder.eof:
                break
            data = self._decoder.unused_data
            self._next()
        return out


async def read_until(chunks: AsyncIterator[bytes], frames: ZstdFrames, wanted: str) -> str:
    seen = ""
    with anyio.fail_after(5):  # flushed per event: no waiting for more data
        while wanted not in seen:
            seen += frames.decode(await anext(chunks)).decode()
    return seen


async def test_a_live_stream_is_compressed_and_each_change_decodes_as_it_arrives() -> None:
    sm = StarModel([Feed], base_path="", secret_key="compress")
    with run_server(sm) as url:
        headers = {"Datastar-Request": "true", "Accept-Encoding": "zstd"}
        async with live_feed(url, headers) as (client, response):
            assert response.headers["content-encoding"] == "zstd"
            assert "content-length" not in response.headers
            chunks = response.aiter_raw()
            frames = ZstdFrames()
            text = frames.decode(await anext(chunks)).decode()
            assert "item 19" in text  # the first state, whole, from the first chunk
            for n in range(1, 4):
                await client.post("/feed/post", json={"text": f"change {n}"}, headers={"Accept": "application/json"})
                assert '"count":' in await read_until(chunks, frames, f"change {n}")
            assert frames.frames == 1  # busy: one frame, each change compressed against the ones before


async def test_a_quiet_compressed_stream_ends_its_frame_and_the_next_change_starts_another() -> None:
    """A browser's stream: at each keep-alive the encoder ends its frame and lets go of its
    memory; the page's decoder reads on across frames (zstd bodies may hold several)."""
    sm = StarModel([Feed], base_path="", secret_key="compress", keepalive=0.2)
    with run_server(sm) as url:
        headers = {"Datastar-Request": "true", "Accept-Encoding": "zstd", "Sec-Fetch-Mode": "cors"}
        async with live_feed(url, headers) as (client, response):
            chunks = response.aiter_raw()
            frames = ZstdFrames()
            await read_until(chunks, frames, "item 19")
            await read_until(chunks, frames, ": keepalive")  # quiet: the frame ends with it
            for n in range(1, 3):
                await client.post("/feed/post", json={"text": f"after rest {n}"})
                await read_until(chunks, frames, f"after rest {n}")
                await read_until(chunks, frames, ": keepalive")
            assert frames.frames == 4  # the first frame, one per change after a rest, and the one begun


async def test_a_client_that_is_not_a_browser_reads_one_frame_through_quiet_times() -> None:
    """httpx (and urllib3) cannot read on when a frame ends exactly where a read does."""
    sm = StarModel([Feed], base_path="", secret_key="compress", keepalive=0.1)
    with run_server(sm) as url:
        async with live_feed(url, {"Datastar-Request": "true"}) as (client, response):
            assert response.headers["content-encoding"] == "zstd"  # httpx asks for it itself
            seen = ""
            with anyio.fail_after(5):
                async for text in response.aiter_text():
                    seen += text
                    if seen.count(": keepalive") >= 2:
                        await client.post("/feed/post", json={"text": "after a quiet time"})
                    if "after a quiet time" in seen:
                        break


async def test_a_live_stream_is_not_compressed_with_brotli() -> None:
    """A brotli body cannot end and start again: its encoder would stay allocated (about 0.3 MB)
    for as long as the page is open."""
    sm = StarModel([Feed], base_path="", secret_key="compress")
    with run_server(sm) as url:
        headers = {"Datastar-Request": "true", "Accept-Encoding": "br"}
        async with live_feed(url, headers) as (_client, response):
            assert "content-encoding" not in response.headers
            assert "item 19" in (await anext(response.aiter_raw())).decode()


async def test_bytes_on_the_wire_for_100_html_patches_shrink() -> None:
    sm = StarModel([Feed], base_path="", secret_key="compress")
    sizes = {}
    with run_server(sm) as url:
        for encoding in ("identity", "zstd"):
            headers = {"Datastar-Request": "true", "Accept-Encoding": encoding}
            async with live_feed(url, headers) as (client, response):
                chunks = response.aiter_raw()
                wire = len(await anext(chunks))
                for n in range(100):
                    await client.post("/feed/post", json={"text": f"{encoding} {n}"})
                    wire += len(await anext(chunks))
                sizes[encoding] = wire
    assert sizes["zstd"] < sizes["identity"] / 3, sizes


async def test_whole_answers_are_compressed_only_when_worth_it() -> None:
    sm = StarModel([Feed], base_path="", secret_key="compress")
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        small = await client.get("/feed", headers={"Accept-Encoding": "br"})
        assert "content-encoding" not in small.headers
        big = await client.post("/feed/post", json={"text": "x" * 2000}, headers={"Accept-Encoding": "br"})
        assert big.headers["content-encoding"] == "br" and big.json()["text"] == "x" * 2000  # httpx decodes
        refused = await client.post("/feed/post", json={"text": "y" * 2000}, headers={"Accept-Encoding": "br;q=0"})
        assert "content-encoding" not in refused.headers


async def test_compress_false_sends_everything_as_is() -> None:
    sm = StarModel([Feed], base_path="", secret_key="compress", compress=False)
    async with httpx.AsyncClient(transport=StreamingTransport(sm), base_url="http://t") as client:
        response = await client.post("/feed/post", json={"text": "x" * 2000}, headers={"Accept-Encoding": "zstd, br"})
        assert "content-encoding" not in response.headers


def test_compress_true_without_the_extra_fails_when_the_app_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r'pip install "starmodel-asgi\[compress\]"'):
        StarModel([Feed], secret_key="compress", compress=True)


def test_accept_encoding_is_read_with_its_qualities() -> None:
    assert _accepted("gzip, deflate, br, zstd") == {"gzip", "deflate", "br", "zstd"}
    assert _accepted("br;q=0.5, zstd;q=0, gzip;q=0.0") == {"br"}
    assert _accepted("") == set()

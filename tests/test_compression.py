"""Compressed answers and live streams: chosen by Accept-Encoding, flushed event by event."""

from __future__ import annotations

import sys

import anyio
import brotli
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


def decoder(encoding: str) -> object:
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    return brotli.Decompressor()


def decode(decompressor: object, data: bytes) -> bytes:
    method = "process" if isinstance(decompressor, brotli.Decompressor) else "decompress"
    return bytes(getattr(decompressor, method)(data))


@pytest.mark.parametrize("encoding", ["zstd", "br"])
async def test_a_live_stream_is_compressed_and_each_change_decodes_as_it_arrives(encoding: str) -> None:
    sm = StarModel([Feed], base_path="", secret_key="compress")
    with run_server(sm) as url:
        headers = {"Datastar-Request": "true", "Accept-Encoding": encoding}
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream("GET", "/feed/live", headers=headers) as response,
        ):
            assert response.headers["content-encoding"] == encoding
            assert "content-length" not in response.headers
            chunks = response.aiter_raw()
            dec = decoder(encoding)
            text = decode(dec, await anext(chunks)).decode()
            assert "item 19" in text  # the first state, whole, from the first chunk
            for n in range(1, 4):
                await client.post("/feed/post", json={"text": f"change {n}"}, headers={"Accept": "application/json"})
                seen = ""
                with anyio.fail_after(5):  # flushed per event: no waiting for more data
                    while f"change {n}" not in seen:
                        seen += decode(dec, await anext(chunks)).decode()
                assert '"count":' in seen


async def test_bytes_on_the_wire_for_100_html_patches_shrink() -> None:
    sm = StarModel([Feed], base_path="", secret_key="compress")
    sizes = {}
    with run_server(sm) as url:
        for encoding in ("identity", "zstd", "br"):
            headers = {"Datastar-Request": "true", "Accept-Encoding": encoding}
            async with (
                httpx.AsyncClient(base_url=url, timeout=10) as client,
                client.stream("GET", "/feed/live", headers=headers) as response,
            ):
                chunks = response.aiter_raw()
                wire = len(await anext(chunks))
                for n in range(100):
                    await client.post("/feed/post", json={"text": f"{encoding} {n}"})
                    wire += len(await anext(chunks))
                sizes[encoding] = wire
    assert sizes["zstd"] < sizes["identity"] / 3 and sizes["br"] < sizes["identity"] / 3, sizes


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

"""Resource bounds (hardening round 3, point 8): a caller who may not act, or a record that does
not exist, never makes the process receive a body; a body that does not arrive in time is a 408;
a client that stops reading a generator event does not keep its instance from everyone else."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest

from starmodel_asgi import Entity, EventRequest, StarModel, UploadFile, event
from tests.support.asgi import http_scope
from tests.support.servers import run_server

pytestmark = pytest.mark.anyio


class Photo(Entity):
    model_config = {"scope": "record"}
    caption: str = ""

    @event
    async def upload(self, photo: UploadFile, caption: str = "") -> None:
        self.caption = caption or (photo.filename or "")


class Board(Entity):
    model_config = {"scope": "global"}
    text: str = ""
    steps: int = 0

    @event
    async def write(self, text: str) -> None:
        self.text = text

    @event
    async def bump(self) -> None:
        self.steps += 1

    @event
    async def fill(self) -> AsyncIterator[None]:
        for _ in range(40):  # 40 steps of 512 KB: more than any socket buffer holds
            self.steps += 1
            self.text = ("x" if self.steps % 2 else "y") * 512 * 1024
            yield


async def status_of_stalled(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytearray | None = None
) -> tuple[int, bool]:
    """The status answered to a client that sends its headers and then never a byte of its body,
    and whether the app asked for the body at all (the answer's body goes into ``body``)."""
    asked = False
    answer: list[int] = []

    async def receive() -> Any:
        nonlocal asked
        asked = True
        await anyio.sleep_forever()

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            answer.append(message["status"])
        elif body is not None:
            body.extend(message.get("body", b""))

    with anyio.fail_after(5):
        await app(http_scope(method, path, headers), receive, send)
    return answer[0], asked


UPLOAD = {"content-type": "multipart/form-data; boundary=b", "content-length": "500000", "datastar-request": "true"}


async def test_a_refused_caller_is_answered_before_its_body_is_read() -> None:
    def authorize(request: EventRequest, entity: type[Entity], event: str | None) -> bool:
        return request.headers.get("x-user") == "ada"

    sm = StarModel([Photo, Board], base_path="", secret_key="b", authorize=authorize)
    json_headers = {"content-type": "application/json", "content-length": "20"}
    assert await status_of_stalled(sm, "POST", "/board/write", json_headers) == (403, False)
    assert await status_of_stalled(sm, "POST", "/photo/p1/upload", UPLOAD) == (403, False)


LARGE_JSON = {"content-type": "application/json", "content-length": "900000"}


@pytest.mark.parametrize("headers", [UPLOAD, LARGE_JSON], ids=["upload", "large JSON"])
async def test_a_large_body_for_a_record_that_does_not_exist_is_404_before_it_is_read(
    headers: dict[str, str],
) -> None:
    sm = StarModel([Photo, Board], base_path="", secret_key="b")
    assert await status_of_stalled(sm, "POST", "/photo/nope/upload", headers) == (404, False)


async def test_a_record_owner_check_sees_an_upload_before_its_body_is_read() -> None:
    def authorize(request: EventRequest, entity: type[Entity], event: str | None, record: Any) -> bool:
        return record is None or record.caption != "locked"

    sm = StarModel([Photo, Board], base_path="", secret_key="b", authorize=authorize)
    locked = await sm.create(Photo, caption="locked")
    assert await status_of_stalled(sm, "POST", f"/photo/{locked.id}/upload", UPLOAD) == (403, False)
    assert await status_of_stalled(sm, "POST", f"/photo/{locked.id}/upload", LARGE_JSON) == (403, False)
    assert await status_of_stalled(sm, "POST", "/photo/nope/upload", LARGE_JSON) == (404, False)


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json", "content-length": "200000"},  # large: timed from the start
        {"content-type": "application/json", "transfer-encoding": "chunked"},  # length unknown
        UPLOAD,
    ],
)
async def test_a_body_that_never_arrives_is_a_408_after_body_timeout(headers: dict[str, str]) -> None:
    sm = StarModel([Photo, Board], base_path="", secret_key="b", body_timeout=0.3)
    photo = await sm.create(Photo)
    path = f"/photo/{photo.id}/upload" if headers is UPLOAD else "/board/write"
    started = time.monotonic()
    answer = bytearray()
    assert await status_of_stalled(sm, "POST", path, headers, answer) == (408, True)
    assert b"did not arrive within 0.3 s" in answer
    assert 0.25 < time.monotonic() - started < 3


def test_a_slow_body_over_real_http_is_a_408_and_the_next_request_is_served() -> None:
    sm = StarModel([Board], base_path="", secret_key="b", body_timeout=0.5)
    with run_server(sm) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            head = "POST /board/write HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            slow.sendall(f'{head}Content-Length: 100000\r\n\r\n{{"text": "'.encode())  # then nothing
            answer = slow.recv(4096).decode()  # its body may be lost: the server closes with input unread
        assert answer.startswith("HTTP/1.1 408"), answer
        ok = httpx.post(f"{url}/board/write", json={"text": "hi"})
        assert ok.status_code == 200
        assert httpx.get(f"{url}/board").json()["text"] == "hi"


def test_a_multipart_part_in_another_charset_that_is_not_text_is_a_400() -> None:
    sm = StarModel([Board], base_path="", secret_key="b")
    # Starlette decodes the parts with the charset the request declares; UTF-7 can spell an unpaired
    # surrogate ("+2AA-"), which is no text any store or page could keep
    body = b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\n+2AA-\r\n--b--\r\n'
    with run_server(sm) as url:
        headers = {"content-type": "multipart/form-data; boundary=b; charset=utf-7"}
        answer = httpx.post(f"{url}/board/write", content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert "send UTF-8" in answer.text
        assert httpx.get(f"{url}/board").json()["text"] == ""
        fine = body.replace(b"+2AA-", b"caf+AOk-")  # the same charset spelling real text is kept
        assert httpx.post(f"{url}/board/write", content=fine, headers=headers).status_code == 200
        assert httpx.get(f"{url}/board").json()["text"] == "caf\u00e9"


@contextmanager
def not_reading(url: str, path: str) -> Iterator[None]:
    """A Datastar client that posts to ``path`` and never reads the answer, for the block."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    try:
        request = f"POST {path} HTTP/1.1\r\nHost: t\r\ndatastar-request: true\r\nContent-Length: 2\r\n\r\n{{}}"
        stalled.sendall(request.encode())
        yield
    finally:
        stalled.close()


def test_a_client_that_stops_reading_a_generator_event_does_not_hold_its_instance() -> None:
    sm = StarModel([Board], base_path="", secret_key="b", send_timeout=0.5)
    with run_server(sm) as url:
        with not_reading(url, "/board/fill"):
            time.sleep(0.3)
            started = time.monotonic()
            bumped = httpx.post(f"{url}/board/bump", json={}, timeout=20)  # waits for the instance
            waited = time.monotonic() - started
        assert bumped.status_code == 200
        assert waited < 5, f"the instance was held {waited:.1f} s by a client that stopped reading"
        state = json.loads(httpx.get(f"{url}/board").text)
        assert state["steps"] == 41  # the stalled event ran to its end and was kept, then the bump


def test_a_client_that_stops_reading_a_background_event_frees_its_place() -> None:
    class Log(Entity):
        model_config = {"scope": "global"}
        text: str = ""
        steps: int = 0

        @event(background=True)
        async def fill(self) -> AsyncIterator[str]:
            for _ in range(40):  # 40 steps of 512 KB of HTML
                async with self:
                    self.steps += 1
                yield f'<pre id="log">{"z" * 512 * 1024}</pre>'

        @event(background=True)
        async def ping(self) -> None:
            async with self:
                self.text = "pong"

    sm = StarModel([Log], base_path="", secret_key="b", send_timeout=0.5, max_background=1)
    with run_server(sm) as url:
        with not_reading(url, "/log/fill"):
            deadline = time.monotonic() + 10
            while True:  # the stalled run holds the one place until send_timeout ends it
                answer = httpx.post(f"{url}/log/ping", json={}, headers={"accept": "application/json"})
                if answer.status_code != 429 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        state = httpx.get(f"{url}/log").json()
        assert state["text"] == "pong" and state["steps"] < 40  # the stalled run was cancelled, not finished


async def test_a_client_gone_mid_body_is_a_quiet_400(caplog: pytest.LogCaptureFixture) -> None:
    sm = StarModel([Board], base_path="", secret_key="b")
    sent = [{"type": "http.disconnect"}, {"type": "http.request", "body": b'{"text": "h', "more_body": True}]
    answer: list[int] = []

    async def receive() -> Any:
        return sent.pop()

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            answer.append(message["status"])

    headers = {"content-type": "application/json", "content-length": "50"}
    await sm(http_scope("POST", "/board/write", headers), receive, send)
    assert answer == [400]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_content_length_of_other_digits_is_not_a_server_error() -> None:
    sm = StarModel([Board], base_path="", secret_key="b")
    scope = http_scope("POST", "/board/write", {"content-type": "application/json"})
    scope["headers"].append((b"content-length", b"\xb2"))  # latin-1 "²": str.isdigit() says yes, int() says no
    answer: list[int] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b'{"text": "x"}', "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            answer.append(message["status"])

    await sm(scope, receive, send)
    assert answer == [200]

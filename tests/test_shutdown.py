"""Stopping uvicorn with live pages open: each stream ends as a finished response, and the server
logs no traceback (issue 24 point 8)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import httpx
import pytest

from starmodel_asgi import Entity, StarModel
from tests.support.servers import ROOT, _wait_for_port, free_port

pytestmark = pytest.mark.anyio


class Board(Entity):
    model_config = {"scope": "global", "presence": True}
    text: str = ""

    def render(self) -> str:
        return f'<p id="board">{self.text}</p>'


class Post(Entity):
    model_config = {"scope": "record"}
    text: str = ""

    def render(self) -> str:
        return f'<li id="{self.dom_id}">{self.text}</li>'


def make_app() -> StarModel:
    return StarModel([Board, Post], base_path="", secret_key="shutdown")


@pytest.mark.parametrize(
    ("signum", "graceful"),
    [
        (signal.SIGINT, "1"),
        (signal.SIGTERM, "1"),
        # without a graceful timeout uvicorn waits for open responses until Ctrl+C comes again (a
        # second SIGTERM does not stop it: the app is told nothing until its tasks are cancelled)
        (signal.SIGINT, None),
    ],
)
def test_stopping_uvicorn_with_live_streams_open_logs_no_traceback(signum: int, graceful: str | None) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.test_shutdown:make_app", "--factory", "--port", str(port)]
    command += ["--host", "127.0.0.1"] + (["--timeout-graceful-shutdown", graceful] if graceful else [])
    with tempfile.TemporaryFile() as log, ExitStack() as stack:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
        try:
            _wait_for_port(port, process, log)
            client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10))
            assert client.post("/post", json={"text": "hello"}).status_code == 201
            streams = [stack.enter_context(client.stream("GET", url)) for url in ("/board/live", "/post/live") * 3]
            bodies = [stream.iter_raw() for stream in streams]
            for stream, body in zip(streams, bodies, strict=True):
                assert stream.status_code == 200
                next(body)  # the first view arrived: the stream is open on the server
            process.send_signal(signum)
            if graceful is None:
                time.sleep(0.5)
                process.send_signal(signum)
            for body in bodies:
                b"".join(body)  # each ends, as a finished response (else httpx raises)
            code = process.wait(15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
        log.seek(0)
        output = log.read().decode(errors="replace")
    # uvicorn raises the signal again once stopped (0.30 exits with 1 after Ctrl+C instead)
    assert code in (0, 1, -signum) if signum == signal.SIGINT else code in (0, -signum), output
    assert "Traceback" not in output, output
    assert "CancelledError" not in output, output
    assert "Finished server process" in output, output

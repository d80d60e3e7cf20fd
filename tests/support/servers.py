"""Real servers for tests that need one (several workers, browsers, a real socket).

- ``run_server(app)``: uvicorn in a thread of this process on a free port of 127.0.0.1; yields
  the base URL (a ``str`` whose ``.call(fn)`` runs ``fn`` on the server's event loop).
- ``run_worker("module:attr", env={...})``: uvicorn in a subprocess; yields the base URL.
- ``RedisServer``: a private ``redis-server`` on its own free port that a test may stop and start.
- ``read_live(client, url)``: a live stream read by ``starmodel_asgi.testing``'s ``LivePage``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from starmodel_asgi.testing import LivePage, Page

ROOT = Path(__file__).resolve().parents[2]  # the project: workers import tests.* from there
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerURL(str):
    """The server's base URL; ``call(fn)`` runs ``fn()`` in the server's event loop (for reading
    its state without racing it) and returns the result."""

    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[], T], timeout: float = 10) -> T:
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    async def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Awaits ``coroutine`` on the server's event loop (``sm.create(...)`` as a task of the
        server would), without blocking this one."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)


@contextmanager
def run_server(app: Any, port: int = 0, **config: Any) -> Iterator[ServerURL]:
    """Serves ``app`` with uvicorn on 127.0.0.1 (``port``, or a free one) from a thread; stops it
    on exit (open streams are cut after ``timeout_graceful_shutdown``, 1 s by default)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "timeout_graceful_shutdown": 1, "lifespan": "on"}
    server = uvicorn.Server(uvicorn.Config(app, **{**options, **config}))
    loops: list[asyncio.AbstractEventLoop] = []
    failures: list[BaseException] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the test below
            failures.append(exc)

    thread = threading.Thread(target=main, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if failures or not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start: {failures}")
        time.sleep(0.01)
    url = ServerURL(f"http://127.0.0.1:{port}")
    url.loop = loops[0]
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()
        if failures:
            raise RuntimeError("uvicorn failed") from failures[0]


class WorkerURL(str):
    """A worker's base URL; ``process`` is its uvicorn process (for ``kill -9``)."""

    process: subprocess.Popen[bytes]


@contextmanager
def run_worker(app: str, env: Mapping[str, str] | None = None, *, factory: bool = False) -> Iterator[WorkerURL]:
    """Runs ``uvicorn app`` (``"module:attr"``, importable from the repo root) in a subprocess with
    ``env`` added to this environment; yields its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--timeout-graceful-shutdown", "1"]
    if factory:
        command.append("--factory")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
        try:
            _wait_for_port(port, process, log)
            url = WorkerURL(f"http://127.0.0.1:{port}")
            url.process = process
            yield url
        finally:
            _stop(process)
            log.seek(0)
            output = log.read().decode(errors="replace")
            if output.strip():  # pytest shows it beside a failure: what the worker logged
                print(f"--- {app} on port {port} logged:\n{output[-20_000:]}", file=sys.stderr)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class RedisServer:
    """A throw-away ``redis-server`` on a free port (never the shared one), stoppable and
    restartable on the same port to simulate an outage. No persistence, unless ``appendfsync``
    (``"always"``, ``"everysec"``) turns the append-only file on: its data directory (``data_dir``,
    else a temporary one removed on exit) outlives ``kill()`` and ``stop()``, so ``start()`` again
    loads what the dead server had written."""

    def __init__(self, *, appendfsync: str | None = None, data_dir: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendfsync = appendfsync
        self._tmp = tempfile.TemporaryDirectory() if appendfsync and data_dir is None else None
        self.data_dir = Path(self._tmp.name) if self._tmp is not None else data_dir
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__, read on failure
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.appendfsync is None:
            command += ["--appendonly", "no"]
        else:
            assert self.data_dir is not None
            self.data_dir.mkdir(parents=True, exist_ok=True)
            command += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", self.appendfsync]
        self._process = subprocess.Popen(command, stdout=self._log, stderr=self._log)
        _wait_for_port(self.port, self._process, self._log)

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)
            self._process = None

    def kill(self) -> None:
        """``kill -9``: the server dies at once, without flushing or saving anything."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            self._process = None

    def pause(self) -> None:
        """``kill -STOP``: connections stay open and nothing answers (a hung server)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def read_live(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None, timeout: float = 10
) -> AbstractAsyncContextManager[LivePage]:
    """``async with read_live(client, "/counter/live") as live``: the stream read by
    ``starmodel_asgi.testing`` as it arrives, over ``client`` (a real server or a
    ``StreamingTransport``); ``await live.wait(condition)`` waits until what arrived meets it."""
    return Page(client, headers=headers).live(url, timeout)

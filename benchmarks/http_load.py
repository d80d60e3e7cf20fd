"""Real servers under load: each app served by its own process pinned to core 0, loaded by wrk
pinned to core 1 (32 connections), each wrk client holding the session cookie its app gave it;
the server's CPU per request read from ``/proc`` (user + system), the apps alternating run by run.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx
from bench_events import Figures

HERE = Path(__file__).resolve().parent
#: A Datastar client's POST: the signals as JSON, the Datastar header, the session cookie.
DATASTAR_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"counter":{"count":0}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Datastar-Request"] = "true"
wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE")
"""
PATH = "/counter/increment?amount=1"


class Served(NamedTuple):
    """How to start one app (the command, without the core pinning) and what wrk sends it."""

    command: list[str]
    script: str = DATASTAR_SCRIPT


def uvicorn(factory: str, python: str = sys.executable) -> Served:
    """An app factory (``module:function`` in ``benchmarks/``) served by one uvicorn worker."""
    command = [python, "-m", "uvicorn", factory, "--factory", "--log-level", "warning", "--no-access-log"]
    return Served([*command, "--app-dir", str(HERE), "--port"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: apt-get install -y wrk (as root), then run again")
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk did not install")


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def serve(command: list[str], port: int) -> subprocess.Popen[bytes]:
    """Starts ``command`` (which ends where the port goes) pinned to core 0; returns once it listens."""
    process = subprocess.Popen([*pinned(0), *command, str(port)], cwd=HERE)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"{' '.join(command)} did not start") from None
            time.sleep(0.05)


def session_cookie(base: str) -> str:
    """The cookie the app gives a first request, as a browser would keep it."""
    response = httpx.post(f"{base}{PATH}", json={}, headers={"Datastar-Request": "true"})
    response.raise_for_status()
    return "; ".join(f"{k}={v}" for k, v in response.cookies.items())


def server_cpu(process: subprocess.Popen[bytes]) -> float:
    """Seconds of CPU the server process has used (user + system), from ``/proc``."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_run(wrk: str, base: str, cookie: str, seconds: int, script: Path) -> tuple[float, int]:
    """Requests per second and the number of requests wrk made."""
    command = [*pinned(1), wrk, "-t1", "-c32", f"-d{seconds}s", "-s", str(script), f"{base}{PATH}"]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "BENCH_COOKIE": cookie}).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"{non_2xx.group(1)} failed requests under wrk:\n{out}")
    found, made = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if not found or not made:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(found.group(1)), int(made.group(1))


def alternate(
    apps: dict[str, Served], runs: int, seconds: int, check: Callable[[str, str], None] | None = None
) -> dict[str, Figures]:
    """Median req/s and server CPU per request of each app, the apps taking turns run by run (the
    order rotating) so drift on the machine hits them alike. ``check(name, base)``, when given, runs
    once each app listens, before any load."""
    wrk = ensure_wrk()
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in apps}
    with tempfile.TemporaryDirectory() as scripts:
        servers = {}
        try:
            for name, app in apps.items():
                port = free_port()
                servers[name] = (serve(app.command, port), f"http://127.0.0.1:{port}", Path(scripts, f"{name}.lua"))
                servers[name][2].write_text(app.script)
                if check:
                    check(name, servers[name][1])
            cookies = {name: session_cookie(base) for name, (_, base, _) in servers.items()}
            for name, (_, base, script) in servers.items():  # warm-up
                wrk_run(wrk, base, cookies[name], 1, script)
            names = list(servers)
            for run in range(runs):
                for name in names[run % len(names) :] + names[: run % len(names)]:
                    process, base, script = servers[name]
                    cpu = server_cpu(process)
                    rate, made = wrk_run(wrk, base, cookies[name], seconds, script)
                    figures[name].append((rate, (server_cpu(process) - cpu) / made * 1e6))
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(10)
    return {
        name: Figures(statistics.median(r for r, _ in runs_), statistics.median(c for _, c in runs_))
        for name, runs_ in figures.items()
    }

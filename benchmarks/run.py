"""Every benchmark row against its hand-written baseline, as one table (about 5 minutes).

    python benchmarks/run.py [--quick]

Ratios are StarModel over the baseline measured in the same run, interleaved, medians of
several runs (higher is better, 1.0 is parity). The real-server row serves each app with uvicorn
(one worker, pinned to core 0) and loads it with wrk (pinned to core 1, 32 connections), each
client holding the session cookie its app gave it; wrk comes from Debian (installed here when
missing, as root). PostgreSQL and Redis rows need ``STARMODEL_TEST_POSTGRES_URL`` and
``STARMODEL_TEST_REDIS_URL``. ``--quick`` runs every row with tiny numbers (a smoke test, not
figures).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import bench_bulk
import bench_delivery
import bench_events
import bench_filtered
import bench_live
import bench_memory
import bench_viewer
import bench_wire
import httpx
import stores_bench

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"counter":{"count":0}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Datastar-Request"] = "true"
wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE")
"""


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


def serve(factory: str, port: int) -> subprocess.Popen[bytes]:
    command = [*pinned(0), sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log", "--app-dir", str(HERE)]
    process = subprocess.Popen(command, cwd=HERE)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"uvicorn {factory} did not start") from None
            time.sleep(0.05)


def session_cookie(base: str) -> str:
    """The cookie the app gives a first request, as a browser would keep it."""
    response = httpx.post(f"{base}/counter/increment?amount=1", json={}, headers={"Datastar-Request": "true"})
    response.raise_for_status()
    return "; ".join(f"{k}={v}" for k, v in response.cookies.items())


def server_cpu(process: subprocess.Popen[bytes]) -> float:
    """Seconds of CPU the server process has used (user + system), from ``/proc``."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_run(wrk: str, base: str, cookie: str, seconds: int, script: Path) -> tuple[float, int]:
    """Requests per second and the number of requests wrk made."""
    command = [*pinned(1), wrk, "-t1", "-c32", f"-d{seconds}s", "-s", str(script), f"{base}/counter/increment?amount=1"]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "BENCH_COOKIE": cookie}).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"{non_2xx.group(1)} failed requests under wrk:\n{out}")
    found, made = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if not found or not made:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(found.group(1)), int(made.group(1))


def over_http(runs: int, seconds: int) -> dict[str, bench_events.Figures]:
    """Median req/s and server CPU per request of the baseline and of StarModel behind uvicorn,
    loaded by wrk."""
    wrk = ensure_wrk()
    factories = {"baseline": "bench_events:baseline_app", "starmodel": "bench_events:starmodel_app"}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in factories}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        servers = {}
        try:
            for name, factory in factories.items():
                port = free_port()
                servers[name] = (serve(factory, port), f"http://127.0.0.1:{port}")
            cookies = {name: session_cookie(base) for name, (_, base) in servers.items()}
            for name, (_, base) in servers.items():  # warm-up
                wrk_run(wrk, base, cookies[name], 1, Path(script.name))
            for _ in range(runs):  # interleaved so drift hits both alike
                for name, (process, base) in servers.items():
                    cpu = server_cpu(process)
                    rate, made = wrk_run(wrk, base, cookies[name], seconds, Path(script.name))
                    figures[name].append((rate, (server_cpu(process) - cpu) / made * 1e6))
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(10)
    return {
        name: bench_events.Figures(statistics.median(r for r, _ in runs_), statistics.median(c for _, c in runs_))
        for name, runs_ in figures.items()
    }


def row(label: str, baseline: str, ours: str, ratio: str, goal: str) -> str:
    return f"| {label} | {baseline} | {ours} | {ratio} | {goal} |"


def cpu_rows(label: str, base: bench_events.Figures, ours: bench_events.Figures, goal: str) -> list[str]:
    """A request scenario's two rows: CPU per request (the steady figure), then req/s."""
    return [
        row(
            f"{label} (CPU us per request)",
            f"{base.cpu_us:,.0f}",
            f"{ours.cpu_us:,.0f}",
            f"{ours.cpu_us / base.cpu_us:.2f} (lower is better)",
            f"<= {goal}",
        ),
        row(f"{label} (req/s)", f"{base.rate:,.0f}", f"{ours.rate:,.0f}", f"{ours.rate / base.rate:.2f}", "-"),
    ]


def gate(events: dict[str, tuple[bench_events.Figures, bench_events.Figures]]) -> None:
    """Fails the run when an in-process CPU ratio passes its threshold in ``gate.json``."""
    limits = json.loads((HERE / "gate.json").read_text())
    for label, (base, ours) in events.items():
        ratio = ours.cpu_us / base.cpu_us
        if ratio > limits[label]:
            sys.exit(f"{label}: CPU per request is {ratio:.2f}x the baseline's, past the gate's {limits[label]}x")


async def collect(quick: bool) -> list[str]:
    n = lambda full, small: small if quick else full  # noqa: E731
    rows = []
    served = over_http(n(5, 1), n(5, 1))
    rows += cpu_rows("session counter event (def), uvicorn + wrk", served["baseline"], served["starmodel"], "1.10")
    events = await bench_events.measure(n(3000, 1500), n(5, 3))  # enough, even quick, for the gate
    gate(events)
    for label, goal in (("datastar event (POST, SSE answer)", "1.10"), ("state read (GET, JSON)", "1.25")):
        rows += cpu_rows(f"{label}, in-process", *events[label], goal)
    for streams, changes in ((100, n(100, 3)), (1000, n(50, 3)), (5000, n(20, 2)), (10_000, n(10, 2))):
        streams = streams if not quick else streams // 50 + 2
        ((base, ours),) = (await bench_live.measure([streams], changes, n(5, 1))).values()
        label = f"live fan-out, {streams:,} streams (CPU us per change per stream)"
        ratio = f"{ours.cpu_us / base.cpu_us:.2f} (lower is better)"
        rows.append(row(label, f"{base.cpu_us:.1f}", f"{ours.cpu_us:.1f}", ratio, "<= 1.10"))
    streams = n(1000, 12)
    ((shared, viewer),) = (await bench_viewer.measure([streams], n(50, 2), n(5, 1))).values()
    rows.append(
        row(
            f"render(self, viewer) against render(self), {streams:,} record streams (us per change per stream)",
            f"{1e6 / (shared * streams):.1f}",
            f"{1e6 / (viewer * streams):.1f}",
            f"{viewer / shared:.2f}",
            "measured (a render per stream)",
        )
    )
    streams = n(1000, 20)
    whole, filtered = await bench_filtered.measure(streams, 10, n(50, 10), n(5, 1))
    rows.append(
        row(
            f"live_list(where=room) against the unfiltered list, {streams:,} streams over 10 rooms"
            " (CPU us per change per stream)",
            f"{whole:.1f}",
            f"{filtered:.1f}",
            f"{filtered / whole:.2f} (lower is better)",
            "measured (below 1.0: the filter pays for itself)",
        )
    )
    bare, mine = await bench_memory.measure(n(2000, 20))
    rows.append(
        row(
            "memory per idle live stream (heap bytes)",
            f"{bare:,.0f}",
            f"{mine:,.0f}",
            f"{mine / bare:.2f} (lower is better)",
            "<= 1.2",
        )
    )
    resident = await bench_memory.compressed(n(1000, 20))
    rows.append(
        row(
            "resident memory per live stream: identity idle -> zstd busy / zstd idle (KiB)",
            f"{resident['identity'] / 1024:,.1f}",
            f"{resident['zstd busy'] / 1024:,.1f} / {resident['zstd idle'] / 1024:,.1f}",
            f"{resident['zstd idle'] / resident['identity']:.2f} idle (lower is better)",
            "<= 1.3 idle",
        )
    )
    redis = os.environ.get("STARMODEL_TEST_REDIS_URL")
    if redis:
        base, p50, p90 = await bench_delivery.measure(redis, n(400, 5))
        rows.append(
            row(
                "cross-worker live delivery over Redis, p50 (ms)",
                f"{base:.2f} (INCRBY + PUBLISH by hand)",
                f"{p50:.2f} (p90 {p90:.2f})",
                f"{p50 / base:.2f} (lower is better)",
                "<= 1.2",
            )
        )
    for store, (base, ours, lost_b, lost_s) in (await stores_bench.measure(n(16, 2), n(50, 3), n(3, 1))).items():
        rows.append(
            row(
                f"global counter on {store}, 16 clients (req/s; lost)",
                f"{base:,.0f}; {lost_b}",
                f"{ours:,.0f}; {lost_s}",
                f"{ours / base:.2f}",
                ">= 0.80, 0 lost",
            )
        )
    records = n(500, 5)
    for store, (base, ours, separate) in (await bench_bulk.measure(records, n(3, 1))).items():
        rows.append(
            row(
                f"clear {records} done records on {store}, one event (ms; {records} separate deletes)",
                f"{base:,.0f}",
                f"{ours:,.0f} ({separate:,.0f})",
                f"{base / ours:.2f}",
                "one unit, one transaction",
            )
        )
    sizes = await bench_wire.measure(n(100, 5))
    rows.append(
        row(
            "SSE bytes for 100 HTML patches (identity -> zstd)",
            f"{sizes['identity']:,}",
            f"{sizes['zstd']:,}",
            f"{sizes['zstd'] / sizes['identity']:.2f} (lower is better)",
            "compressed when accepted",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny numbers: checks every row runs")
    quick = parser.parse_args().quick
    started = time.monotonic()
    rows = anyio.run(collect, quick)
    print(
        f"Measured {datetime.date.today()} with `python benchmarks/run.py` ({os.cpu_count()} cores), "
        f"{time.monotonic() - started:.0f} s:\n"
    )
    print("| scenario | baseline | starmodel | ratio | goal |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

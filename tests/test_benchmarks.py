"""Every benchmark row runs (tiny numbers, no figures asserted): benchmarks are measured, not
timed in tests, but they must not rot. Needs wrk (``.ci/run`` installs it), PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.servers import ROOT
from tests.support.services import require


def test_every_benchmark_row_runs() -> None:
    env = {
        **os.environ,
        "STARMODEL_TEST_POSTGRES_URL": require("STARMODEL_TEST_POSTGRES_URL", "PostgreSQL"),
        "STARMODEL_TEST_REDIS_URL": require("STARMODEL_TEST_REDIS_URL", "Redis"),
    }
    if shutil.which("wrk") is None:
        if os.environ.get("STARMODEL_REQUIRE_SERVICES") == "1":
            pytest.fail("the real-server benchmark needs wrk: apt-get install -y wrk")
        pytest.skip("the real-server benchmark needs wrk")
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 26, result.stdout  # the header and every row
    bulk = [row.split(" | ") for row in table if "done records" in row]
    assert [cells[0].split(" on ")[-1].split(",")[0] for cells in bulk] == ["SQLite", "PostgreSQL"]
    counters = [row.split(" | ") for row in table if "global counter" in row]
    assert len(counters) == 3
    for cells in counters:  # "<req/s>; <lost>" for the baseline and for StarModel: no update lost
        assert cells[1].endswith("; 0") and cells[2].endswith("; 0"), cells


def test_the_gate_fails_a_run_whose_cpu_ratio_passes_its_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_events
    import run

    limits = json.loads((ROOT / "benchmarks" / "gate.json").read_text())
    label = "datastar event (POST, SSE answer)"
    base = bench_events.Figures(rate=1000, cpu_us=100)
    within = {label: (base, bench_events.Figures(rate=900, cpu_us=100 * limits[label] - 1))}
    run.gate(within)  # passes quietly
    past = {label: (base, bench_events.Figures(rate=500, cpu_us=100 * limits[label] + 1))}
    with pytest.raises(SystemExit, match=r"datastar event .* past the gate"):
        run.gate(past)


def test_the_counter_runs_beside_every_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """stario, FastHTML + HTMX, the hand-written endpoint, raw ASGI and StarModel, each checked to count per
    session with its cookie verified (a forged cookie starts over) before wrk loads it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_peers

    if bench_peers.python312() is None:
        pytest.skip("the peers need a Python 3.12 (stario does)")
    if shutil.which("wrk") is None:
        if os.environ.get("STARMODEL_REQUIRE_SERVICES") == "1":
            pytest.fail("the real-server benchmark needs wrk: apt-get install -y wrk")
        pytest.skip("the real-server benchmark needs wrk")
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_peers.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| counter round trip")]
    peers = [cells[0].split(" vs ")[1].split()[0] for cells in table]  # CPU, then req/s, per peer
    assert peers == ["stario"] * 2 + ["FastHTML"] * 2 + ["hand-written"] * 2 + ["raw"] * 2, result.stdout
    for cells in table:  # figures measured for both sides
        assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0, cells

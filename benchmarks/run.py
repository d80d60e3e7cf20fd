"""Every benchmark row against its hand-written baseline, as one table (about 5 minutes).

    python benchmarks/run.py [--quick] [--peers]

Ratios are StarModel over the baseline measured in the same run, interleaved, medians of
several runs (higher is better, 1.0 is parity). The real-server row serves each app with uvicorn
(one worker, pinned to core 0) and loads it with wrk (pinned to core 1, 32 connections), each
client holding the session cookie its app gave it; wrk comes from Debian (installed here when
missing, as root). PostgreSQL and Redis rows need ``STARMODEL_TEST_POSTGRES_URL`` and
``STARMODEL_TEST_REDIS_URL``. ``--quick`` runs every row with tiny numbers (a smoke test, not
figures). ``--peers`` adds the counter beside stario and FastHTML + HTMX (``bench_peers.py``: a
Python 3.12 and a venv made on first use).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import anyio
import bench_bulk
import bench_delivery
import bench_events
import bench_filtered
import bench_live
import bench_memory
import bench_peers
import bench_structured
import bench_viewer
import bench_wire
import http_load
import stores_bench
from table import cpu_rows, row

HERE = Path(__file__).resolve().parent


def over_http(runs: int, seconds: int) -> dict[str, bench_events.Figures]:
    """Median req/s and server CPU per request of the baseline and of StarModel behind uvicorn,
    loaded by wrk, each first checked to count per session with its cookie verified."""
    apps = {name: http_load.uvicorn(f"bench_events:{name}_app") for name in ("baseline", "starmodel")}
    return http_load.alternate(apps, runs, seconds, bench_peers.check_work)


def gate(events: dict[str, tuple[bench_events.Figures, bench_events.Figures]]) -> None:
    """Fails the run when an in-process CPU ratio passes its threshold in ``gate.json``."""
    limits = json.loads((HERE / "gate.json").read_text())
    for label, (base, ours) in events.items():
        ratio = ours.cpu_us / base.cpu_us
        if ratio > limits[label]:
            sys.exit(f"{label}: CPU per request is {ratio:.2f}x the baseline's, past the gate's {limits[label]}x")


async def collect(quick: bool, peers: bool) -> list[str]:
    n = lambda full, small: small if quick else full  # noqa: E731
    rows = []
    served = over_http(n(5, 1), n(5, 1))
    rows += cpu_rows("session counter event (def), uvicorn + wrk", served["baseline"], served["starmodel"], "1.10")
    if peers:
        rows += bench_peers.rows(n(5, 1), n(5, 1))
    events = await bench_events.measure(n(3000, 1500), n(5, 3))  # enough, even quick, for the gate
    gate(events)
    for label, goal in (("datastar event (POST, SSE answer)", "1.10"), ("state read (GET, JSON)", "1.25")):
        rows += cpu_rows(f"{label}, in-process", *events[label], goal)
    structured = await bench_structured.measure(n(2000, 250), n(5, 1))
    counter, large, by_hand = structured["counter"], structured["starmodel"], structured["baseline"]
    rows.append(
        row(
            f"{bench_structured.ROWS}-row state, one row ticked, against the counter event, in-process"
            " (CPU us per request; both StarModel)",
            f"{counter.cpu_us:,.0f}",
            f"{large.cpu_us:,.0f}",
            f"{large.cpu_us / counter.cpu_us:.2f} (lower is better)",
            "<= 2.0 (cost follows the change)",
        )
    )
    rows += cpu_rows(f"{bench_structured.ROWS}-row state, one row ticked, in-process", by_hand, large, "-")
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
    streams = n(1000, 20)
    resident = await bench_memory.residents(streams)
    rows.append(
        row(
            f"resident memory per idle live stream, {streams:,} streams (bytes)",
            f"{resident['bare']:,.0f}",
            f"{resident['identity']:,.0f}",
            f"{resident['identity'] / resident['bare']:.2f} (lower is better)",
            "<= 1.1",
        )
    )
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
        d = await bench_delivery.measure(redis, n(400, 5))
        rows.append(
            row(
                "cross-worker live delivery over Redis, p50 (ms)",
                f"{d.base_p50:.2f} (INCRBY + PUBLISH by hand)",
                f"{d.p50:.2f} (p90 {d.p90:.2f})",
                f"{d.p50 / d.base_p50:.2f} (lower is better)",
                "<= 1.2",
            )
        )
        rows.append(
            row(
                "cross-worker live delivery over Redis (CPU us per delivery, both workers)",
                f"{d.base_cpu:,.0f}",
                f"{d.cpu:,.0f}",
                f"{d.cpu / d.base_cpu:.2f} (lower is better)",
                "measured (the delay is mostly this CPU)",
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
    parser.add_argument("--peers", action="store_true", help="the counter beside stario and FastHTML (Python 3.12)")
    args = parser.parse_args()
    started = time.monotonic()
    rows = anyio.run(collect, args.quick, args.peers)
    command = "python benchmarks/run.py" + " --peers" * args.peers
    print(
        f"Measured {datetime.date.today()} with `{command}` ({os.cpu_count()} cores), "
        f"{time.monotonic() - started:.0f} s:\n"
    )
    print("| scenario | baseline | starmodel | ratio | goal |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""CPU per event with operations off (the default) and on (metrics, the slow-event timer).

    python benchmarks/bench_ops.py [--requests 3000] [--rounds 5]

The headline counter event of ``bench_events.py``, driven in this process; each row is the median
over the rounds of ``time.process_time`` per request, the apps interleaved so drift hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import anyio
from asgi_driver import Driver
from bench_events import Counter, post_event

from starmodel_asgi import StarModel

APPS: dict[str, dict[str, Any]] = {
    "metrics off (default)": {},
    "metrics on": {"metrics": True},
}


async def cpu_per_request(driver: Driver, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        status = await post_event(driver)
        assert status == 200, status
    return (time.process_time() - start) / n


async def measure(requests: int, rounds: int) -> dict[str, float]:
    drivers = {
        label: Driver(StarModel([Counter], base_path="", secret_key="bench", **options))
        for label, options in APPS.items()
    }
    for driver in drivers.values():  # warm-up
        await cpu_per_request(driver, 200)
    results: dict[str, list[float]] = {label: [] for label in drivers}
    for _ in range(rounds):
        for label, driver in drivers.items():
            results[label].append(await cpu_per_request(driver, requests))
    return {label: statistics.median(values) for label, values in results.items()}


async def main(requests: int, rounds: int) -> None:
    print(f"{requests} requests x {rounds} rounds, median CPU per datastar event, one process")
    for label, seconds in (await measure(requests, rounds)).items():
        print(f"{label:24} {seconds * 1e6:6.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.requests, args.rounds)

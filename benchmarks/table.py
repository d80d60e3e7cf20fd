"""The rows of ``run.py``'s table: scenario, baseline, StarModel, ratio, goal."""

from __future__ import annotations

from bench_events import Figures


def row(label: str, baseline: str, ours: str, ratio: str, goal: str) -> str:
    return f"| {label} | {baseline} | {ours} | {ratio} | {goal} |"


def cpu_rows(label: str, base: Figures, ours: Figures, goal: str, rate_goal: str = "-") -> list[str]:
    """A request scenario's two rows: CPU per request (the steady figure), then req/s."""
    return [
        row(
            f"{label} (CPU us per request)",
            f"{base.cpu_us:,.0f}",
            f"{ours.cpu_us:,.0f}",
            f"{ours.cpu_us / base.cpu_us:.2f} (lower is better)",
            "-" if goal == "-" else f"<= {goal}",
        ),
        row(f"{label} (req/s)", f"{base.rate:,.0f}", f"{ours.rate:,.0f}", f"{ours.rate / base.rate:.2f}", rate_goal),
    ]

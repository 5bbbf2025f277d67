"""The report: medians over repetitions with their spread, the ratio against each peer oriented
so that above 1 means we lead, one Markdown table, and the JSON and Markdown result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

OURS = "ours"
PEERS = ("celery", "arq", "procrastinate")
# Not a system one could pick: this system's processes and hops with none of its logic
# (`floor.py`), measured in the same run to show what the shape itself costs here.
FLOOR = "floor"

# Figure keys of the contract, in table order, with their unit; every other key a system
# reports follows them. Rates end in `_per_s` (higher is better); everything else here is a
# time or a size (lower is better).
FIGURES: tuple[tuple[str, str], ...] = (
    ("drain_per_s", "jobs/s"),
    ("latency_p50_ms", "ms"),
    ("latency_p99_ms", "ms"),
    ("enqueue_c1_per_s", "req/s"),
    ("enqueue_c1_p50_ms", "ms"),
    ("enqueue_c1_p99_ms", "ms"),
    ("enqueue_c32_per_s", "req/s"),
    ("enqueue_c32_p50_ms", "ms"),
    ("enqueue_c32_p99_ms", "ms"),
    ("batch_submit_p50_ms", "ms"),
    ("batch_submit_p99_ms", "ms"),
    ("delayed_lateness_p50_ms", "ms"),
    ("delayed_lateness_p99_ms", "ms"),
    ("callbacks_per_s", "callbacks/s"),
    ("aggregate_read_p50_ms", "ms"),
    ("rss_total_mb", "MiB"),
)
# Keys that describe a run rather than measure it: shown, never compared.
DESCRIPTIVE = ("delayed_pending",)
# A per-process figure of one idle worker, not a process of the run: left out of the total.
NOT_IN_TOTAL = ("rss_idle_sandbox_worker_mb", "rss_total_mb")


def higher_is_better(key: str) -> bool:
    return key.endswith("_per_s")


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def text(self, count: int) -> str:
        if count == 1:
            return _number(self.median)
        return f"{_number(self.median)} ({_number(self.low)}-{_number(self.high)})"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def with_totals(runs: dict[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Adds rss_total_mb to each repetition: the sum of its processes' peak RSS (ours: the
    four services, the zygote and NATS; peers: the worker's processes and the broker).
    PostgreSQL is shared by everyone and counted for no one."""
    totalled: dict[str, list[dict[str, float]]] = {}
    for system, repetitions in runs.items():
        totalled[system] = []
        for figures in repetitions:
            memory = [
                value
                for key, value in figures.items()
                if key.startswith("rss_") and key.endswith("_mb") and key not in NOT_IN_TOTAL
            ]
            total = {"rss_total_mb": sum(memory)} if memory else {}
            totalled[system].append({**figures, **total})
    return totalled


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Spread]]:
    """Per system, per figure: the median and range over the repetitions that reported it."""
    summary: dict[str, dict[str, Spread]] = {}
    for system, repetitions in runs.items():
        keys = {key for figures in repetitions for key in figures}
        summary[system] = {
            key: Spread.of([figures[key] for figures in repetitions if key in figures])
            for key in keys
        }
    return summary


def ratio(key: str, ours: Spread | None, peer: Spread | None) -> float | None:
    """ours/peer for rates, peer/ours for times and sizes: above 1 means we lead."""
    if ours is None or peer is None or key in DESCRIPTIVE:
        return None
    num, den = (ours.median, peer.median) if higher_is_better(key) else (peer.median, ours.median)
    return num / den if den > 0 else None


def ordered_keys(summary: dict[str, dict[str, Spread]]) -> list[str]:
    known = [key for key, _ in FIGURES]
    present = {key for figures in summary.values() for key in figures}
    rest = sorted(present - set(known))
    return [*known, *rest]


def markdown_table(
    runs: dict[str, list[dict[str, float]]], summary: dict[str, dict[str, Spread]]
) -> str:
    """One table: a row per figure, a column per system (median and min-max), per peer the
    ratio that is above 1 when we lead, and ours against the floor of our shape."""
    units = dict(FIGURES)
    systems = [s for s in (OURS, FLOOR, *PEERS) if s in summary]
    peers = [s for s in systems if s in PEERS]
    compared = [*peers, FLOOR] if FLOOR in summary else peers
    header = ["figure", "better"]
    header += [f"{s} median (min-max)" for s in systems]
    if OURS in summary:
        header += [f"lead vs {p} (x)" for p in peers]
        if FLOOR in summary:
            header.append("ours vs floor (x)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in ordered_keys(summary):
        unit = units.get(key, "ms" if key.endswith("_ms") else "MiB" if key.endswith("_mb") else "")
        better = "-" if key in DESCRIPTIVE else "higher" if higher_is_better(key) else "lower"
        row = [f"{key} ({unit})" if unit else key, better]
        for system in systems:
            spread = summary[system].get(key)
            row.append("n/a" if spread is None else spread.text(len(runs[system])))
        if OURS in summary:
            for other in compared:
                value = ratio(key, summary[OURS].get(key), summary[other].get(key))
                row.append("n/a" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # Other work on the machine moves every figure; the load says how much there was.
        "load_average_1_5_15": [round(load, 2) for load in os.getloadavg()],
    }


def render(runs: dict[str, list[dict[str, float]]], options: dict[str, Any]) -> str:
    runs = with_totals(runs)
    summary = summarise(runs)
    repeats = max((len(r) for r in runs.values()), default=0)
    info = machine()
    lines = [
        f"# Benchmark results, {date.today().isoformat()}",
        "",
        f"{repeats} repetition(s); medians with (min-max). Machine: {info['cpus']} CPUs,"
        f" {info['platform']}, Python {info['python']}; load average at the end"
        f" {info['load_average_1_5_15']}. Options: {json.dumps(options)}.",
        "",
        "`lead vs <peer>` is ours/peer for rates and peer/ours for times and memory, so a"
        " value above 1 means we lead on that figure. `n/a`: the system has no such figure."
        " rss_total_mb sums the peak RSS of the system's own processes (ours: the services,"
        " the sandbox zygote and NATS; peers: the worker's processes and Redis).",
        " `floor` is not a peer: it is this system's shape with none of its logic (the same"
        " processes, HTTP request, gRPC calls, statements, JetStream hops and worker"
        " processes, raw bytes in between; `bench/floor.py`), so `ours vs floor` is the share"
        " of what the shape allows on this machine that we reach.",
        "",
        markdown_table(runs, summary),
        "",
    ]
    return "\n".join(lines)


def write_results(
    directory: Path, runs: dict[str, list[dict[str, float]]], options: dict[str, Any]
) -> tuple[Path, Path]:
    """`<directory>/<YYYY-MM-DD>.json` (every repetition and the summary) and `.md`."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / date.today().isoformat()
    runs = with_totals(runs)
    summary = summarise(runs)
    document = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "options": options,
        "runs": runs,
        "summary": {
            system: {
                key: {"median": s.median, "min": s.low, "max": s.high}
                for key, s in sorted(figures.items())
            }
            for system, figures in summary.items()
        },
    }
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    md_path.write_text(render(runs, options))
    return json_path, md_path

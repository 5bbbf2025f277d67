"""What the peer scripts share (stdlib + psutil only): sizes, percentiles, RSS, output."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Sizes:
    """Job counts per figure; the contract's counts, or a tenth of them with --quick."""

    drain_batches: int = 10
    batch_size: int = 1_000
    batch_samples: int = 20
    latency_jobs: int = 1_000
    latency_gap_s: float = 0.005
    enqueue_c1: int = 2_000
    enqueue_c32: int = 6_400
    delayed_pending: int = 100_000
    delayed_due: int = 1_000
    delayed_window_s: float = 10.0

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if not quick:
            return cls()
        return cls(
            drain_batches=10,
            batch_size=100,
            batch_samples=5,
            latency_jobs=100,
            enqueue_c1=300,
            enqueue_c32=960,
            delayed_pending=5_000,
            delayed_due=200,
            delayed_window_s=3.0,
        )


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url", help="libpq URL of a fresh database")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts")
    parser.add_argument("--worker", action="store_true", help="run as the worker process")
    return parser.parse_args()


def log(message: str) -> None:
    """Progress on stderr: stdout carries only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def add_spread(figures: dict[str, float], prefix: str, values_ms: list[float]) -> None:
    """`<prefix>_p50_ms` and `<prefix>_p99_ms` from latencies in milliseconds."""
    figures[f"{prefix}_p50_ms"] = round(percentile(values_ms, 0.50), 3)
    figures[f"{prefix}_p99_ms"] = round(percentile(values_ms, 0.99), 3)


def emit(figures: dict[str, float]) -> None:
    """The one JSON object the runner reads: the last line on stdout."""
    print(json.dumps(figures, sort_keys=True), flush=True)


class RssSampler:
    """Peak of the summed RSS of a process tree (a root pid and all its descendants)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self._roots: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        self._roots[name] = pid

    def forget(self, name: str) -> None:
        self._roots.pop(name, None)

    def _tree_rss(self, pid: int) -> int:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for process in members:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue  # a child that ended between listing and reading
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in list(self._roots.items()):
                megabytes = self._tree_rss(pid) / (1024 * 1024)
                self.peaks[name] = max(self.peaks.get(name, 0.0), megabytes)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {f"rss_{name}_mb": round(peak, 1) for name, peak in self.peaks.items()}


class WorkerProcess:
    """This same script started with --worker as a child in a session of its own."""

    def __init__(self, script: str, extra: list[str], log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, script, "--worker", *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(script).resolve().parent),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the worker's own process group (it and the children it forked)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def follow_parent() -> None:
    """In a worker: end this worker's own process group if the benchmark script goes away.

    The worker runs in a session of its own (so its forked children stop with it); without
    this, a script killed by the runner's timeout would leave the worker running.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(os.getpgid(0), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Polls `check()` until true; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout} s")


def redis_pid(info: dict[str, object]) -> int:
    """The broker's pid from Redis INFO, to sample its RSS."""
    return int(str(info["process_id"]))


def pacer(start: float, gap: float, index: int) -> float:
    """Seconds to sleep so job `index` is submitted `gap` after the previous slot."""
    return max(0.0, start + index * gap - time.perf_counter())

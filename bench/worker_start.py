"""Worker start, fork to ready: the executor's pool forks a sandboxed worker from its zygote
and waits for its first answer, for each network a worker may have on this machine.

The same path as every run's new worker (namespaces, mounts, limits, and for `isolated` the
pasta that configures its network before the function's first line); each worker is stopped
before the next starts, so every start meets an idle zygote.

An isolated worker's network is made ahead, in the zygote's spare (`sinas_executor.spare`),
as soon as the worker before it starts. So `isolated` is timed as starts usually come, a
little apart (SPACING_SECONDS: the spare is ready), `isolated_back_to_back` with each start
right after the last (its spare still being made), and `isolated_cold` with no spare at all.
"""

from __future__ import annotations

import asyncio
import time

from load import percentile

from sinas_executor.network import NetworkUnavailable
from sinas_executor.pool import PoolLimits, WorkerPool

# Each figure's network, whether its pool makes spares, and the pause before each start.
SPACING_SECONDS = 0.1
RUNS = {
    "isolated": ("isolated", True, SPACING_SECONDS),
    "isolated_back_to_back": ("isolated", True, 0.0),
    "isolated_cold": ("isolated", False, 0.0),
    "none": ("none", True, 0.0),
    "host": ("host", True, 0.0),
}


async def _starts(network: str, spare: bool, spacing: float, count: int) -> list[float]:
    pool = WorkerPool(PoolLimits(concurrency=1, network=network, spare_worker=spare))
    await pool.start()
    try:
        timings = []
        for _ in range(count):
            await asyncio.sleep(spacing)
            began = time.perf_counter()
            worker = await pool.start_probe()
            timings.append(1000 * (time.perf_counter() - began))
            await worker.stop()
        return timings
    finally:
        await pool.close()


async def _measure(count: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, (network, spare, spacing) in RUNS.items():
        try:
            timings = await _starts(network, spare, spacing, count)
        except NetworkUnavailable:
            # Not on this machine: no figure rather than another network's under its name.
            continue
        figures[f"worker_start_{name}_p50_ms"] = percentile(timings, 0.5)
        figures[f"worker_start_{name}_p99_ms"] = percentile(timings, 0.99)
    return figures


def measure_worker_start(count: int) -> dict[str, float]:
    return asyncio.run(_measure(count))


if __name__ == "__main__":
    for key, value in measure_worker_start(100).items():
        print(f"{key}: {value:.1f}")

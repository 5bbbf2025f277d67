"""arq 0.28 figures: one worker process polling Redis every 1 ms (`poll_delay`), max_jobs default.

arq has no bulk enqueue: a "bulk submission" is 1,000 `enqueue_job` calls in flight at once
on one pool (asyncio.gather), the fastest way arq offers. The task records its own start and
finish (time.time()) in its result, so drain and delayed lateness come from arq's result keys.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from arq import create_pool, run_worker
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from peerkit import (
    RssSampler,
    Sizes,
    WorkerProcess,
    add_spread,
    arguments,
    emit,
    follow_parent,
    log,
    pacer,
    redis_pid,
)

POLL_DELAY_S = 0.001
FAR_DEFER = timedelta(hours=1)


async def noop(ctx: dict[str, Any]) -> dict[str, float]:
    started = time.time()
    return {"started": started, "finished": time.time()}


class WorkerSettings:
    functions = [noop]
    poll_delay = POLL_DELAY_S
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )


async def wait_for(check: Any, *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} within {timeout} s")


async def results(pool: ArqRedis, job_ids: list[str]) -> list[dict[str, float] | None]:
    found: list[dict[str, float] | None] = []
    for start in range(0, len(job_ids), 1_000):
        chunk = job_ids[start : start + 1_000]
        infos = await asyncio.gather(*(Job(j, pool).result_info() for j in chunk))
        found += [info.result if info is not None else None for info in infos]
    return found


async def wait_results(
    pool: ArqRedis, job_ids: list[str], timeout: float, what: str
) -> list[dict[str, float]]:
    async def all_done() -> bool:
        # One cheap read of the last job until it is done, so polling doesn't load the machine.
        if await Job(job_ids[-1], pool).result_info() is None:
            return False
        return all(r is not None for r in await results(pool, job_ids))

    await wait_for(all_done, timeout=timeout, what=what, interval=0.2)
    return [r for r in await results(pool, job_ids) if r is not None]


async def bulk_submit(pool: ArqRedis, size: int, **options: Any) -> tuple[float, list[str]]:
    began = time.perf_counter()
    jobs = await asyncio.gather(*(pool.enqueue_job("noop", **options) for _ in range(size)))
    elapsed_ms = (time.perf_counter() - began) * 1000
    return elapsed_ms, [job.job_id for job in jobs if job is not None]


async def enqueue(pool: ArqRedis, count: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = iter(range(count))

    async def client() -> None:
        for _ in remaining:
            began = time.perf_counter()
            await pool.enqueue_job("noop")
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return count / (time.perf_counter() - began), latencies


def start_worker(script: str, redis_url: str, work_dir: Any) -> WorkerProcess:
    return WorkerProcess(
        script, ["--redis-url", redis_url, "--work-dir", str(work_dir)], work_dir / "arq-worker.log"
    )


async def measure(args: Any) -> dict[str, float]:
    sizes = Sizes.pick(args.quick)
    pool = await create_pool(RedisSettings.from_dsn(args.redis_url))
    figures: dict[str, float] = {}
    await pool.flushdb()  # an empty Redis, whatever a previous run left
    sampler = RssSampler()
    sampler.watch("broker", redis_pid(await pool.info("server")))

    log("batch submit (no worker)")
    batch_ms = [(await bulk_submit(pool, sizes.batch_size))[0] for _ in range(sizes.batch_samples)]
    add_spread(figures, "batch_submit", batch_ms)
    await pool.flushdb()

    log("drain: submitting with no worker")
    drain_ids: list[str] = []
    for _ in range(sizes.drain_batches):
        drain_ids += (await bulk_submit(pool, sizes.batch_size))[1]
    worker = start_worker(__file__, args.redis_url, args.work_dir)
    sampler.watch("worker", worker.pid)
    try:
        done = await wait_results(pool, drain_ids, 600, "the drain finishing")
        span = max(r["finished"] for r in done) - min(r["started"] for r in done)
        figures["drain_per_s"] = round(len(done) / span, 1)

        log("latency")
        latencies: list[float] = []
        start = time.perf_counter()
        for index in range(sizes.latency_jobs):
            await asyncio.sleep(pacer(start, sizes.latency_gap_s, index))
            began = time.perf_counter()
            job = await pool.enqueue_job("noop")
            assert job is not None
            await job.result(timeout=30, poll_delay=POLL_DELAY_S)
            latencies.append((time.perf_counter() - began) * 1000)
        add_spread(figures, "latency", latencies)

        for concurrency, count in ((1, sizes.enqueue_c1), (32, sizes.enqueue_c32)):
            log(f"enqueue at concurrency {concurrency}")
            rate, spread = await enqueue(pool, count, concurrency)
            figures[f"enqueue_c{concurrency}_per_s"] = round(rate, 1)
            add_spread(figures, f"enqueue_c{concurrency}", spread)

        log(f"delayed: {sizes.delayed_pending} pending, {sizes.delayed_due} due")
        far = datetime.now(UTC) + FAR_DEFER
        for _ in range(0, sizes.delayed_pending, 1_000):
            await bulk_submit(pool, min(1_000, sizes.delayed_pending), _defer_until=far)
        base = time.time() + 3.0
        due: dict[str, float] = {}
        for index in range(sizes.delayed_due):
            at = base + index * sizes.delayed_window_s / sizes.delayed_due
            job = await pool.enqueue_job("noop", _defer_until=datetime.fromtimestamp(at, UTC))
            assert job is not None
            due[job.job_id] = at
        if time.time() > base:
            log("warning: submitting the due jobs took longer than the 3 s lead")
        ids = list(due)
        finished = await wait_results(pool, ids, 120 + sizes.delayed_window_s, "the due jobs")
        lateness = [(r["started"] - due[i]) * 1000 for i, r in zip(ids, finished, strict=True)]
        add_spread(figures, "delayed_lateness", lateness)
        figures["delayed_pending"] = float(await pool.zcard("arq:queue"))
    finally:
        worker.stop()
        await pool.aclose()
    figures.update(sampler.stop())
    return figures


def main() -> None:
    args = arguments(__doc__ or "")
    if args.worker:
        WorkerSettings.redis_settings = RedisSettings.from_dsn(args.redis_url)
        follow_parent()
        run_worker(WorkerSettings)  # type: ignore[arg-type]
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    emit(asyncio.run(measure(args)))


if __name__ == "__main__":
    main()

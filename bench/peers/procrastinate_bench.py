"""procrastinate 3 figures: one worker process on the same embedded PostgreSQL (psycopg 3).

Bulk enqueue is `batch_defer_async` (one INSERT per 1,000 jobs). procrastinate keeps no
results, but its `procrastinate_events` table records when each job started and succeeded:
drain and delayed lateness come from those rows. The client reads "done" from the job's
status, polling every 1 ms as arq's client does.

Worker settings: procrastinate's default concurrency of 1. Ten slots (arq's default
max_jobs) drained about half as fast here (116 vs 215 jobs/s on 10,000 jobs): the slots
contend for the same head of the queue. As arq polls every 1 ms, so does this worker for
due jobs (POLL_INTERVAL_S; procrastinate's default is 5 s); immediate jobs wake it through
LISTEN/NOTIFY either way.
With 100,000 jobs scheduled an hour ahead, each fetch walks past them (its index orders by
priority and id, not by due time), so delayed lateness runs to tens of seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
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
)
from procrastinate import App, PsycopgConnector

# Overridable to compare settings by hand; the defaults are what the report uses.
CONCURRENCY = int(os.environ.get("BENCH_PROCRASTINATE_CONCURRENCY", "1"))
POLL_INTERVAL_S = float(os.environ.get("BENCH_PROCRASTINATE_POLL_S", "0.001"))
FAR_SCHEDULE = timedelta(hours=1)


async def noop() -> None:
    return None


def connect(database_url: str, max_size: int) -> App:
    """The app with the noop task on a pool of `max_size` connections to `database_url`."""
    app = App(connector=PsycopgConnector(conninfo=database_url, min_size=1, max_size=max_size))
    app.task(name="noop")(noop)
    return app


async def run_worker(database_url: str) -> None:
    app = connect(database_url, max_size=CONCURRENCY + 2)
    async with app.open_async():
        await app.run_worker_async(
            concurrency=CONCURRENCY, fetch_job_polling_interval=POLL_INTERVAL_S
        )


async def count_succeeded(db: psycopg.AsyncConnection[Any], ids: list[int]) -> int:
    row = await (
        await db.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND id = ANY(%s)",
            (ids,),
        )
    ).fetchone()
    return int(row[0]) if row else 0


async def wait_succeeded(db: psycopg.AsyncConnection[Any], ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # One cheap read of the last job until it is done, so polling doesn't load the machine.
    while not await count_succeeded(db, ids[-1:]) or await count_succeeded(db, ids) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids)} jobs did not all succeed within {timeout} s")
        await asyncio.sleep(0.2)


async def bulk_submit(app: App, size: int, **options: Any) -> tuple[float, list[int]]:
    began = time.perf_counter()
    ids = await app.configure_task("noop", **options).batch_defer_async(*({} for _ in range(size)))
    return (time.perf_counter() - began) * 1000, ids


async def enqueue(app: App, count: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = iter(range(count))

    async def client() -> None:
        for _ in remaining:
            began = time.perf_counter()
            await app.configure_task("noop").defer_async()
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return count / (time.perf_counter() - began), latencies


async def measure(args: Any) -> dict[str, float]:
    sizes = Sizes.pick(args.quick)
    app = connect(args.database_url, max_size=34)
    figures: dict[str, float] = {}
    sampler = RssSampler()
    async with (
        app.open_async(),
        await psycopg.AsyncConnection.connect(args.database_url, autocommit=True) as db,
    ):
        await app.schema_manager.apply_schema_async()

        log("batch submit (no worker)")
        batch_ms = [
            (await bulk_submit(app, sizes.batch_size))[0] for _ in range(sizes.batch_samples)
        ]
        add_spread(figures, "batch_submit", batch_ms)
        await db.execute("TRUNCATE procrastinate_jobs CASCADE")

        log("drain: submitting with no worker")
        drain_ids: list[int] = []
        for _ in range(sizes.drain_batches):
            drain_ids += (await bulk_submit(app, sizes.batch_size))[1]
        worker = WorkerProcess(
            __file__,
            ["--database-url", args.database_url, "--work-dir", str(args.work_dir)],
            args.work_dir / "procrastinate-worker.log",
        )
        sampler.watch("worker", worker.pid)
        try:
            await wait_succeeded(db, drain_ids, 600)
            row = await (
                await db.execute(
                    "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
                    " - min(at) FILTER (WHERE type = 'started'))"
                    " FROM procrastinate_events WHERE job_id = ANY(%s)",
                    (drain_ids,),
                )
            ).fetchone()
            assert row is not None
            figures["drain_per_s"] = round(len(drain_ids) / float(row[0]), 1)
            # As for ours (`Rows.settle`): what autovacuum and the checkpointer do within the
            # minute after ten thousand jobs ran through tables that were empty, done now.
            await db.execute("VACUUM (ANALYZE) procrastinate_jobs, procrastinate_events")
            await db.execute("CHECKPOINT")

            log("latency")
            latencies: list[float] = []
            start = time.perf_counter()
            for index in range(sizes.latency_jobs):
                await asyncio.sleep(pacer(start, sizes.latency_gap_s, index))
                began = time.perf_counter()
                job_id = await app.configure_task("noop").defer_async()
                while True:
                    if await count_succeeded(db, [job_id]):
                        break
                    await asyncio.sleep(0.001)  # the client polls as arq's does, every 1 ms
                latencies.append((time.perf_counter() - began) * 1000)
            add_spread(figures, "latency", latencies)

            for concurrency, count in ((1, sizes.enqueue_c1), (32, sizes.enqueue_c32)):
                log(f"enqueue at concurrency {concurrency}")
                rate, spread = await enqueue(app, count, concurrency)
                figures[f"enqueue_c{concurrency}_per_s"] = round(rate, 1)
                add_spread(figures, f"enqueue_c{concurrency}", spread)

            log(f"delayed: {sizes.delayed_pending} pending, {sizes.delayed_due} due")
            far = datetime.now(UTC) + FAR_SCHEDULE
            for _ in range(0, sizes.delayed_pending, 1_000):
                await bulk_submit(app, min(1_000, sizes.delayed_pending), schedule_at=far)
            base = time.time() + 3.0
            due_ids: list[int] = []
            for index in range(sizes.delayed_due):
                at = base + index * sizes.delayed_window_s / sizes.delayed_due
                when = datetime.fromtimestamp(at, UTC)
                due_ids.append(await app.configure_task("noop", schedule_at=when).defer_async())
            if time.time() > base:
                log("warning: submitting the due jobs took longer than the 3 s lead")
            await wait_succeeded(db, due_ids, 120 + sizes.delayed_window_s)
            rows = await (
                await db.execute(
                    "SELECT extract(epoch FROM e.at - j.scheduled_at) * 1000"
                    " FROM procrastinate_jobs j JOIN procrastinate_events e"
                    " ON e.job_id = j.id AND e.type = 'started' WHERE j.id = ANY(%s)",
                    (due_ids,),
                )
            ).fetchall()
            add_spread(figures, "delayed_lateness", [float(r[0]) for r in rows])
            pending = await (
                await db.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
            ).fetchone()
            figures["delayed_pending"] = float(pending[0]) if pending else 0.0
        finally:
            worker.stop()
    figures.update(sampler.stop())
    return figures


def main() -> None:
    args = arguments(__doc__ or "")
    if args.worker:
        follow_parent()
        asyncio.run(run_worker(args.database_url))
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    emit(asyncio.run(measure(args)))


if __name__ == "__main__":
    main()

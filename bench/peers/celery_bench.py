"""Celery 5 figures: Redis broker and result backend, a prefork worker with 2 processes.

Bulk enqueue is `group(...).apply_async()` (one producer, 1,000 messages). The task records
its own start and finish (time.time()) in its result, so drain and delayed lateness come from
Celery's result backend. Delayed jobs are ETA tasks, which Celery keeps in the worker's memory
(the broker hands them out at once): 10,000 pending is measured instead of 100,000 and
recorded as `delayed_pending`.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, group
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
    wait_until,
)

app = Celery("celery_bench")
app.conf.update(
    broker_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
# ETA tasks past the Redis visibility timeout would be delivered twice: keep them inside it.
FAR_ETA = timedelta(minutes=30)
CELERY_DELAYED_PENDING = 10_000


@app.task(name="noop")
def noop() -> dict[str, float]:
    started = time.time()
    return {"started": started, "finished": time.time()}


def run_worker() -> None:
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def start_worker(script: str, redis_url: str, work_dir: Any) -> WorkerProcess:
    worker = WorkerProcess(
        script,
        ["--redis-url", redis_url, "--work-dir", str(work_dir)],
        work_dir / "celery-worker.log",
    )

    def answers() -> bool:
        if not worker.alive():
            raise RuntimeError("the Celery worker exited; see celery-worker.log")
        return bool(app.control.ping(timeout=0.5))

    wait_until(answers, timeout=60, what="the Celery worker answering a ping")
    return worker


def results(task_ids: list[str]) -> list[dict[str, Any] | None]:
    """The stored results by id (None where not stored yet), read straight from Redis."""
    client = app.backend.client
    found: list[dict[str, Any] | None] = []
    for start in range(0, len(task_ids), 1_000):
        keys = [app.backend.get_key_for_task(t) for t in task_ids[start : start + 1_000]]
        for raw in client.mget(keys):
            found.append(json.loads(raw)["result"] if raw is not None else None)
    return found


def wait_results(task_ids: list[str], timeout: float, what: str) -> list[dict[str, Any]]:
    def done() -> bool:
        # One cheap read of the last job until it is done, so polling doesn't load the machine.
        last = app.backend.client.get(app.backend.get_key_for_task(task_ids[-1]))
        return last is not None and all(r is not None for r in results(task_ids))

    wait_until(
        done,
        timeout=timeout,
        what=what,
        interval=0.2,
    )
    return [r for r in results(task_ids) if r is not None]


def bulk_submit(size: int) -> tuple[float, list[str]]:
    began = time.perf_counter()
    outcome = group(noop.s() for _ in range(size)).apply_async()
    elapsed_ms = (time.perf_counter() - began) * 1000
    return elapsed_ms, [child.id for child in outcome.results]


def enqueue(count: int, concurrency: int) -> tuple[float, list[float]]:
    def one(_: int) -> float:
        began = time.perf_counter()
        noop.delay()
        return (time.perf_counter() - began) * 1000

    began = time.perf_counter()
    if concurrency == 1:
        latencies = [one(i) for i in range(count)]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, range(count)))
    return count / (time.perf_counter() - began), latencies


def main() -> None:
    args = arguments(__doc__ or "")
    os.environ["BENCH_REDIS_URL"] = args.redis_url
    app.conf.update(broker_url=args.redis_url, result_backend=args.redis_url)
    if args.worker:
        follow_parent()
        run_worker()
        return
    sizes = Sizes.pick(args.quick)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float] = {}
    broker = app.backend.client
    broker.flushdb()  # ETA tasks a stopped worker handed back would join this run's drain
    sampler = RssSampler()
    sampler.watch("broker", redis_pid(broker.info("server")))

    log("batch submit (no worker)")
    batch_ms = [bulk_submit(sizes.batch_size)[0] for _ in range(sizes.batch_samples)]
    add_spread(figures, "batch_submit", batch_ms)
    app.control.purge()

    log("drain: submitting with no worker")
    drain_ids: list[str] = []
    for _ in range(sizes.drain_batches):
        drain_ids += bulk_submit(sizes.batch_size)[1]
    worker = start_worker(__file__, args.redis_url, args.work_dir)
    sampler.watch("worker", worker.pid)
    try:
        done = wait_results(drain_ids, 600, "the drain finishing")
        span = max(r["finished"] for r in done) - min(r["started"] for r in done)
        figures["drain_per_s"] = round(len(done) / span, 1)

        log("latency")
        noop.delay().get(timeout=30)  # warm-up: the first get opens the result subscription
        latencies: list[float] = []
        start = time.perf_counter()
        for index in range(sizes.latency_jobs):
            time.sleep(pacer(start, sizes.latency_gap_s, index))
            began = time.perf_counter()
            noop.delay().get(timeout=30)
            latencies.append((time.perf_counter() - began) * 1000)
        add_spread(figures, "latency", latencies)

        for concurrency, count in ((1, sizes.enqueue_c1), (32, sizes.enqueue_c32)):
            log(f"enqueue at concurrency {concurrency}")
            rate, spread = enqueue(count, concurrency)
            figures[f"enqueue_c{concurrency}_per_s"] = round(rate, 1)
            add_spread(figures, f"enqueue_c{concurrency}", spread)
        wait_until(lambda: broker.llen("celery") == 0, timeout=300, what="the queue emptying")

        pending = min(CELERY_DELAYED_PENDING, sizes.delayed_pending)
        log(f"delayed: {pending} pending, {sizes.delayed_due} due")
        far = datetime.now(UTC) + FAR_ETA
        for _ in range(pending):
            noop.apply_async(eta=far)
        base = time.time() + 3.0
        due: dict[str, float] = {}
        for index in range(sizes.delayed_due):
            at = base + index * sizes.delayed_window_s / sizes.delayed_due
            due[noop.apply_async(eta=datetime.fromtimestamp(at, UTC)).id] = at
        if time.time() > base:
            log("warning: submitting the due jobs took longer than the 3 s lead")
        ids = list(due)
        done = wait_results(ids, 120 + sizes.delayed_window_s, "the due jobs running")
        lateness = [(r["started"] - due[i]) * 1000 for i, r in zip(ids, done, strict=True)]
        add_spread(figures, "delayed_lateness", lateness)
        figures["delayed_pending"] = float(pending)
    finally:
        worker.stop()
    figures.update(sampler.stop())
    emit(figures)


if __name__ == "__main__":
    main()

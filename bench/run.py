"""`make bench`: our own figures on embedded servers. Throughput comes from the database's own
timestamps, not from the client, so the load generator doesn't set the result.

- drain: N no-op executions queued while no executor runs, then one executor starts;
  executions/s = N / (last completed_at - first started_at).
- enqueue: REST `execute/async` requests/s and p50/p99 at concurrency 1 and 32 (httpx is the
  client: at 32 in flight it is known to be the bottleneck on a 2-core machine).
- sync round trip: `execute` of a no-op function, p50/p99 (submit, dispatch, claim, run,
  complete, notify, answer).
- batch submit: `execute/batch` of 1,000 children, one request at a time, p50/p99 (validate
  every input, one transaction with one multi-row INSERT).
- batch drain: executions/s over those batches' children, from the database's timestamps
  (every child's completion also runs the batch's terminal check).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres
from sinas_devstack.stack import Stack, StackConfig
from sinas_devstack.supervisor import ensure_database

NOOP = "def handler(input_data, context):\n    return {}\n"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def create_noop(client: httpx.AsyncClient, name: str) -> str:
    body = {
        "namespace": "bench",
        "name": name,
        "code": NOOP,
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
    }
    reply = await client.post("/api/v1/functions", json=body)
    reply.raise_for_status()
    return f"/functions/bench/{name}"


async def enqueue_many(
    client: httpx.AsyncClient, path: str, count: int, concurrency: int
) -> list[float]:
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            reply = await client.post(f"{path}/execute/async", json={"input": {}})
            reply.raise_for_status()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def drain_rate(database_url: str, function_name: str) -> tuple[int, float]:
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(completed_at) - min(started_at))"
            " FROM executions WHERE name = %s AND status = 'COMPLETED'",
            (function_name,),
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


async def wait_all_done(database_url: str, function_name: str, count: int) -> None:
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM executions WHERE name = %s"
                " AND status IN ('COMPLETED', 'FAILED')",
                (function_name,),
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.2)


BATCH_SIZE = 1000


async def measure_batches(
    client: httpx.AsyncClient, database_url: str, batches: int
) -> dict[str, Any]:
    path = await create_noop(client, "batch")
    body = {"inputs": [{"i": i} for i in range(BATCH_SIZE)]}
    latencies: list[float] = []
    for _ in range(batches):
        started = time.perf_counter()
        reply = await client.post(f"{path}/execute/batch", json=body)
        reply.raise_for_status()
        latencies.append(time.perf_counter() - started)
    await wait_all_done(database_url, "batch", batches * BATCH_SIZE)
    done, seconds = drain_rate(database_url, "batch")
    return {
        "batch submit p50 ms": 1000 * percentile(latencies, 0.5),
        "batch submit p99 ms": 1000 * percentile(latencies, 0.99),
        "batch drain executions/s": done / seconds if seconds else float("nan"),
    }


async def measure(
    stack: Stack, drain_count: int, enqueue_count: int, batches: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    headers = {"X-API-Key": stack.config.admin_key}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers=headers, timeout=60, limits=limits
    ) as client:
        drain_path = await create_noop(client, "drain")
        await enqueue_many(client, drain_path, drain_count, 32)
        executor = stack.executor()
        executor.start()
        stack.wait_ready(executor)
        await wait_all_done(stack.config.database_url, "drain", drain_count)
        done, seconds = drain_rate(stack.config.database_url, "drain")
        results["drain executions/s"] = done / seconds if seconds else float("nan")

        enqueue_path = await create_noop(client, "enqueue")
        for concurrency in (1, 32):
            started = time.perf_counter()
            latencies = await enqueue_many(client, enqueue_path, enqueue_count, concurrency)
            elapsed = time.perf_counter() - started
            results[f"enqueue c={concurrency} req/s"] = enqueue_count / elapsed
            results[f"enqueue c={concurrency} p50 ms"] = 1000 * percentile(latencies, 0.5)
            results[f"enqueue c={concurrency} p99 ms"] = 1000 * percentile(latencies, 0.99)
        await wait_all_done(stack.config.database_url, "enqueue", 2 * enqueue_count)

        sync_path = await create_noop(client, "sync")
        round_trips: list[float] = []
        for _ in range(200):
            started = time.perf_counter()
            reply = await client.post(f"{sync_path}/execute", json={"input": {}, "timeout": 30})
            reply.raise_for_status()
            assert reply.json()["status"] == "success", reply.text
            round_trips.append(time.perf_counter() - started)
        results["sync execute p50 ms"] = 1000 * percentile(round_trips, 0.5)
        results["sync execute p99 ms"] = 1000 * percentile(round_trips, 0.99)
        results.update(await measure_batches(client, stack.config.database_url, batches))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain", type=int, default=5000, help="executions drained per round")
    parser.add_argument("--enqueue", type=int, default=1000, help="requests per enqueue figure")
    parser.add_argument(
        "--batches", type=int, default=20, help="1,000-child batches submitted per round"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument(
        "--scale-out", action="store_true", help="only the 1 vs 2 executor figure (scale_out.py)"
    )
    options = parser.parse_args()
    if options.scale_out:
        from scale_out import main as scale_out

        scale_out()
        return

    root = Path(tempfile.mkdtemp(prefix="sinas-bench-"))
    root.chmod(0o755)
    postgres = EmbeddedPostgres(root / "postgres")
    nats = EmbeddedNats(root / "nats")
    admin_url = postgres.start()
    nats_url = nats.start()
    rounds: list[dict[str, Any]] = []
    try:
        for round_number in range(options.repeat):
            stack = Stack(
                StackConfig(
                    database_url=ensure_database(admin_url, f"bench_{round_number}"),
                    nats_url=nats_url,
                    log_dir=root / f"logs-{round_number}",
                    admin_key="sk-" + secrets.token_urlsafe(32),
                    nats_stream_prefix=f"BENCH{round_number}",
                )
            )
            scheduler, gateway = stack.scheduler(), stack.gateway()
            try:
                scheduler.start()
                stack.wait_ready(scheduler, timeout=120)
                gateway.start()
                stack.wait_ready(gateway)
                rounds.append(
                    asyncio.run(measure(stack, options.drain, options.enqueue, options.batches))
                )
            finally:
                stack.stop_all()
    finally:
        nats.stop()
        postgres.stop()
    print(f"{'figure':<28} {'median':>10} {'min':>10} {'max':>10}")
    for name in rounds[0]:
        values = [result[name] for result in rounds]
        median, low, high = statistics.median(values), min(values), max(values)
        print(f"{name:<28} {median:>10.1f} {low:>10.1f} {high:>10.1f}")


if __name__ == "__main__":
    main()

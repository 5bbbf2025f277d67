"""The floor of this system's shape: the processes and hops a job crosses, none of our logic.

    python bench/floor.py [--quick]        # alone; `make bench` runs it beside ours as `floor`

What it runs (`floor_services.py`), each in a process of its own as in the real system, on the
embedded PostgreSQL and NATS: a FastAPI gateway on uvicorn (httptools) that turns `POST
/submit` into a unary grpc.aio call, sending the submits that wait behind a call under way
together in the next one (as ours does); a scheduler that inserts the submitted rows in one
autocommit statement, answers, and publishes each job to a JetStream work queue with its
message id (`publish_async`); an executor that pulls (`sinas_common.pull.fetch_available`, as
ours), claims what it fetched in one call (one conditional `UPDATE ... = ANY`, committed, and
one Ed25519 signature per claimed job, its token), hands each job to one of 8 worker processes
over a pipe and back, reports them done in one call per flush (one `UPDATE`, committed), then
acks each message. Messages are raw bytes: no protobuf, JSON, validation, authentication,
permissions, dispatch marks, logging or metrics.

Figures, measured as `bench/ours.py` measures ours:
- drain: 1,000-row batches inserted by one statement each and published, no executor
  running; then the executor starts; jobs/s from the rows' first start to their last end.
- latency: one job at a time on 5 ms slots, each once the previous one ended, the client
  polling the row every millisecond; p50/p99 from the POST to the poll that sees it done.
- enqueue at concurrency 1 and 32 (aiohttp), the executor running the jobs: requests/s,
  p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import psycopg
from floor_services import SCHEMA, SERVICE, STREAM, STREAM_PREFIX, SUBJECT, spawn
from load import percentile
from rows import libpq_url

from sinas_common.nats_connect import connect_nats
from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres, free_port, wait_for_port
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.supervisor import ensure_database

BATCH_SIZE = 1000


# -- the client ------------------------------------------------------------------------------


class Client:
    def __init__(self, database: str, gateway_port: int, scheduler_port: int) -> None:
        self._database = database
        self._url = f"http://127.0.0.1:{gateway_port}/submit"
        self._scheduler_port = scheduler_port

    async def __aenter__(self) -> Client:
        self._rows = await psycopg.AsyncConnection.connect(self._database, autocommit=True)
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=2))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.close()
        await self._rows.close()

    async def submit(self) -> str:
        async with self._http.post(self._url, json={"input": {}}) as reply:
            return str((await reply.json())["execution_id"])

    async def wait_done(self, job_id: str) -> None:
        while True:
            cursor = await self._rows.execute(
                "SELECT status = 'COMPLETED' FROM floor_jobs WHERE id = %s", (job_id,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.001)

    async def latency(self, jobs: int) -> list[float]:
        for _ in range(30):  # warm-up: connections, plans, workers
            await self.wait_done(await self.submit())
        took = []
        start = time.perf_counter()
        for index in range(jobs):
            await asyncio.sleep(max(0.0, start + index * 0.005 - time.perf_counter()))
            began = time.perf_counter()
            await self.wait_done(await self.submit())
            took.append((time.perf_counter() - began) * 1000)
        return took

    async def enqueue(self, jobs: int, concurrency: int) -> tuple[float, list[float]]:
        """`jobs` submits from `concurrency` clients, each sending its next once answered."""
        took: list[float] = []
        tickets = iter(range(jobs))

        async def one_client() -> None:
            for _ in tickets:
                began = time.perf_counter()
                await self.submit()
                took.append((time.perf_counter() - began) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return jobs / (time.perf_counter() - start), took

    async def submit_batches(self, batches: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self._scheduler_port}") as channel:
            submit_batch = channel.unary_unary(f"/{SERVICE}/SubmitBatch")
            for _ in range(batches):
                await submit_batch(str(BATCH_SIZE).encode())

    async def drain_rate(self, total: int) -> float:
        while True:
            cursor = await self._rows.execute(
                "SELECT count(*), extract(epoch FROM max(completed_at) - min(started_at)) "
                "FROM floor_jobs WHERE status = 'COMPLETED'"
            )
            row = await cursor.fetchone()
            assert row is not None
            if row[0] >= total:
                return float(row[0] / row[1])
            await asyncio.sleep(0.05)


# -- orchestration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FloorSizes:
    latency_jobs: int = 1000
    enqueue_jobs: int = 1000
    drain_batches: int = 10

    @classmethod
    def quick(cls) -> FloorSizes:
        return cls(latency_jobs=100, enqueue_jobs=200, drain_batches=2)


async def measure(database: str, work: Path, sizes: FloorSizes) -> dict[str, float]:
    """One repetition on `database` (a fresh one) and a NATS server of its own."""
    accounts = provision_nats_users(work / "nats-auth", prefixes=(STREAM_PREFIX,))
    users = accounts.role_env()
    nats_server = EmbeddedNats(work / "nats", accounts)
    nats_url = nats_server.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(SCHEMA)
        owner = accounts.settings("scheduler", url=nats_url, prefix=STREAM_PREFIX)
        nc = await connect_nats(owner, name="floor-setup")
        await nc.jetstream().add_stream(name=STREAM, subjects=[SUBJECT], retention="workqueue")
        await nc.close()
        scheduler_port, gateway_port = free_port(), free_port()
        processes.append(
            spawn("scheduler", database, nats_url, scheduler_port, env=users["scheduler"])
        )
        processes.append(spawn("gateway", scheduler_port, gateway_port))
        for port, process in ((scheduler_port, processes[0]), (gateway_port, processes[1])):
            wait_for_port("127.0.0.1", port, timeout=60, process=process)
        figures: dict[str, float] = {}
        async with Client(database, gateway_port, scheduler_port) as client:
            await client.submit_batches(sizes.drain_batches)
            processes.append(spawn("executor", scheduler_port, nats_url, env=users["executor"]))
            total = sizes.drain_batches * BATCH_SIZE
            figures["drain_per_s"] = round(await client.drain_rate(total), 1)
            took = await client.latency(sizes.latency_jobs)
            figures["latency_p50_ms"] = round(statistics.median(took), 2)
            figures["latency_p99_ms"] = round(percentile(took, 0.99), 2)
            for concurrency in (1, 32):
                rate, took = await client.enqueue(sizes.enqueue_jobs, concurrency)
                figures[f"enqueue_c{concurrency}_per_s"] = round(rate, 1)
                figures[f"enqueue_c{concurrency}_p50_ms"] = round(statistics.median(took), 2)
                figures[f"enqueue_c{concurrency}_p99_ms"] = round(percentile(took, 0.99), 2)
        return figures
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        nats_server.stop()


def run_floor(admin_url: str, work_dir: Path, number: int, sizes: FloorSizes) -> dict[str, float]:
    """One repetition of the floor on the benchmark's PostgreSQL server, in a fresh database."""
    database = libpq_url(ensure_database(admin_url, f"bench_floor_{number}"))
    directory = work_dir / f"floor-{number}"
    directory.mkdir(parents=True, exist_ok=True)
    return asyncio.run(measure(database, directory, sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs: a fast check")
    options = parser.parse_args()
    sizes = FloorSizes.quick() if options.quick else FloorSizes()
    with tempfile.TemporaryDirectory(prefix="floor-") as work:
        postgres = EmbeddedPostgres(Path(work) / "pg", ephemeral=True)
        try:
            figures = run_floor(postgres.start(), Path(work), 0, sizes)
        finally:
            postgres.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

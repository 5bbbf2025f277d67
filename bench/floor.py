"""The floor of this system's shape: the processes and hops a job crosses, none of our logic.

    python bench/floor.py [--quick]        # alone; `make bench` runs it beside ours as `floor`

What it runs, each in a process of its own as in the real system, on the embedded PostgreSQL
and NATS: a FastAPI gateway on uvicorn (httptools) that turns `POST /submit` into a unary
grpc.aio call, sending the submits that wait behind a call under way together in the next one
(as ours does); a scheduler that inserts the submitted rows in one autocommit statement,
answers, and publishes each job to a JetStream work queue with its message id
(`publish_async`); an executor that pulls (`sinas_common.pull.fetch_available`, as ours),
claims what it fetched in one call (one conditional `UPDATE ... = ANY`, committed, and one
Ed25519 signature per claimed job, its token), hands each job to one of 8 worker processes
over a pipe and back, reports them done in one call per flush (one `UPDATE`, committed),
then acks each message. Messages are raw bytes: no protobuf, JSON, validation,
authentication, permissions, dispatch marks, logging or metrics.

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
import base64
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import nats
import psycopg
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from load import percentile
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from rows import libpq_url

from sinas_common.pull import fetch_available
from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres, free_port, wait_for_port
from sinas_devstack.supervisor import ensure_database

STREAM = "FLOOR"
SUBJECT = "floor.jobs"
SERVICE = "floor.Scheduler"
WORKERS = 8
PREFETCH = 256
FETCH_BATCH = 256
FLUSH_SECONDS = 0.005
FLUSH_MAX = 100
BATCH_SIZE = 1000
# As the gateway's defaults: submit calls in flight before submits wait to go together.
SUBMIT_CALLS_IN_FLIGHT = 1
MAX_PER_CALL = 256
# The worker: one echo per line, as a sandbox worker answers one run per request.
WORKER_CODE = (
    "import sys\n"
    "for line in sys.stdin.buffer:\n"
    "    sys.stdout.buffer.write(line)\n"
    "    sys.stdout.buffer.flush()\n"
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_jobs (
    id uuid PRIMARY KEY,
    status text NOT NULL DEFAULT 'PENDING',
    input bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz
)
"""


# -- scheduler -------------------------------------------------------------------------------


class Scheduler:
    """Rows in PostgreSQL, jobs out to JetStream, claims with a token each, completions."""

    def __init__(self, database: str, nats_url: str) -> None:
        self._database = database
        self._nats_url = nats_url
        self._key = Ed25519PrivateKey.generate()

    async def start(self) -> None:
        # One connection per call kind: in the drain claims and completions overlap.
        self._submits = await psycopg.AsyncConnection.connect(self._database, autocommit=True)
        self._claims = await psycopg.AsyncConnection.connect(self._database, autocommit=True)
        self._completions = await psycopg.AsyncConnection.connect(self._database, autocommit=True)
        self._nc = await nats.connect(self._nats_url)
        self._js = self._nc.jetstream()

    async def _publish(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            await self._js.publish_async(SUBJECT, job_id.encode(), headers={"Nats-Msg-Id": job_id})

    async def submit(self, request: bytes, _: grpc.aio.ServicerContext) -> bytes:
        job_id = str(uuid.uuid4())
        await self._submits.execute(
            "INSERT INTO floor_jobs (id, input) VALUES (%s, %s)", (job_id, request)
        )
        await self._publish([job_id])
        return job_id.encode()

    async def submit_many(self, request: bytes, _: grpc.aio.ServicerContext) -> bytes:
        """Several submits' bodies, NUL-separated, in one statement (the gateway's coalescing)."""
        bodies = request.split(b"\0")
        job_ids = [str(uuid.uuid4()) for _ in bodies]
        await self._submits.execute(
            "INSERT INTO floor_jobs (id, input) SELECT * FROM unnest(%s::uuid[], %s::bytea[])",
            (job_ids, bodies),
        )
        await self._publish(job_ids)
        return "\n".join(job_ids).encode()

    async def submit_batch(self, request: bytes, _: grpc.aio.ServicerContext) -> bytes:
        job_ids = [str(uuid.uuid4()) for _ in range(int(request))]
        await self._submits.execute(
            "INSERT INTO floor_jobs (id) SELECT unnest(%s::uuid[])", (job_ids,)
        )
        await self._publish(job_ids)
        await self._js.publish_async_completed()
        return str(len(job_ids)).encode()

    async def claim(self, request: bytes, _: grpc.aio.ServicerContext) -> bytes:
        cursor = await self._claims.execute(
            "UPDATE floor_jobs SET status = 'RUNNING', started_at = clock_timestamp() "
            "WHERE id = ANY(%s::uuid[]) AND status = 'PENDING' RETURNING id",
            (request.decode().split(),),
        )
        now = int(time.time())
        lines = []
        for (job_id,) in await cursor.fetchall():
            claims = f'{{"sub":"user","execution_id":"{job_id}","iat":{now},"exp":{now + 600}}}'
            token = base64.urlsafe_b64encode(self._key.sign(claims.encode())).decode()
            lines.append(f"{job_id} {token}")
        return "\n".join(lines).encode()

    async def complete(self, request: bytes, _: grpc.aio.ServicerContext) -> bytes:
        await self._completions.execute(
            "UPDATE floor_jobs SET status = 'COMPLETED', completed_at = clock_timestamp() "
            "WHERE id = ANY(%s::uuid[]) AND status = 'RUNNING'",
            (request.decode().split(),),
        )
        return b""


async def serve_scheduler(database: str, nats_url: str, port: int) -> None:
    scheduler = Scheduler(database, nats_url)
    await scheduler.start()
    handlers = {
        "Submit": grpc.unary_unary_rpc_method_handler(scheduler.submit),
        "SubmitMany": grpc.unary_unary_rpc_method_handler(scheduler.submit_many),
        "SubmitBatch": grpc.unary_unary_rpc_method_handler(scheduler.submit_batch),
        "Claim": grpc.unary_unary_rpc_method_handler(scheduler.claim),
        "Complete": grpc.unary_unary_rpc_method_handler(scheduler.complete),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- gateway ---------------------------------------------------------------------------------


class Coalescer:
    """Submits waiting while `in_flight` calls are under way go together in one call, as the
    gateway's `SubmitCoalescer` sends them (without its per-caller queues: one caller here)."""

    def __init__(
        self,
        one: Callable[[bytes], Awaitable[bytes]],
        many: Callable[[bytes], Awaitable[bytes]],
        in_flight: int,
    ) -> None:
        self._one, self._many, self._max = one, many, in_flight
        self._calls = 0
        self._waiting: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, body: bytes) -> bytes:
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((body, answer))
        self._start()
        return await answer

    def _start(self) -> None:
        while self._calls < self._max and self._waiting:
            group, self._waiting = self._waiting[:MAX_PER_CALL], self._waiting[MAX_PER_CALL:]
            self._calls += 1
            task = asyncio.create_task(self._call(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, group: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            if len(group) == 1:
                answers = [await self._one(group[0][0])]
            else:
                answers = (await self._many(b"\0".join(body for body, _ in group))).split(b"\n")
            for (_, answer), job_id in zip(group, answers, strict=True):
                answer.set_result(job_id)
        finally:
            self._calls -= 1
            self._start()


def serve_gateway(scheduler_port: int, port: int) -> None:
    coalescer: list[Coalescer] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler_port}") as channel:
            coalescer.append(
                Coalescer(
                    channel.unary_unary(f"/{SERVICE}/Submit"),
                    channel.unary_unary(f"/{SERVICE}/SubmitMany"),
                    SUBMIT_CALLS_IN_FLIGHT,
                )
            )
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/submit", status_code=202)
    async def submit(request: Request) -> dict[str, str]:
        return {"execution_id": (await coalescer[0].submit(await request.body())).decode()}

    uvicorn.run(
        app, host="127.0.0.1", port=port, http="httptools", access_log=False, log_level="warning"
    )


# -- executor --------------------------------------------------------------------------------


class Worker:
    """A process that answers one line per line, over pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER_CODE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def run(self, line: bytes) -> bytes:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(line)
        await self._process.stdin.drain()
        return await self._process.stdout.readline()


class Executor:
    """Fetch, claim per fetch, run on the workers, complete per flush, ack."""

    def __init__(self, scheduler_port: int, nats_url: str) -> None:
        self._scheduler_port = scheduler_port
        self._nats_url = nats_url
        self._held = 0
        self._running = 0
        self._free: asyncio.Queue[Worker] = asyncio.Queue()
        self._outcomes: asyncio.Queue[tuple[str, Msg]] = asyncio.Queue()
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        for _ in range(WORKERS):
            self._free.put_nowait(await Worker.start())
        nc = await nats.connect(self._nats_url)
        sub = await nc.jetstream().pull_subscribe(SUBJECT, durable="floor", stream=STREAM)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self._scheduler_port}") as channel:
            self._claim = channel.unary_unary(f"/{SERVICE}/Claim")
            self._complete = channel.unary_unary(f"/{SERVICE}/Complete")
            completer = asyncio.create_task(self._complete_loop())
            try:
                await self._fetch_loop(sub)
            finally:
                completer.cancel()

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            room = WORKERS + PREFETCH - self._held
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            msgs = await fetch_available(
                sub, min(room, FETCH_BATCH), idle_timeout=1.0, top_up_timeout=0.02
            )
            if msgs:
                await self._claim_and_start(msgs)

    async def _claim_and_start(self, msgs: list[Msg]) -> None:
        by_id = {msg.data.decode(): msg for msg in msgs}
        answer = await self._claim(" ".join(by_id).encode())
        for line in answer.decode().splitlines():
            job_id, token = line.split(" ", 1)
            self._held += 1
            task = asyncio.create_task(self._run_one(job_id, token, by_id.pop(job_id)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for msg in by_id.values():
            await msg.ack()

    async def _run_one(self, job_id: str, token: str, msg: Msg) -> None:
        worker = await self._free.get()
        self._running += 1
        try:
            await worker.run(f'{{"id":"{job_id}","token":"{token}"}}\n'.encode())
        finally:
            self._running -= 1
            self._free.put_nowait(worker)
        await self._outcomes.put((job_id, msg))

    async def _complete_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._outcomes.get()]
            deadline = loop.time() + FLUSH_SECONDS
            while len(batch) < FLUSH_MAX:
                if not self._outcomes.empty():
                    batch.append(self._outcomes.get_nowait())
                    continue
                if not self._running:
                    break
                try:
                    batch.append(
                        await asyncio.wait_for(self._outcomes.get(), deadline - loop.time())
                    )
                except TimeoutError:
                    break
            await self._complete(" ".join(job_id for job_id, _ in batch).encode())
            for _, msg in batch:
                await msg.ack()
            self._held -= len(batch)
            self._room.set()


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


def spawn(role: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--role", role, *map(str, args)])


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
    nats_server = EmbeddedNats(work / "nats")
    nats_url = nats_server.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(SCHEMA)
        nc = await nats.connect(nats_url)
        await nc.jetstream().add_stream(name=STREAM, subjects=[SUBJECT], retention="workqueue")
        await nc.close()
        scheduler_port, gateway_port = free_port(), free_port()
        processes.append(spawn("scheduler", database, nats_url, scheduler_port))
        processes.append(spawn("gateway", scheduler_port, gateway_port))
        for port, process in ((scheduler_port, processes[0]), (gateway_port, processes[1])):
            wait_for_port("127.0.0.1", port, timeout=60, process=process)
        figures: dict[str, float] = {}
        async with Client(database, gateway_port, scheduler_port) as client:
            await client.submit_batches(sizes.drain_batches)
            processes.append(spawn("executor", scheduler_port, nats_url))
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
    parser.add_argument("--role", choices=("scheduler", "gateway", "executor"))
    parser.add_argument("role_args", nargs="*")
    parser.add_argument("--quick", action="store_true", help="fewer jobs: a fast check")
    options = parser.parse_args()
    role_args = options.role_args
    if options.role == "scheduler":
        asyncio.run(serve_scheduler(role_args[0], role_args[1], int(role_args[2])))
    elif options.role == "gateway":
        serve_gateway(int(role_args[0]), int(role_args[1]))
    elif options.role == "executor":
        asyncio.run(Executor(int(role_args[0]), role_args[1]).run())
    else:
        with tempfile.TemporaryDirectory(prefix="floor-") as work:
            postgres = EmbeddedPostgres(Path(work) / "pg")
            try:
                sizes = FloorSizes.quick() if options.quick else FloorSizes()
                figures = run_floor(postgres.start(), Path(work), 0, sizes)
            finally:
                postgres.stop()
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

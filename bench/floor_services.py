"""The floor's three services: our shape's processes with none of our logic (see `floor.py`).

python bench/floor_services.py scheduler <database url> <nats url> <port>
python bench/floor_services.py gateway <scheduler port> <port>
python bench/floor_services.py executor <scheduler port> <nats url>
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import psycopg
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from sinas_common.nats_connect import connect_nats
from sinas_common.pull import fetch_available
from sinas_common.settings import NatsSettings

# Named as ours are for the prefix FLOOR, so the floor logs in to NATS with the same users
# and permissions (sinas_devstack.nats_auth) and pays what they cost.
STREAM_PREFIX = "FLOOR"
STREAM = f"{STREAM_PREFIX}_JOBS"
SUBJECT = "floor.jobs.function"
CONSUMER = f"{STREAM_PREFIX}_function_executor"
SERVICE = "floor.Scheduler"
# As ours: sandbox slots, claims ahead of them, fetch size, outcome flushing.
WORKERS = 8
PREFETCH = 256
FETCH_BATCH = 256
FLUSH_SECONDS = 0.005
FLUSH_MAX = 100
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
        self._nc = await connect_nats(nats_settings(self._nats_url), name="floor-scheduler")
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
        except Exception as exc:
            # Every request of the call fails with it rather than waiting forever.
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(exc)
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
        nc = await connect_nats(nats_settings(self._nats_url), name="floor-executor")
        sub = await nc.jetstream().pull_subscribe(SUBJECT, durable=CONSUMER, stream=STREAM)
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


def nats_settings(url: str) -> NatsSettings:
    """This process's NATS user and password come in its environment (see `spawn`)."""
    return NatsSettings.model_validate(
        {
            "NATS_URL": url,
            "NATS_STREAM_PREFIX": STREAM_PREFIX,
            "NATS_USER": os.environ.get("NATS_USER", ""),
            "NATS_PASSWORD": os.environ.get("NATS_PASSWORD", ""),
        }
    )


def spawn(role: str, *args: object, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Starts one of the services in a process of its own; `env` is added to ours (secrets
    go there, not on a command line every local user can read)."""
    return subprocess.Popen(
        [sys.executable, __file__, role, *map(str, args)], env={**os.environ, **(env or {})}
    )


def main(role: str, args: list[str]) -> None:
    if role == "scheduler":
        asyncio.run(serve_scheduler(args[0], args[1], int(args[2])))
    elif role == "gateway":
        serve_gateway(int(args[0]), int(args[1]))
    elif role == "executor":
        asyncio.run(Executor(int(args[0]), args[1]).run())
    else:
        raise SystemExit(f"unknown role {role!r}: scheduler, gateway or executor")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

"""Our figures: one repetition of every phase on a fresh stack (scheduler, gateway, then one
executor and one notifier) on the embedded defaults, with rates from the database's rows.

Phases, in order, on one database:
- drain: 10 `execute/batch` of 1,000 with no executor, then one executor starts;
  completed / (last completed_at - first started_at). Then the table is vacuumed, analyzed
  and checkpointed, as autovacuum and the checkpointer would within the minute.
- latency: `execute/async` one at a time on a 5 ms schedule, each once the previous one has
  ended (so each meets an idle executor), as the peers do; the client's time from the submit
  call until its 1 ms poll of the row sees the execution ended (a GET then answers it).
- enqueue: `execute/async` at concurrency 1 and 32, the executor running.
- batch submit: one 1,000-child `execute/batch` at a time, each after the last one's
  children ended, so that every submission meets an otherwise idle system.
- delayed: 100,000 executions due in an hour inserted with SQL, then 1,000 `execute/async`
  with `delay_seconds` sent evenly over 10 s, so they come due evenly over the same 10 s as
  the peers' do; started_at - run_at per row.
- callbacks: 1,000-child batches with a `callback_url` on a local HTTPS receiver run to the
  end with no notifier; then one notifier starts; sent / (last callback_attempted_at -
  first callback_claimed_at).
- aggregate reads: `GET /batches/{id}` of a finished 1,000-child batch after filler rows
  bring the executions table to 1,000,000 rows.
- memory: each service's peak RSS (VmHWM) at the end, and that of the repetition's own
  nats-server; the largest RSS (and PSS) among the executor's sandbox workers a second after
  the latency phase, while they sit idle and warm.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from load import Gateway, percentile
from memory import children, command_name, descendants, peak_rss_mb, pss_mb, rss_mb
from rows import Rows

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.embedded import EmbeddedNats
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.pki import provision_pki
from sinas_devstack.stack import ServiceProcess, Stack, StackConfig, merge_role_env
from sinas_devstack.supervisor import ensure_database

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each phase gets; `quick()` is for checking that everything runs."""

    drain_batches: int = 10
    latency_jobs: int = 1000
    latency_interval: float = 0.005
    enqueue_jobs: int = 1000
    submit_batches: int = 20
    delayed_pending: int = 100_000
    delayed_jobs: int = 1000
    delay_seconds: int = 10
    delayed_window: float = 10.0
    callback_batches: int = 3
    table_rows: int = 1_000_000
    batch_reads: int = 200

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            drain_batches=2,
            latency_jobs=100,
            enqueue_jobs=200,
            submit_batches=3,
            delayed_pending=10_000,
            delayed_jobs=100,
            delay_seconds=3,
            delayed_window=3.0,
            callback_batches=1,
            table_rows=50_000,
            batch_reads=50,
        )


@dataclass(frozen=True, slots=True)
class Environment:
    """What every repetition shares: PostgreSQL and the callback receiver."""

    admin_url: str
    work_dir: Path
    certificates: ReceiverCertificates
    receiver: CallbackReceiver


def callback_env(env: Environment) -> dict[str, str]:
    """The callback policy that admits the local receiver (as the e2e callback tests set it)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        "CALLBACK_URL_HOSTS": "localhost",
        "CALLBACK_URL_PORTS": str(env.receiver.port),
        "CALLBACK_ALLOW_PRIVATE_NETWORKS": "1",
        "CALLBACK_CA_FILE": str(env.certificates.ca_file),
        "CALLBACK_SIGNING_SECRET": secret,
    }


class Repetition:
    """One stack on a fresh database and a NATS server of its own (its broker's memory is
    then this repetition's); `run()` returns the figure dict of the contract."""

    def __init__(self, env: Environment, sizes: Sizes, number: int) -> None:
        self.env = env
        self.sizes = sizes
        self.number = number
        self.figures: dict[str, float] = {}
        prefix = f"BENCH{number}"
        accounts = provision_nats_users(
            env.work_dir / f"ours-{number}" / "nats-auth", prefixes=(prefix,)
        )
        self.nats = EmbeddedNats(env.work_dir / f"ours-{number}" / "nats", accounts)
        self.stack = Stack(
            StackConfig(
                database_url=ensure_database(env.admin_url, f"bench_ours_{number}"),
                nats_url=self.nats.start(),
                log_dir=env.work_dir / f"ours-{number}" / "logs",
                admin_key="sk-" + secrets.token_urlsafe(32),
                nats_stream_prefix=prefix,
                extra_env=callback_env(env),
                role_env=merge_role_env(provision_pki(env.work_dir / "pki"), accounts.role_env()),
            )
        )

    def start(self, service: ServiceProcess) -> None:
        service.start()
        self.stack.wait_ready(service, timeout=120)

    def run(self) -> dict[str, float]:
        try:
            self.start(self.stack.scheduler())
            self.start(self.stack.gateway())
            asyncio.run(self._phases())
            self._service_memory()
        finally:
            self.stack.stop_all()
            self.nats.stop()
        return self.figures

    async def _phases(self) -> None:
        gateway = Gateway(self.stack.gateway_url, self.stack.config.admin_key)
        rows = await Rows.connect(self.stack.config.database_url)
        try:
            for name in ("drain", "latency", "enqueue", "batch", "delayed", "callbacks"):
                await gateway.create_noop(name)
            await self._drain(gateway, rows)
            await self._latency(gateway, rows)
            await self._idle_worker_memory(gateway, rows)
            await self._enqueue(gateway, rows)
            await self._batch_submit(gateway, rows)
            await self._delayed(gateway, rows)
            batch_id = await self._callbacks(gateway, rows)
            await self._aggregate_reads(gateway, rows, batch_id)
        finally:
            await gateway.close()
            await rows.close()

    async def _drain(self, gateway: Gateway, rows: Rows) -> None:
        for _ in range(self.sizes.drain_batches):
            await gateway.batch("drain", BATCH_SIZE)
        await asyncio.to_thread(self.start, self.stack.executor())
        await rows.wait_terminal("drain", self.sizes.drain_batches * BATCH_SIZE)
        self.figures["drain_per_s"] = await rows.drain_rate("drain")
        await self._check_completed(rows, "drain")
        # Ten thousand executions ran through a table that was empty a moment ago.
        await rows.settle()

    async def _latency(self, gateway: Gateway, rows: Rows) -> None:
        # As the peers measure it: one job at a time, each submitted on a 5 ms schedule once
        # the previous one's result is readable, so every job meets idle workers.
        latencies: list[float] = []
        start = time.perf_counter()
        for index in range(self.sizes.latency_jobs):
            slot = start + index * self.sizes.latency_interval
            await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            began = time.perf_counter()
            execution_id = (await gateway.enqueue("latency")).id
            await rows.wait_ended(execution_id)
            latencies.append(1000 * (time.perf_counter() - began))
        await self._check_completed(rows, "latency")
        self.figures["latency_p50_ms"] = percentile(latencies, 0.5)
        self.figures["latency_p99_ms"] = percentile(latencies, 0.99)

    async def _idle_worker_memory(self, gateway: Gateway, rows: Rows) -> None:
        # One more run first: a worker retires after its 100th run, so the latency phase's
        # last run may have left none warm. A second after it, that worker waits idle (idle
        # workers retire after 10 s).
        await rows.wait_ended((await gateway.enqueue("latency")).id)
        await asyncio.sleep(1.0)
        executor = self.stack.services["executor"].process
        assert executor is not None
        # A worker is three processes (the one outside its namespaces, its init, the
        # function's): the function's holds the interpreter state, and is the largest.
        workers = [w for zygote in children(executor.pid) for w in descendants(zygote)]
        resident = [m for m in map(rss_mb, workers) if m is not None]
        proportional = [m for m in map(pss_mb, workers) if m is not None]
        if resident:
            self.figures["rss_idle_sandbox_worker_mb"] = max(resident)
        else:
            logger.warning("no idle sandbox worker found", extra={"executor": executor.pid})
        if proportional:
            self.figures["pss_idle_sandbox_worker_mb"] = max(proportional)

    async def _enqueue(self, gateway: Gateway, rows: Rows) -> None:
        for concurrency in (1, 32):
            timed, elapsed = await gateway.enqueue_closed_loop(
                "enqueue", self.sizes.enqueue_jobs, concurrency
            )
            latencies = [1000 * t.seconds for t in timed]
            self.figures[f"enqueue_c{concurrency}_per_s"] = len(timed) / elapsed
            self.figures[f"enqueue_c{concurrency}_p50_ms"] = percentile(latencies, 0.5)
            self.figures[f"enqueue_c{concurrency}_p99_ms"] = percentile(latencies, 0.99)
            # The next figure starts on an idle system.
            await rows.wait_terminal("enqueue", len(timed) * (1 if concurrency == 1 else 2))

    async def _batch_submit(self, gateway: Gateway, rows: Rows) -> None:
        latencies: list[float] = []
        for number in range(1, self.sizes.submit_batches + 1):
            latencies.append(1000 * (await gateway.batch("batch", BATCH_SIZE)).seconds)
            await rows.wait_terminal("batch", number * BATCH_SIZE)
        self.figures["batch_submit_p50_ms"] = percentile(latencies, 0.5)
        self.figures["batch_submit_p99_ms"] = percentile(latencies, 0.99)

    async def _delayed(self, gateway: Gateway, rows: Rows) -> None:
        await rows.insert_copies("drain", self.sizes.delayed_pending, delayed=True)
        # Due times spread evenly over one window, as the peers' are: submitted on a schedule
        # over the window with a delay at least as long, so all submits end before the first
        # job is due and the jobs start on an otherwise idle system.
        ids = await gateway.enqueue_spread(
            "delayed",
            self.sizes.delayed_jobs,
            self.sizes.delayed_window,
            delay_seconds=self.sizes.delay_seconds,
        )
        await rows.wait_terminal("delayed", len(ids), timeout=self.sizes.delay_seconds + 600)
        lateness = await rows.lateness_ms("delayed")
        self.figures["delayed_lateness_p50_ms"] = percentile(lateness, 0.5)
        self.figures["delayed_lateness_p99_ms"] = percentile(lateness, 0.99)

    async def _callbacks(self, gateway: Gateway, rows: Rows) -> str:
        count = self.sizes.callback_batches * BATCH_SIZE
        url = self.env.receiver.url(f"/bench/{self.number}")
        batch_ids = [
            (await gateway.batch("callbacks", BATCH_SIZE, callback_url=url)).id
            for _ in range(self.sizes.callback_batches)
        ]
        await rows.wait_terminal("callbacks", count)
        await rows.wait_events_published("callbacks", count)
        await asyncio.to_thread(self.start, self.stack.notifier())
        await rows.wait_callbacks_settled("callbacks", count)
        sent, rate = await rows.callback_rate("callbacks")
        if sent < count:
            logger.warning("callbacks not sent", extra={"sent": sent, "expected": count})
        self.figures["callbacks_per_s"] = rate
        received = self.env.receiver.requests_to(f"/bench/{self.number}")
        if len(received) >= 2:
            span = received[-1].received_at - received[0].received_at
            self.figures["callbacks_received_per_s"] = len(received) / span
        return batch_ids[0]

    async def _aggregate_reads(self, gateway: Gateway, rows: Rows, batch_id: str) -> None:
        missing = self.sizes.table_rows - await rows.count()
        if missing > 0:
            await rows.insert_copies("enqueue", missing, delayed=False)
        await gateway.read_batch(batch_id)
        reads = [1000 * await gateway.read_batch(batch_id) for _ in range(self.sizes.batch_reads)]
        self.figures["aggregate_read_p50_ms"] = percentile(reads, 0.5)
        self.figures["aggregate_read_p99_ms"] = percentile(reads, 0.99)

    async def _check_completed(self, rows: Rows, name: str) -> None:
        failed = await rows.failed(name)
        if failed:
            raise RuntimeError(f"{failed} '{name}' executions did not complete")

    def _service_memory(self) -> None:
        for name in ("scheduler", "gateway", "executor", "notifier"):
            process = self.stack.services[name].process
            peak = None if process is None else peak_rss_mb(process.pid)
            if peak is not None:
                self.figures[f"rss_{name}_mb"] = peak
        executor = self.stack.services["executor"].process
        zygotes = [] if executor is None else children(executor.pid)
        peaks = [m for m in map(peak_rss_mb, zygotes) if m is not None]
        if peaks:
            # The zygote is the executor's own warm parent of every worker; shown apart.
            self.figures["rss_executor_zygote_mb"] = max(peaks)
        brokers = [p for p in children(os.getpid()) if command_name(p) == "nats-server"]
        broker_peaks = [m for m in map(peak_rss_mb, brokers) if m is not None]
        if broker_peaks:
            self.figures["rss_nats_mb"] = max(broker_peaks)


def run_ours(env: Environment, sizes: Sizes, number: int) -> dict[str, float]:
    """One repetition of our figures on a database of its own."""
    return Repetition(env, sizes, number).run()

"""The JetStream pull loop: fetch, claim in batches, run, record outcomes in batches, then ack."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sinas_common.control import ControlMessage
from sinas_common.grpc_client import call_with_retry
from sinas_common.jobstream import JobMessage, job_stream_names
from sinas_common.pull import (
    PullPacing,
    pull_until_stopped,
    settle,
    while_jetstream_settles,
)
from sinas_common.settings import NatsSettings
from sinas_executor.agent import AgentRunner
from sinas_executor.execution import execute
from sinas_executor.interaction import InputWaiters
from sinas_executor.models import (
    ClaimedExecution,
    ClaimItem,
    ExecutionOutcome,
    FunctionVersion,
    HandedBack,
    HeldAttempt,
)
from sinas_executor.pool import FunctionRunner
from sinas_executor.prefetch import PrefetchGate, RunKey
from sinas_executor.scheduler_client import SchedulerPort
from sinas_executor.validation import FunctionChecks

logger = logging.getLogger(__name__)

JOB_KIND = "function"
AGENT_JOB_KIND = "agent"
# A redelivered message comes back after this when a claim or a completion could not be made.
RETRY_NAK_DELAY_SECONDS = 1.0
# At stop, outcomes already made are still recorded for at least this long, even past the
# grace period: a finished run should not be run again for want of a second.
OUTCOME_FLUSH_FLOOR_SECONDS = 1.0
# A release the scheduler does not answer in this long is left to the reaper (after the
# lease), so that an unreachable scheduler can't hold up a stop.
RELEASE_TIMEOUT_SECONDS = 5.0


def consumer_name(settings: NatsSettings, kind: str = JOB_KIND) -> str:
    return f"{settings.stream_prefix}_{kind}_executor"


async def subscribe(
    js: JetStreamContext, settings: NatsSettings, *, ack_wait_seconds: float, kind: str = JOB_KIND
) -> JetStreamContext.PullSubscription:
    """The durable pull consumer of one job kind that every executor replica shares.

    The scheduler creates the stream (an executor's NATS user may not); one started first
    waits for it.
    """
    names = job_stream_names(settings)
    config = ConsumerConfig(
        durable_name=consumer_name(settings, kind),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_seconds,
        # The scheduler's claim decides when the attempts are used up, not JetStream.
        max_deliver=-1,
        filter_subject=names.subject(kind),
    )
    return await while_jetstream_settles(
        lambda: js.pull_subscribe(
            names.subject(kind),
            durable=consumer_name(settings, kind),
            stream=names.stream,
            config=config,
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerOptions:
    """How the pull loop paces itself."""

    worker_id: str
    api_url: str
    concurrency: int = 8
    fetch_batch: int = 100
    ack_wait_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    # A quiet stream: one long-polled message, then a short top-up for the rest of a batch
    # (nats-py's fetch(n>1) with a long timeout would wait for the whole batch).
    idle_fetch_seconds: float = 1.0
    top_up_fetch_seconds: float = 0.02
    flush_max_outcomes: int = 100
    flush_delay_seconds: float = 0.005
    # Executions claimed beyond `concurrency`, waiting for a slot, while the runs held are
    # known to be short (see `prefetch.PrefetchGate`).
    prefetch: int = 0
    prefetch_max_run_seconds: float = 0.25
    # What is claimed ahead should start within this long, at the recent runs' pace.
    prefetch_max_wait_seconds: float = 0.25


@dataclass(slots=True)
class _Held:
    msg: Msg
    attempt: int
    run_key: RunKey | None
    task: asyncio.Task[None] | None = None


class ExecutionConsumer:
    """Runs executions from one job subject until `stop()`, then hands back the rest.

    Function executions run in the sandbox through `runner`; agent runs through `agents`.
    """

    def __init__(
        self,
        *,
        subscription: JetStreamContext.PullSubscription,
        scheduler: SchedulerPort,
        runner: FunctionRunner,
        options: ConsumerOptions,
        agents: AgentRunner | None = None,
    ) -> None:
        self._sub = subscription
        self._scheduler = scheduler
        self._runner = runner
        self._agents = agents
        self._options = options
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        # Every message this executor holds, by execution id, until it is acked or nakked.
        self._held: dict[str, _Held] = {}
        # Started executions, running or waiting for one of the `concurrency` slots.
        self._running: set[str] = set()
        self._slots = asyncio.Semaphore(options.concurrency)
        self._prefetch = PrefetchGate(
            depth=options.prefetch,
            max_run_seconds=options.prefetch_max_run_seconds,
            slots=options.concurrency,
            max_wait_seconds=options.prefetch_max_wait_seconds,
        )
        self._outcomes: asyncio.Queue[tuple[ExecutionOutcome, Msg]] = asyncio.Queue()
        self._waiters = InputWaiters(scheduler, worker_id=options.worker_id)

    async def on_control(self, msg: Msg) -> None:
        """Handler of the control subject: a hint that a worker waiting in `input()` may have
        news, which is asked of the scheduler before anything is done (see `interaction`)."""
        try:
            message = ControlMessage.decode(msg.data)
        except (ValueError, KeyError, TypeError):
            logger.warning("undecodable control message dropped", extra={"action": "control"})
            return
        self._waiters.hint(message)

    def stop(self) -> None:
        """Stops fetching; `run` then finishes or hands back what is in flight and returns."""
        self._stopping.set()

    async def run(self) -> None:
        completer = asyncio.create_task(self._complete_loop(), name="executor-completer")
        ticker = asyncio.create_task(self._keepalive_loop(), name="executor-keepalive")
        try:
            await self._fetch_loop()
        finally:
            await self._shutdown(completer, ticker)

    # -- fetching and claiming ---------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        await pull_until_stopped(
            self._sub,
            pacing=PullPacing(
                concurrency=self._options.concurrency,
                fetch_batch=self._options.fetch_batch,
                idle_timeout=self._options.idle_fetch_seconds,
                top_up_timeout=self._options.top_up_fetch_seconds,
            ),
            in_flight=lambda: len(self._running),
            slot_freed=self._slot_freed,
            stopping=self._stopping,
            handle=self._claim_and_start,
            prefetch=lambda: self._prefetch.depth(h.run_key for h in self._held.values()),
        )

    async def _claim_and_start(self, msgs: Sequence[Msg]) -> None:
        batch: dict[str, Msg] = {}
        for msg in msgs:
            try:
                job = JobMessage.decode(msg.data)
            except (ValueError, KeyError, TypeError):
                logger.error("undecodable job message dropped", extra={"action": "decode"})
                await settle(msg.term())
                continue
            # Another delivery of an execution already held is settled with the held one.
            if job.execution_id in batch or job.execution_id in self._held:
                continue
            batch[job.execution_id] = msg
        if not batch:
            return
        items = [
            ClaimItem(execution_id=eid, delivery_attempt=msg.metadata.num_delivered)
            for eid, msg in batch.items()
        ]
        try:
            result = await call_with_retry(
                lambda: self._scheduler.claim_executions(self._options.worker_id, items)
            )
        except Exception:
            logger.exception("claim failed", extra={"action": "claim", "count": len(items)})
            for msg in batch.values():
                await settle(msg.nak(delay=RETRY_NAK_DELAY_SECONDS))
            return
        for execution_id in result.skipped_execution_ids:
            if execution_id in batch:
                await settle(batch.pop(execution_id).ack())
        functions = {(f.function_id, f.version): f for f in result.functions}
        # Each version's schemas made ready once for all of its runs in this claim.
        checks = {key: FunctionChecks.of(f) for key, f in functions.items()}
        for claimed in result.claimed:
            if claimed.execution_id not in batch:
                continue
            msg = batch.pop(claimed.execution_id)
            key = (claimed.function_id, claimed.function_version)
            self._start(
                claimed.execution_id,
                claimed.attempt,
                msg,
                self._run_function(claimed, functions.get(key), checks.get(key)),
                run_key=key,
            )
        for run in result.agent_runs:
            if run.execution_id not in batch:
                continue
            if self._agents is None:
                logger.error(
                    "agent run claimed by a consumer without an agent runner",
                    extra={"action": "claim", "execution_id": run.execution_id},
                )
                continue
            self._start(
                run.execution_id,
                run.attempt,
                batch.pop(run.execution_id),
                partial(self._agents.run, run),
                run_key=None,
            )
        for msg in batch.values():
            # Neither claimed nor skipped: let the scheduler see it again later.
            await settle(msg.nak(delay=RETRY_NAK_DELAY_SECONDS))

    def _start(
        self,
        execution_id: str,
        attempt: int,
        msg: Msg,
        work: Callable[[], Awaitable[ExecutionOutcome]],
        *,
        run_key: RunKey | None,
    ) -> None:
        held = _Held(msg=msg, attempt=attempt, run_key=run_key)
        self._held[execution_id] = held
        self._running.add(execution_id)
        held.task = asyncio.create_task(
            self._run_one(execution_id, msg, work, run_key), name=f"execution-{execution_id}"
        )

    def _run_function(
        self,
        claimed: ClaimedExecution,
        function: FunctionVersion | None,
        checks: FunctionChecks | None,
    ) -> Callable[[], Awaitable[ExecutionOutcome]]:
        async def work() -> ExecutionOutcome:
            inputs = self._waiters.open(claimed.execution_id, claimed.attempt)
            try:
                return await execute(
                    claimed,
                    function,
                    self._runner,
                    api_url=self._options.api_url,
                    inputs=inputs,
                    checks=checks,
                )
            finally:
                self._waiters.close(claimed.execution_id)

        return work

    async def _run_one(
        self,
        execution_id: str,
        msg: Msg,
        work: Callable[[], Awaitable[ExecutionOutcome]],
        run_key: RunKey | None,
    ) -> None:
        try:
            async with self._slots:
                if self._stopping.is_set():
                    # Claimed ahead and not started: handed back, not begun in the grace period.
                    await self._hand_back([execution_id])
                    return
                started = time.monotonic()
                outcome = await work()
                self._prefetch.observe(run_key, time.monotonic() - started)
        except HandedBack:
            # Paused in `input()` while the executor stops: released now, not at the end of
            # the grace period, so that the execution is promptly someone else's.
            await self._hand_back([execution_id])
            return
        except Exception:
            logger.exception(
                "execution could not run",
                extra={"action": "execute", "execution_id": execution_id},
            )
            await self._hand_back([execution_id])
            return
        finally:
            self._running.discard(execution_id)
            self._slot_freed.set()
        await self._outcomes.put((outcome, msg))

    # -- recording outcomes --------------------------------------------------------------------

    async def _complete_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._outcomes.get()]
            deadline = loop.time() + self._options.flush_delay_seconds
            while len(batch) < self._options.flush_max_outcomes:
                if not self._outcomes.empty():
                    batch.append(self._outcomes.get_nowait())
                    continue
                # Nothing else running: no outcome is coming to share this write, so waiting
                # would only delay the result.
                if not self._running:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._outcomes.get(), remaining))
                except TimeoutError:
                    break
            try:
                await self._record(batch)
            finally:
                for _ in batch:
                    self._outcomes.task_done()

    async def _record(self, batch: list[tuple[ExecutionOutcome, Msg]]) -> None:
        outcomes = [outcome for outcome, _ in batch]
        try:
            await call_with_retry(
                lambda: self._scheduler.complete_executions(self._options.worker_id, outcomes),
                attempts=None,
            )
        except Exception:
            # Not transient: hand the messages back so the executions run again elsewhere.
            logger.exception(
                "outcomes could not be recorded", extra={"action": "complete", "count": len(batch)}
            )
            for outcome, msg in batch:
                self._held.pop(outcome.execution_id, None)
                await settle(msg.nak(delay=RETRY_NAK_DELAY_SECONDS))
            return
        # Acked only now: a crash before this point means redelivery, never a lost result.
        for outcome, msg in batch:
            self._held.pop(outcome.execution_id, None)
            await settle(msg.ack())

    # -- keeping leases alive ------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        interval = self._options.ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            held = list(self._held.items())
            for _, entry in held:
                await settle(entry.msg.in_progress())
            if not held:
                continue
            try:
                news = await self._scheduler.heartbeat(
                    self._options.worker_id,
                    [HeldAttempt(execution_id=eid, attempt=entry.attempt) for eid, entry in held],
                )
            except Exception:
                logger.warning("heartbeat failed", extra={"action": "heartbeat"}, exc_info=True)
                continue
            # The slow path: what the control subject said, or would have said had it arrived.
            self._waiters.apply_heartbeat(news)

    # -- shutting down ---------------------------------------------------------------------------

    async def _shutdown(self, completer: asyncio.Task[None], ticker: asyncio.Task[None]) -> None:
        """Within the grace period: paused runs handed back at once, running ones given the
        rest of it, then killed and handed back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.shutdown_grace_seconds
        # A paused run waits for a person, who may take longer than any grace period.
        self._waiters.hand_back()
        tasks = [h.task for h in self._held.values() if h.task is not None and not h.task.done()]
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            await asyncio.wait_for(
                self._outcomes.join(),
                timeout=max(deadline - loop.time(), OUTCOME_FLUSH_FLOOR_SECONDS),
            )
        except TimeoutError:
            logger.error("outcomes not recorded before stop", extra={"action": "shutdown"})
        for task in (completer, ticker):
            task.cancel()
        await asyncio.gather(completer, ticker, return_exceptions=True)
        await self._waiters.stop()
        # Whatever is still held did not finish or was not recorded: another executor takes it.
        await self._hand_back(list(self._held))

    async def _hand_back(self, execution_ids: Sequence[str]) -> None:
        """Releases unfinished attempts, then naks their messages so they start again at once
        elsewhere. Unreleased (scheduler unreachable), the reaper retries them after the lease.
        """
        entries = [(eid, held) for eid in execution_ids if (held := self._held.pop(eid, None))]
        if not entries:
            return
        try:
            await asyncio.wait_for(
                self._scheduler.release_executions(
                    self._options.worker_id,
                    [HeldAttempt(execution_id=eid, attempt=held.attempt) for eid, held in entries],
                ),
                RELEASE_TIMEOUT_SECONDS,
            )
        except Exception:
            logger.warning(
                "attempts not released",
                extra={"action": "release", "count": len(entries)},
                exc_info=True,
            )
        for execution_id, held in entries:
            await settle(held.msg.nak())
            logger.info(
                "execution handed back", extra={"action": "nak", "execution_id": execution_id}
            )

"""The pull loop against real NATS JetStream, with a recording fake of the scheduler port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from sinas_common.errors import InvalidArgument, ServiceUnavailable
from sinas_common.jobstream import JobMessage, ensure_job_stream, job_stream_names
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings
from sinas_devstack.pytest_plugin import NatsSettingsAs
from sinas_executor.consumer import ConsumerOptions, ExecutionConsumer, consumer_name, subscribe
from sinas_executor.models import (
    AwaitingInput,
    ClaimedExecution,
    ClaimItem,
    ClaimResult,
    ExecutionOutcome,
    FunctionVersion,
    HeartbeatNews,
    HeldAttempt,
    OutcomeStatus,
)
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool

QUICK = (
    "def handler(input_data, context):\n"
    "    return {'n': input_data['n'], 'id': context['execution_id']}\n"
)
SLOW = (
    "import time\n"
    "def handler(input_data, context):\n"
    "    time.sleep(input_data['sleep'])\n"
    "    return 1\n"
)


@dataclass
class RecordingScheduler:
    """SchedulerPort fake: claims what it was told to, records every call."""

    code: str = QUICK
    skip: set[str] = field(default_factory=set)
    fail_completions: list[Exception] = field(default_factory=list)
    complete_gate: asyncio.Event | None = None
    claims: list[list[ClaimItem]] = field(default_factory=list)
    completions: list[list[ExecutionOutcome]] = field(default_factory=list)
    heartbeats: list[list[HeldAttempt]] = field(default_factory=list)
    # Every worker id a call after the claim named.
    worker_ids: set[str] = field(default_factory=set)
    releases: list[list[HeldAttempt]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: int = 30
    reports: list[AwaitingInput] = field(default_factory=list)
    refuse_pause: set[str] = field(default_factory=set)
    news: HeartbeatNews = field(default_factory=HeartbeatNews)

    async def claim_executions(self, worker_id: str, items: Sequence[ClaimItem]) -> ClaimResult:
        self.claims.append(list(items))
        claimed = tuple(
            ClaimedExecution(
                execution_id=item.execution_id,
                attempt=item.delivery_attempt,
                user_id="user-1",
                user_email="u@example.com",
                function_id="fn-1",
                function_version=1,
                input_data=self.inputs.get(item.execution_id, {"n": 1}),
                trigger_type="API",
                trigger_id="runtime-api",
                batch_id="",
                chat_id="",
                access_token="token",
                depth=1,
            )
            for item in items
            if item.execution_id not in self.skip
        )
        function = FunctionVersion(
            function_id="fn-1",
            version=1,
            namespace="default",
            name="fn",
            code=self.code,
            input_schema={},
            output_schema={},
            timeout_seconds=self.timeout_seconds,
        )
        return ClaimResult(
            claimed=claimed,
            skipped_execution_ids=tuple(
                i.execution_id for i in items if i.execution_id in self.skip
            ),
            functions=(function,),
        )

    async def complete_executions(
        self, worker_id: str, outcomes: Sequence[ExecutionOutcome]
    ) -> list[str]:
        self.worker_ids.add(worker_id)
        if self.complete_gate is not None:
            await self.complete_gate.wait()
        if self.fail_completions:
            raise self.fail_completions.pop(0)
        self.completions.append(list(outcomes))
        return [o.execution_id for o in outcomes]

    async def heartbeat(self, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews:
        self.worker_ids.add(worker_id)
        self.heartbeats.append(list(attempts))
        return self.news

    async def release_executions(
        self, worker_id: str, attempts: Sequence[HeldAttempt]
    ) -> list[str]:
        self.worker_ids.add(worker_id)
        self.releases.append(list(attempts))
        return [a.execution_id for a in attempts]

    async def report_awaiting_input(
        self, worker_id: str, items: Sequence[AwaitingInput]
    ) -> list[str]:
        self.worker_ids.add(worker_id)
        self.reports.extend(items)
        return [i.execution_id for i in items if i.execution_id not in self.refuse_pause]

    @property
    def outcomes(self) -> dict[str, ExecutionOutcome]:
        return {o.execution_id: o for batch in self.completions for o in batch}


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@dataclass
class Harness:
    """The executor's NATS connection (`nc`, `js`) under test, and the scheduler's, which
    creates the stream and publishes the jobs: each logged in as its own user."""

    nc: Client
    js: JetStreamContext
    settings: NatsSettings
    scheduler_nc: Client
    scheduler_js: JetStreamContext
    scheduler: RecordingScheduler
    runner: SandboxRunner
    consumers: list[tuple[ExecutionConsumer, asyncio.Task[None]]] = field(default_factory=list)

    async def publish(self, execution_id: str) -> None:
        names = job_stream_names(self.settings)
        await self.scheduler_js.publish(
            names.subject("function"),
            JobMessage(execution_id=execution_id, kind="function").encode(),
            headers={"Nats-Msg-Id": execution_id},
        )

    async def start(self, **options: Any) -> ExecutionConsumer:
        ack_wait = options.pop("ack_wait_seconds", 30.0)
        subscription = await subscribe(self.js, self.settings, ack_wait_seconds=ack_wait)
        consumer = ExecutionConsumer(
            subscription=subscription,
            scheduler=self.scheduler,
            runner=self.runner,
            options=ConsumerOptions(
                worker_id="executor-test",
                api_url="http://127.0.0.1:8000",
                concurrency=4,
                ack_wait_seconds=ack_wait,
                **options,
            ),
        )
        self.consumers.append((consumer, asyncio.create_task(consumer.run())))
        return consumer

    async def ack_pending(self) -> int:
        names = job_stream_names(self.settings)
        info = await self.js.consumer_info(names.stream, consumer_name(self.settings))
        return int(info.num_ack_pending)

    async def stream_messages(self) -> int:
        info = await self.scheduler_js.stream_info(job_stream_names(self.settings).stream)
        return int(info.state.messages)


@pytest.fixture
async def harness(nats_settings_as: NatsSettingsAs) -> AsyncIterator[Harness]:
    scheduler_nc = await connect_nats(nats_settings_as("scheduler"), name="test-scheduler")
    await ensure_job_stream(scheduler_nc.jetstream(), nats_settings_as("scheduler"))
    settings = nats_settings_as("executor")
    nc = await connect_nats(settings, name="test-executor")
    pool = WorkerPool(PoolLimits(concurrency=4, idle_seconds=30.0))
    await pool.start()
    h = Harness(
        nc=nc,
        js=nc.jetstream(),
        settings=settings,
        scheduler_nc=scheduler_nc,
        scheduler_js=scheduler_nc.jetstream(),
        scheduler=RecordingScheduler(),
        runner=SandboxRunner(pool),
    )
    yield h
    for consumer, task in h.consumers:
        consumer.stop()
        await task
    await pool.close()
    await nc.close()
    await scheduler_nc.close()


async def test_claims_and_completions_travel_in_batches(harness: Harness) -> None:
    ids = [f"exec-{i}" for i in range(6)]
    for execution_id in ids:
        harness.scheduler.inputs[execution_id] = {"n": 2**60 + ids.index(execution_id)}
        await harness.publish(execution_id)
    await harness.start(flush_delay_seconds=0.5)
    await eventually(lambda: len(harness.scheduler.outcomes) == len(ids))
    outcomes = harness.scheduler.outcomes
    for index, execution_id in enumerate(ids):
        assert outcomes[execution_id].status is OutcomeStatus.COMPLETED
        assert outcomes[execution_id].output == {"n": 2**60 + index, "id": execution_id}
        assert outcomes[execution_id].attempt == 1
    assert sum(len(c) for c in harness.scheduler.claims) == len(ids)
    assert len(harness.scheduler.claims) < len(ids)
    assert len(harness.scheduler.completions) < len(ids)
    await eventually(_stream_empty(harness))


def _stream_empty(harness: Harness) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await harness.ack_pending() == 0 and await harness.stream_messages() == 0

    return check


async def test_message_is_acked_only_after_its_outcome_is_recorded(harness: Harness) -> None:
    harness.scheduler.complete_gate = asyncio.Event()
    await harness.publish("exec-gated")
    await harness.start()
    await eventually(lambda: len(harness.scheduler.claims) == 1)
    # The run finishes quickly; while recording is held back the message stays unacked.
    await asyncio.sleep(1.0)
    assert await harness.ack_pending() == 1
    assert await harness.stream_messages() == 1
    harness.scheduler.complete_gate.set()
    await eventually(lambda: "exec-gated" in harness.scheduler.outcomes)
    await eventually(_stream_empty(harness))


async def test_skipped_executions_are_acked_and_not_run(harness: Harness) -> None:
    harness.scheduler.skip = {"exec-cancelled"}
    await harness.publish("exec-cancelled")
    await harness.publish("exec-live")
    await harness.start()
    await eventually(lambda: "exec-live" in harness.scheduler.outcomes)
    await eventually(_stream_empty(harness))
    assert "exec-cancelled" not in harness.scheduler.outcomes


async def test_transient_completion_failures_are_retried(harness: Harness) -> None:
    harness.scheduler.fail_completions = [ServiceUnavailable(), ServiceUnavailable()]
    await harness.publish("exec-retry")
    await harness.start()
    await eventually(lambda: "exec-retry" in harness.scheduler.outcomes)
    await eventually(_stream_empty(harness))
    assert len(harness.scheduler.claims) == 1


async def test_unrecordable_outcome_is_handed_back_and_redelivered(harness: Harness) -> None:
    harness.scheduler.fail_completions = [InvalidArgument("rejected")]
    await harness.publish("exec-again")
    await harness.start()
    await eventually(lambda: "exec-again" in harness.scheduler.outcomes)
    attempts = [item.delivery_attempt for claim in harness.scheduler.claims for item in claim]
    assert attempts == [1, 2]
    assert harness.scheduler.outcomes["exec-again"].attempt == 2


async def test_unacked_message_is_redelivered(harness: Harness) -> None:
    await harness.publish("exec-lost")
    # A first executor takes the message and dies without acking it.
    crashed = await subscribe(harness.js, harness.settings, ack_wait_seconds=3.0)
    (taken,) = await crashed.fetch(1, timeout=10)
    assert JobMessage.decode(taken.data).execution_id == "exec-lost"
    await crashed.unsubscribe()
    await harness.start(ack_wait_seconds=3.0)
    await eventually(lambda: "exec-lost" in harness.scheduler.outcomes)
    (claim,) = harness.scheduler.claims
    assert claim == [ClaimItem(execution_id="exec-lost", delivery_attempt=2)]
    await eventually(_stream_empty(harness))


async def test_stop_hands_back_unfinished_work(harness: Harness) -> None:
    harness.scheduler.code = SLOW
    harness.scheduler.inputs = {"exec-quick": {"sleep": 0}, "exec-long": {"sleep": 60}}
    await harness.publish("exec-quick")
    await harness.publish("exec-long")
    consumer = await harness.start(ack_wait_seconds=3.0, shutdown_grace_seconds=2.0)
    await eventually(lambda: "exec-quick" in harness.scheduler.outcomes)
    # Long work keeps its lease: in-progress acks and heartbeats while it runs.
    await eventually(
        lambda: any(
            HeldAttempt(execution_id="exec-long", attempt=1) in beat
            for beat in harness.scheduler.heartbeats
        )
    )
    consumer.stop()
    _, task = harness.consumers.pop()
    await task
    assert "exec-long" not in harness.scheduler.outcomes
    # Released first, so the scheduler lets the redelivery claim it without waiting a lease.
    assert harness.scheduler.releases == [[HeldAttempt(execution_id="exec-long", attempt=1)]]
    # Every report named the worker that claimed: the scheduler acts for nobody else.
    assert harness.scheduler.worker_ids == {"executor-test"}
    # Handed back at once: another executor's fetch gets it again.
    other = await subscribe(harness.js, harness.settings, ack_wait_seconds=3.0)
    (again,) = await other.fetch(1, timeout=10)
    assert JobMessage.decode(again.data).execution_id == "exec-long"
    assert again.metadata.num_delivered == 2
    await again.ack()


def _claimed(harness: Harness, prefix: str) -> int:
    return sum(
        1 for claim in harness.scheduler.claims for i in claim if i.execution_id[:5] == prefix
    )


async def test_short_runs_are_claimed_ahead_of_free_slots(harness: Harness) -> None:
    harness.scheduler.code = SLOW
    harness.scheduler.inputs = {"warm": {"sleep": 0}}
    ids = [f"slow-{i}" for i in range(12)]
    harness.scheduler.inputs.update({execution_id: {"sleep": 1} for execution_id in ids})
    await harness.start(prefetch=8)
    await harness.publish("warm")
    await eventually(lambda: "warm" in harness.scheduler.outcomes)
    for execution_id in ids:
        await harness.publish(execution_id)
    # Runs are known to be short: 4 run while 8 more are claimed and wait for a slot.
    await eventually(lambda: _claimed(harness, "slow-") == len(ids))
    assert len([i for i in harness.scheduler.outcomes if i.startswith("slow-")]) < len(ids)
    await eventually(lambda: all(i in harness.scheduler.outcomes for i in ids))
    assert all(harness.scheduler.outcomes[i].status is OutcomeStatus.COMPLETED for i in ids)


async def test_nothing_is_claimed_ahead_until_runs_are_known_short(harness: Harness) -> None:
    harness.scheduler.code = SLOW
    ids = [f"slow-{i}" for i in range(8)]
    harness.scheduler.inputs = {execution_id: {"sleep": 2} for execution_id in ids}
    for execution_id in ids:
        await harness.publish(execution_id)
    await harness.start(prefetch=8)
    await eventually(lambda: _claimed(harness, "slow-") >= 4)
    await asyncio.sleep(1.0)
    # No run has ended yet: only the 4 slots' worth is claimed.
    assert _claimed(harness, "slow-") == 4
    await eventually(lambda: all(i in harness.scheduler.outcomes for i in ids))


async def test_a_lone_outcome_is_recorded_without_waiting_for_company(harness: Harness) -> None:
    # The flush delay lets outcomes that finish together share one write; with nothing else
    # running, none will come, so the outcome goes at once rather than a minute later.
    await harness.start(flush_delay_seconds=60.0)
    await harness.publish("exec-alone")
    await eventually(lambda: "exec-alone" in harness.scheduler.outcomes, timeout=20.0)

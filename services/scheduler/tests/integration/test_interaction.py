"""Interactive input and cancel over gRPC: pause, continue, cancel, input deadline, batches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.msg import Msg

from sinas_common.control import ControlAction, ControlMessage, control_subject
from sinas_common.errors import ExecutionNotFound, InvalidTransition, PermissionDenied
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json
from sinas_common.nats_connect import connect_nats
from sinas_devstack.pytest_plugin import NatsSettingsAs
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler.testing import RunningScheduler, bearer

StartScheduler = Callable[..., Awaitable[RunningScheduler]]
DEADLINE_SECONDS = 30.0


class ControlInbox:
    """Every control message published while the test runs."""

    def __init__(self) -> None:
        self.messages: list[ControlMessage] = []
        self.raw: list[bytes] = []
        self._arrived = asyncio.Event()

    async def on_message(self, msg: Msg) -> None:
        self.raw.append(msg.data)
        self.messages.append(ControlMessage.decode(msg.data))
        self._arrived.set()

    async def wait_for(self, execution_id: str, action: ControlAction) -> ControlMessage:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            for message in self.messages:
                if message.execution_id == execution_id and message.action is action:
                    return message
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {action} control message for {execution_id}"
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue


@pytest.fixture
async def inbox(nats_settings_as: NatsSettingsAs) -> AsyncIterator[ControlInbox]:
    """Listens as an executor does, logged in as the executor's NATS user."""
    settings = nats_settings_as("executor")
    client = await connect_nats(settings, name="test-executor")
    inbox = ControlInbox()
    await client.subscribe(control_subject(settings), cb=inbox.on_message)
    await client.flush()
    yield inbox
    await client.close()


async def running(scheduler: RunningScheduler, key: str, worker_id: str = "w1") -> str:
    """A submitted execution, claimed by `worker_id` (attempt 1)."""
    execution_id = await scheduler.submit(bearer(key), {})
    response = await invoke(
        scheduler.worker.ClaimExecutions,
        pb.ClaimExecutionsRequest(
            worker_id=worker_id,
            items=[pb.ClaimRequestItem(execution_id=execution_id, delivery_attempt=1)],
        ),
    )
    assert [c.execution_id for c in response.claimed] == [execution_id]
    return execution_id


async def report(
    scheduler: RunningScheduler,
    execution_id: str,
    prompt: str,
    round_: int,
    attempt: int = 1,
    *,
    worker_id: str = "w1",
) -> list[str]:
    response = await invoke(
        scheduler.worker.ReportAwaitingInput,
        pb.ReportAwaitingInputRequest(
            worker_id=worker_id,
            items=[
                pb.AwaitingInput(
                    execution_id=execution_id, attempt=attempt, prompt=prompt, round=round_
                )
            ],
        ),
    )
    return list(response.paused_execution_ids)


async def continue_(
    scheduler: RunningScheduler, key: str, execution_id: str, value: object
) -> pb.Execution:
    response = await invoke(
        scheduler.executions.ContinueExecution,
        pb.ContinueExecutionRequest(execution_id=execution_id, input_json=dump_json(value)),
        metadata=bearer(key),
    )
    execution: pb.Execution = response.execution
    return execution


async def cancel(
    scheduler: RunningScheduler, key: str, execution_id: str
) -> pb.CancelExecutionResponse:
    response: pb.CancelExecutionResponse = await invoke(
        scheduler.executions.CancelExecution,
        pb.CancelExecutionRequest(execution_id=execution_id),
        metadata=bearer(key),
    )
    return response


async def heartbeat(
    scheduler: RunningScheduler, *execution_ids: str, worker_id: str = "w1", attempt: int = 1
) -> pb.HeartbeatResponse:
    response: pb.HeartbeatResponse = await invoke(
        scheduler.worker.Heartbeat,
        pb.HeartbeatRequest(
            worker_id=worker_id,
            attempts=[pb.HeldAttempt(execution_id=i, attempt=attempt) for i in execution_ids],
        ),
    )
    return response


async def test_pause_continue_and_answer_rounds(
    scheduler: RunningScheduler, inbox: ControlInbox
) -> None:
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    execution_id = await running(scheduler, key)

    assert await report(scheduler, execution_id, "Your name?", 1) == [execution_id]
    # A retried report of the same round is answered the same way, not counted twice.
    assert await report(scheduler, execution_id, "Your name?", 1) == [execution_id]
    paused = await scheduler.get(bearer(key), execution_id)
    assert paused.status == pb.EXECUTION_STATUS_AWAITING_INPUT
    assert paused.input_prompt == "Your name?"
    assert paused.HasField("input_deadline_at")
    assert not (await heartbeat(scheduler, execution_id)).resumed

    resumed = await continue_(scheduler, key, execution_id, {"name": "Ada", "n": 2**60})
    assert resumed.status == pb.EXECUTION_STATUS_RUNNING
    assert resumed.input_prompt == "" and not resumed.HasField("input_deadline_at")
    await inbox.wait_for(execution_id, ControlAction.CONTINUE)
    # Only a hint crosses the bus: the answer stays with the scheduler.
    assert all(b"Ada" not in raw for raw in inbox.raw)
    # The slow path tells the same, with the round it answers, until the next prompt.
    [news] = (await heartbeat(scheduler, execution_id)).resumed
    assert (news.execution_id, news.round) == (execution_id, 1)
    assert json.loads(news.input_json) == {"name": "Ada", "n": 2**60}
    # A stale report of the answered round does not pause again.
    assert await report(scheduler, execution_id, "Your name?", 1) == []

    assert await report(scheduler, execution_id, "Age?", 2) == [execution_id]
    assert not (await heartbeat(scheduler, execution_id)).resumed
    await continue_(scheduler, key, execution_id, "42")
    [second] = (await heartbeat(scheduler, execution_id)).resumed
    assert (second.round, json.loads(second.input_json)) == (2, "42")

    applied = await invoke(
        scheduler.worker.CompleteExecutions,
        pb.CompleteExecutionsRequest(
            worker_id="w1",
            outcomes=[
                pb.ExecutionOutcome(
                    execution_id=execution_id,
                    attempt=1,
                    status=pb.EXECUTION_STATUS_COMPLETED,
                    output_json=b"{}",
                )
            ],
        ),
    )
    assert list(applied.applied_execution_ids) == [execution_id]


async def test_input_news_and_pauses_are_for_the_claim_holder_alone(
    scheduler: RunningScheduler,
) -> None:
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    execution_id = await running(scheduler, key, worker_id="w1")
    strangers = (("w2", 1), ("w1", 2), ("", 1))

    # Another worker can't pause it (and so can't set the prompt its user sees).
    for worker_id, attempt in strangers:
        assert (
            await report(scheduler, execution_id, "forged?", 1, attempt, worker_id=worker_id) == []
        )
    assert (await scheduler.get(bearer(key), execution_id)).status == pb.EXECUTION_STATUS_RUNNING

    assert await report(scheduler, execution_id, "Your name?", 1) == [execution_id]
    # Nor take the round over by re-reporting it.
    for worker_id, attempt in strangers:
        assert (
            await report(scheduler, execution_id, "Your name?", 1, attempt, worker_id=worker_id)
            == []
        )
    await continue_(scheduler, key, execution_id, {"secret": "Ada"})
    # The answer goes to the claim holder only; a heartbeat of anyone else learns nothing.
    for worker_id, attempt in strangers:
        news = await heartbeat(scheduler, execution_id, worker_id=worker_id, attempt=attempt)
        assert not news.resumed and not news.cancelled_execution_ids
    [resumed] = (await heartbeat(scheduler, execution_id)).resumed
    assert json.loads(resumed.input_json) == {"secret": "Ada"}

    # A cancel of a paused run is news for its holder only, too.
    await report(scheduler, execution_id, "Age?", 2)
    assert (await cancel(scheduler, key, execution_id)).cancelled
    for worker_id, attempt in strangers:
        news = await heartbeat(scheduler, execution_id, worker_id=worker_id, attempt=attempt)
        assert not news.cancelled_execution_ids
    assert list((await heartbeat(scheduler, execution_id)).cancelled_execution_ids) == [
        execution_id
    ]


async def test_continue_needs_a_paused_own_execution(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    _, stranger = await scheduler.create_user(["Users"])
    _, guest = await scheduler.create_user(["GuestUsers"])
    execution_id = await running(scheduler, key)

    with pytest.raises(InvalidTransition, match="not awaiting input"):
        await continue_(scheduler, key, execution_id, {})
    await report(scheduler, execution_id, "?", 1)
    with pytest.raises(ExecutionNotFound):
        await continue_(scheduler, stranger, execution_id, {})
    with pytest.raises(ExecutionNotFound):
        await continue_(scheduler, key, "no-such-id", {})
    with pytest.raises(ExecutionNotFound):
        await continue_(scheduler, guest, execution_id, {})
    with pytest.raises(Exception, match="not valid JSON"):
        await invoke(
            scheduler.executions.ContinueExecution,
            pb.ContinueExecutionRequest(execution_id=execution_id, input_json=b"{nope"),
            metadata=bearer(key),
        )
    # An admin (update:all) may continue someone else's execution.
    assert (
        await continue_(scheduler, scheduler.admin_key, execution_id, 1)
    ).status == pb.EXECUTION_STATUS_RUNNING


async def test_update_permission_is_required(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    await invoke(
        scheduler.identity.CreateRole,
        pb.CreateRoleRequest(
            name="Runners",
            permissions=["sinas.functions/*/*.execute:own", "sinas.executions.read:own"],
        ),
        metadata=scheduler.admin,
    )
    _, key = await scheduler.create_user(["Runners"])
    execution_id = await scheduler.submit(bearer(key), {})
    with pytest.raises(PermissionDenied):
        await cancel(scheduler, key, execution_id)


async def test_cancel_pending_running_and_paused(
    scheduler: RunningScheduler, inbox: ControlInbox
) -> None:
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    _, stranger = await scheduler.create_user(["Users"])

    pending = await scheduler.submit(bearer(key), {}, delay_seconds=3600)
    with pytest.raises(ExecutionNotFound):
        await cancel(scheduler, stranger, pending)
    first = await cancel(scheduler, key, pending)
    assert first.cancelled and first.execution.status == pb.EXECUTION_STATUS_CANCELLED
    assert first.execution.HasField("completed_at")
    again = await cancel(scheduler, key, pending)
    assert not again.cancelled and again.execution.status == pb.EXECUTION_STATUS_CANCELLED
    # A dispatched but unclaimed execution is skipped at claim once cancelled.
    claimed = await invoke(
        scheduler.worker.ClaimExecutions,
        pb.ClaimExecutionsRequest(
            worker_id="w1", items=[pb.ClaimRequestItem(execution_id=pending, delivery_attempt=1)]
        ),
    )
    assert list(claimed.skipped_execution_ids) == [pending] and not claimed.claimed

    busy = await running(scheduler, key)
    left = await cancel(scheduler, key, busy)
    assert not left.cancelled and left.execution.status == pb.EXECUTION_STATUS_RUNNING

    paused = await running(scheduler, key)
    await report(scheduler, paused, "?", 1)
    ended = await cancel(scheduler, key, paused)
    assert ended.cancelled and ended.execution.status == pb.EXECUTION_STATUS_CANCELLED
    assert ended.execution.input_prompt == ""
    await inbox.wait_for(paused, ControlAction.CANCEL)
    news = await heartbeat(scheduler, busy, paused)
    assert list(news.cancelled_execution_ids) == [paused]
    with pytest.raises(InvalidTransition):
        await continue_(scheduler, key, paused, {})


async def test_input_deadline_fails_the_paused_execution(
    start_scheduler: StartScheduler, inbox: ControlInbox
) -> None:
    scheduler = await start_scheduler(
        EXECUTION_INPUT_TIMEOUT_SECONDS=1, SCHEDULER_REAPER_INTERVAL_SECONDS=0.2
    )
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    execution_id = await running(scheduler, key)
    await report(scheduler, execution_id, "?", 1)

    await inbox.wait_for(execution_id, ControlAction.CANCEL)
    failed = await scheduler.get(bearer(key), execution_id)
    assert failed.status == pb.EXECUTION_STATUS_FAILED
    assert failed.error == "input deadline passed: no input arrived within 1 seconds"
    assert list((await heartbeat(scheduler, execution_id)).cancelled_execution_ids) == [
        execution_id
    ]


async def test_cancel_batch(scheduler: RunningScheduler, inbox: ControlInbox) -> None:
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    _, stranger = await scheduler.create_user(["Users"])
    batches = pb_grpc.BatchServiceStub(scheduler.channel)
    submitted = await invoke(
        batches.SubmitBatch,
        pb.SubmitBatchRequest(
            namespace="tests", name="echo", inputs_json=[b"{}"] * 4, trigger_id_prefix="b"
        ),
        metadata=bearer(key),
    )
    ids = list(submitted.execution_ids)
    claimed = await invoke(
        scheduler.worker.ClaimExecutions,
        pb.ClaimExecutionsRequest(
            worker_id="w1",
            items=[pb.ClaimRequestItem(execution_id=i, delivery_attempt=1) for i in ids[:2]],
        ),
    )
    assert len(claimed.claimed) == 2
    await report(scheduler, ids[1], "?", 1)

    request = pb.CancelBatchRequest(batch_id=submitted.batch_id)
    with pytest.raises(Exception, match="Batch not found"):
        await invoke(batches.CancelBatch, request, metadata=bearer(stranger))
    result = await invoke(batches.CancelBatch, request, metadata=bearer(key))
    assert (result.batch_id, result.status, result.cancelled_children) == (
        submitted.batch_id,
        "running",
        3,
    )
    await inbox.wait_for(ids[1], ControlAction.CANCEL)
    statuses = [(await scheduler.get(bearer(key), i)).status for i in ids]
    assert statuses == [pb.EXECUTION_STATUS_RUNNING] + [pb.EXECUTION_STATUS_CANCELLED] * 3

    # The running child finishes and counts; the batch ends cancelled with it.
    await invoke(
        scheduler.worker.CompleteExecutions,
        pb.CompleteExecutionsRequest(
            worker_id="w1",
            outcomes=[
                pb.ExecutionOutcome(
                    execution_id=ids[0], attempt=1, status=pb.EXECUTION_STATUS_COMPLETED
                )
            ],
        ),
    )
    batch = (
        await invoke(
            batches.GetBatch,
            pb.GetBatchRequest(batch_id=submitted.batch_id),
            metadata=bearer(key),
        )
    ).batch
    assert (batch.status, batch.completed, batch.cancelled) == ("cancelled", 1, 3)
    assert batch.HasField("cancelled_at") and batch.HasField("finished_at")
    finished = await invoke(batches.CancelBatch, request, metadata=bearer(key))
    assert (finished.status, finished.cancelled_children) == ("cancelled", 0)

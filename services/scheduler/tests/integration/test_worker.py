"""Worker RPCs over gRPC: claim, complete, redelivery, lost workers, waiting for the end."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.models import worker_lost_error
from sinas_scheduler.testing import RunningScheduler, bearer

DEADLINE_SECONDS = 30.0


async def claim(
    scheduler: RunningScheduler, *items: tuple[str, int], worker_id: str = "w1"
) -> pb.ClaimExecutionsResponse:
    request = pb.ClaimExecutionsRequest(
        worker_id=worker_id,
        items=[pb.ClaimRequestItem(execution_id=i, delivery_attempt=a) for i, a in items],
    )
    response: pb.ClaimExecutionsResponse = await invoke(scheduler.worker.ClaimExecutions, request)
    return response


async def complete(
    scheduler: RunningScheduler, *outcomes: pb.ExecutionOutcome, worker_id: str = "w1"
) -> list[str]:
    response = await invoke(
        scheduler.worker.CompleteExecutions,
        pb.CompleteExecutionsRequest(worker_id=worker_id, outcomes=outcomes),
    )
    return list(response.applied_execution_ids)


def done(execution_id: str, attempt: int, output: Any = None, **fields: Any) -> pb.ExecutionOutcome:
    return pb.ExecutionOutcome(
        execution_id=execution_id,
        attempt=attempt,
        status=fields.pop("status", pb.EXECUTION_STATUS_COMPLETED),
        output_json=b"" if output is None else dump_json(output),
        **fields,
    )


def finished_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("sinas_executions_finished_total", {"outcome": outcome})
    return value or 0.0


async def test_claim_returns_work_token_and_function_once(scheduler: RunningScheduler) -> None:
    function = await scheduler.create_function(timeout_seconds=60)
    user, key = await scheduler.create_user(["Users"])
    ids = [await scheduler.submit(bearer(key), {"i": i}, trigger_id="t") for i in range(3)]

    response = await claim(scheduler, *[(i, 1) for i in ids], ("no-such-id", 1))
    assert sorted(c.execution_id for c in response.claimed) == sorted(ids)
    assert list(response.skipped_execution_ids) == ["no-such-id"]
    [version] = response.functions
    assert (version.function_id, version.version, version.timeout_seconds) == (
        function.id,
        1,
        60,
    )
    assert version.code == function.code
    first = next(c for c in response.claimed if c.execution_id == ids[0])
    assert (first.attempt, first.user_id, first.user_email) == (1, user.id, user.email)
    assert json.loads(first.input_json) == {"i": 0}
    assert (first.trigger_type, first.trigger_id, first.depth) == ("API", "t", 0)

    # The token acts as the user, and a submit made with it is one level deeper.
    me = await invoke(
        scheduler.identity.GetMe, pb.GetMeRequest(), metadata=bearer(first.access_token)
    )
    assert me.user.id == user.id
    child = await scheduler.submit(bearer(first.access_token), {})
    assert (await scheduler.get(bearer(key), child)).depth == 1

    running = await scheduler.get(bearer(key), ids[0])
    assert running.status == pb.EXECUTION_STATUS_RUNNING and running.attempts == 1
    assert running.HasField("started_at")
    # A second claim of the same delivery loses.
    again = await claim(scheduler, (ids[0], 1), worker_id="w2")
    assert list(again.claimed) == [] and list(again.skipped_execution_ids) == [ids[0]]


async def test_complete_applies_once_and_terminal_never_changes(
    scheduler: RunningScheduler,
) -> None:
    await scheduler.create_function()
    ok_id = await scheduler.submit(scheduler.admin, {})
    bad_id = await scheduler.submit(scheduler.admin, {})
    await claim(scheduler, (ok_id, 1), (bad_id, 1))
    before = {label: finished_count(label) for label in ("COMPLETED", "TIMED_OUT")}

    output = {"big": 2**60, "f": 0.5, "s": "✓"}
    applied = await complete(
        scheduler,
        done(ok_id, 1, output),
        done(
            bad_id,
            1,
            status=pb.EXECUTION_STATUS_FAILED,
            error="boom",
            traceback="Traceback ...",
            timed_out=True,
        ),
        done(ok_id, 2, {"stale": True}),
    )
    assert sorted(applied) == sorted([ok_id, bad_id])
    # Counted once each, by outcome; the stale attempt's outcome is not.
    assert {label: finished_count(label) - before[label] for label in before} == {
        "COMPLETED": 1,
        "TIMED_OUT": 1,
    }
    finished = await scheduler.get(scheduler.admin, ok_id)
    assert finished.status == pb.EXECUTION_STATUS_COMPLETED
    assert json.loads(finished.output_json) == output
    assert finished.HasField("completed_at") and finished.duration_ms >= 0
    failed = await scheduler.get(scheduler.admin, bad_id)
    assert (failed.status, failed.error, failed.traceback, failed.timed_out) == (
        pb.EXECUTION_STATUS_FAILED,
        "boom",
        "Traceback ...",
        True,
    )

    # Terminal: neither another outcome nor a redelivered claim changes it.
    assert await complete(scheduler, done(ok_id, 1, {"again": 1})) == []
    redelivered = await claim(scheduler, (ok_id, 2), (bad_id, 9))
    assert sorted(redelivered.skipped_execution_ids) == sorted([ok_id, bad_id])
    assert (await scheduler.get(scheduler.admin, ok_id)).status == pb.EXECUTION_STATUS_COMPLETED
    assert json.loads((await scheduler.get(scheduler.admin, ok_id)).output_json) == output
    failed_again = await scheduler.get(scheduler.admin, bad_id)
    assert (failed_again.status, failed_again.error) == (pb.EXECUTION_STATUS_FAILED, "boom")
    assert finished_count("COMPLETED") - before["COMPLETED"] == 1


async def test_a_duplicate_delivery_never_takes_a_running_execution(
    scheduler: RunningScheduler,
) -> None:
    await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {})
    assert [c.attempt for c in (await claim(scheduler, (execution_id, 1))).claimed] == [1]
    # A NATS node failed under the live worker: its message comes again, many times over,
    # to other workers. The row decides: it is RUNNING, so every copy is skipped.
    for delivery in (2, 5, 99):
        duplicate = await claim(scheduler, (execution_id, delivery), worker_id="w2")
        assert list(duplicate.claimed) == []
        assert list(duplicate.skipped_execution_ids) == [execution_id]
    running = await scheduler.get(scheduler.admin, execution_id)
    assert (running.status, running.attempts) == (pb.EXECUTION_STATUS_RUNNING, 1)
    assert await complete(scheduler, done(execution_id, 1, {"ok": True})) == [execution_id]
    assert (await scheduler.get(scheduler.admin, execution_id)).status == (
        pb.EXECUTION_STATUS_COMPLETED
    )


async def test_a_released_attempt_is_claimed_again_at_once(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {})
    await claim(scheduler, (execution_id, 1))

    async def release(worker_id: str, attempt: int) -> list[str]:
        response = await invoke(
            scheduler.worker.ReleaseExecutions,
            pb.ReleaseExecutionsRequest(
                worker_id=worker_id,
                attempts=[pb.ReleasedAttempt(execution_id=execution_id, attempt=attempt)],
            ),
        )
        return list(response.released_execution_ids)

    # Only the worker holding that attempt can hand it back.
    assert await release("w2", 1) == []
    assert await release("w1", 2) == []
    assert await release("w1", 1) == [execution_id]
    assert (await scheduler.get(scheduler.admin, execution_id)).status == (
        pb.EXECUTION_STATUS_PENDING
    )
    again = await claim(scheduler, (execution_id, 2), worker_id="w2")
    assert [c.attempt for c in again.claimed] == [2]
    # The first worker's late outcome no longer holds the execution.
    assert await complete(scheduler, done(execution_id, 1, {"late": 1})) == []
    assert await complete(scheduler, done(execution_id, 2, {"ok": 2}), worker_id="w2") == [
        execution_id
    ]


async def test_outcome_status_must_be_terminal(scheduler: RunningScheduler) -> None:
    from sinas_common.errors import InvalidArgument

    await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {})
    await claim(scheduler, (execution_id, 1))
    for status in (pb.EXECUTION_STATUS_RUNNING, pb.EXECUTION_STATUS_UNSPECIFIED):
        try:
            await complete(scheduler, done(execution_id, 1, status=status))
        except InvalidArgument as exc:
            assert exc.violations[0].field == "outcomes[0].status"
        else:
            raise AssertionError("a non-terminal outcome was accepted")


async def test_wait_returns_on_completion_from_another_replica(
    start_scheduler: Any,
) -> None:
    waiter_side: RunningScheduler = await start_scheduler(SCHEDULER_DISPATCHER_ENABLED=False)
    worker_side: RunningScheduler = await start_scheduler()
    await waiter_side.create_function()
    execution_id = await waiter_side.submit(waiter_side.admin, {})

    timed_out = await invoke(
        waiter_side.executions.WaitExecution,
        pb.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=0.2),
        metadata=waiter_side.admin,
    )
    assert not timed_out.finished
    assert timed_out.execution.status == pb.EXECUTION_STATUS_PENDING

    wait = asyncio.ensure_future(
        invoke(
            waiter_side.executions.WaitExecution,
            pb.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=60),
            metadata=waiter_side.admin,
            timeout=90,
        )
    )
    await claim(worker_side, (execution_id, 1))
    assert await complete(worker_side, done(execution_id, 1, {"ok": True})) == [execution_id]
    response = await wait
    assert response.finished
    assert response.execution.status == pb.EXECUTION_STATUS_COMPLETED
    assert json.loads(response.execution.output_json) == {"ok": True}


async def test_reaper_retries_quiet_attempts_then_fails_the_last(
    start_scheduler: Any, db: AsyncEngine
) -> None:
    scheduler: RunningScheduler = await start_scheduler(
        EXECUTION_LEASE_SECONDS=0.5,
        EXECUTION_MAX_ATTEMPTS=2,
        SCHEDULER_REAPER_INTERVAL_SECONDS=0.2,
    )
    await scheduler.create_function()
    quiet, alive = [await scheduler.submit(scheduler.admin, {}) for _ in range(2)]
    await claim(scheduler, (quiet, 1), (alive, 1))

    async def heartbeat_alive() -> None:
        while True:
            await invoke(
                scheduler.worker.Heartbeat,
                pb.HeartbeatRequest(
                    worker_id="w1", attempts=[pb.HeldAttempt(execution_id=alive, attempt=1)]
                ),
            )
            await asyncio.sleep(0.1)

    async def status_of(execution_id: str) -> pb.Execution:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            execution = await scheduler.get(scheduler.admin, execution_id)
            if execution.status != pb.EXECUTION_STATUS_RUNNING or time.monotonic() > deadline:
                return execution
            await asyncio.sleep(0.1)

    async def dispatched_at(execution_id: str) -> Any:
        async with db.connect() as conn:
            return (
                await conn.execute(
                    sa.text("SELECT dispatched_at FROM executions WHERE id = :id"),
                    {"id": execution_id},
                )
            ).scalar_one()

    beating = asyncio.ensure_future(heartbeat_alive())
    try:
        first_dispatch = await dispatched_at(quiet)
        # Attempt 1 went quiet for a lease: PENDING again and published again, attempts kept.
        retried = await status_of(quiet)
        assert (retried.status, retried.attempts) == (pb.EXECUTION_STATUS_PENDING, 1)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (await dispatched_at(quiet)) in (None, first_dispatch):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        [second] = (await claim(scheduler, (quiet, 2), worker_id="w2")).claimed
        assert second.attempt == 2
        # The last allowed attempt goes quiet too: the worker is lost for good.
        reaped = await status_of(quiet)
        assert reaped.status == pb.EXECUTION_STATUS_FAILED
        assert reaped.error == worker_lost_error(2)
        # Heartbeats keep a long attempt alive however long it runs.
        assert (await scheduler.get(scheduler.admin, alive)).status == (pb.EXECUTION_STATUS_RUNNING)
    finally:
        beating.cancel()


async def _row(db: AsyncEngine, execution_id: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT status, attempts, worker_id, output, heartbeat_at, dispatched_at"
                    " FROM executions WHERE id = :id"
                ),
                {"id": execution_id},
            )
        ).one()


async def test_only_the_claim_holder_ends_keeps_alive_or_hands_back_its_attempt(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {})
    await claim(scheduler, (execution_id, 1), worker_id="w1")
    held = await _row(db, execution_id)
    assert (held.status, held.attempts, held.worker_id) == ("RUNNING", 1, "w1")

    # Another worker, the right worker naming another attempt, or no worker at all.
    strangers = (("w2", 1), ("w1", 2), ("", 1))
    for worker_id, attempt in strangers:
        forged = done(execution_id, attempt, {"forged": worker_id})
        assert await complete(scheduler, forged, worker_id=worker_id) == []
        news = await invoke(
            scheduler.worker.Heartbeat,
            pb.HeartbeatRequest(
                worker_id=worker_id,
                attempts=[pb.HeldAttempt(execution_id=execution_id, attempt=attempt)],
            ),
        )
        assert not news.cancelled_execution_ids and not news.resumed
        released = await invoke(
            scheduler.worker.ReleaseExecutions,
            pb.ReleaseExecutionsRequest(
                worker_id=worker_id,
                attempts=[pb.ReleasedAttempt(execution_id=execution_id, attempt=attempt)],
            ),
        )
        assert list(released.released_execution_ids) == []
    # Nothing changed, not even the lease a heartbeat would have renewed.
    assert await _row(db, execution_id) == held

    assert await complete(scheduler, done(execution_id, 1, {"ok": True})) == [execution_id]
    finished = await scheduler.get(scheduler.admin, execution_id)
    assert finished.status == pb.EXECUTION_STATUS_COMPLETED
    assert json.loads(finished.output_json) == {"ok": True}


async def test_a_claim_never_takes_a_delayed_execution_before_it_is_due(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    delayed = await scheduler.submit(scheduler.admin, {}, delay_seconds=2)

    # A message for it before it is due (forged or duplicated: dispatchers publish only due
    # rows) takes nothing, so neither its input nor a token for its user leaves the scheduler.
    early = await claim(scheduler, (delayed, 1), worker_id="intruder")
    assert list(early.claimed) == [] and list(early.skipped_execution_ids) == [delayed]
    row = await _row(db, delayed)
    assert (row.status, row.attempts, row.worker_id, row.dispatched_at) == (
        "PENDING",
        0,
        None,
        None,
    )
    # Still undispatched, so the dispatcher publishes it when it comes due, and it runs then.
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (await _row(db, delayed)).dispatched_at is None:
        assert time.monotonic() < deadline, "a delayed execution was never dispatched"
        await asyncio.sleep(0.1)
    [taken] = (await claim(scheduler, (delayed, 1))).claimed
    assert taken.attempt == 1
    assert await complete(scheduler, done(delayed, 1, {"ok": True})) == [delayed]

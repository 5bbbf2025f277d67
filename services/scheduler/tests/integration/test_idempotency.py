"""Idempotency keys in PostgreSQL: replays over gRPC, conflicts, concurrent retries, the
reservation waiting on an uncommitted holder, and expired keys taken over."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import AlreadyExists, InvalidArgument
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.idempotency import KEY_REUSED_MESSAGE, IdempotencyReservation
from sinas_scheduler.models import KIND_FUNCTION, TRIGGER_TYPE_API, NewExecution
from sinas_scheduler.pg import HotPool
from sinas_scheduler.postgres_executions import PostgresExecutionStore
from sinas_scheduler.postgres_idempotency import (
    PostgresIdempotencyStore,
    reserve_idempotency_key,
)
from sinas_scheduler.testing import RunningScheduler, bearer

KEY = "order-4711"


async def scalar(db: AsyncEngine, sql: str, **params: object) -> object:
    async with db.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


async def test_a_retry_answers_the_original_execution(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    first = await scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key=KEY)
    again = await scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key=KEY)
    assert again == first
    assert await scalar(db, "SELECT count(*) FROM executions") == 1
    stored = await PostgresIdempotencyStore(db).find_response(
        user_id=(await scheduler.get(scheduler.admin, first)).user_id, key=KEY, ttl_seconds=60
    )
    assert stored is not None and stored.response == {"execution_id": first}


async def test_the_same_key_with_another_body_is_a_conflict(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    await scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key=KEY)
    with pytest.raises(AlreadyExists, match=KEY_REUSED_MESSAGE):
        await scheduler.submit(scheduler.admin, {"a": 2}, idempotency_key=KEY)
    assert await scalar(db, "SELECT count(*) FROM executions") == 1


async def test_a_malformed_key_is_invalid(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    with pytest.raises(InvalidArgument):
        await scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key="k" * 256)


async def test_keys_belong_to_their_user(scheduler: RunningScheduler, db: AsyncEngine) -> None:
    await scheduler.create_function()
    _, other_key = await scheduler.create_user(["Users"])
    mine = await scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key=KEY)
    theirs = await scheduler.submit(bearer(other_key), {"a": 1}, idempotency_key=KEY)
    assert mine != theirs
    assert await scalar(db, "SELECT count(*) FROM executions") == 2


async def test_concurrent_retries_with_one_key_store_one_execution(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    ids = await asyncio.gather(
        *(scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key=KEY) for _ in range(20))
    )
    assert len(set(ids)) == 1
    assert await scalar(db, "SELECT count(*) FROM executions") == 1
    assert await scalar(db, "SELECT count(*) FROM idempotency_keys") == 1


async def test_an_expired_key_is_taken_over_by_a_new_request(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    first = await scheduler.submit(scheduler.admin, {"a": 1}, idempotency_key=KEY)
    async with db.begin() as conn:
        await conn.execute(
            sa.text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        )
    # Past its lifetime the key remembers nothing: another body is accepted, not a conflict.
    second = await scheduler.submit(scheduler.admin, {"a": 2}, idempotency_key=KEY)
    assert second != first
    assert await scheduler.submit(scheduler.admin, {"a": 2}, idempotency_key=KEY) == second
    assert await scalar(db, "SELECT count(*) FROM executions") == 2
    assert await scalar(db, "SELECT count(*) FROM idempotency_keys") == 1


def reservation(user_id: str, fingerprint: str, execution_id: str) -> IdempotencyReservation:
    return IdempotencyReservation(
        user_id=user_id,
        key=KEY,
        fingerprint=fingerprint,
        response={"execution_id": execution_id},
        ttl_seconds=86400,
    )


def new_execution(execution_id: str, user_id: str, function_id: str) -> NewExecution:
    return NewExecution(
        id=execution_id,
        user_id=user_id,
        kind=KIND_FUNCTION,
        namespace="tests",
        name="echo",
        function_id=function_id,
        function_version=1,
        trigger_type=TRIGGER_TYPE_API,
        trigger_id="runtime-api",
        input={},
        depth=0,
        delay_seconds=0,
        parent_execution_id=None,
        callback_url=None,
    )


@pytest.mark.parametrize("holder_commits", [True, False])
async def test_a_reservation_waits_for_an_uncommitted_holder(
    scheduler: RunningScheduler, db: AsyncEngine, hot_pool: HotPool, holder_commits: bool
) -> None:
    function = await scheduler.create_function()
    user_id = str(await scalar(db, "SELECT id FROM users LIMIT 1"))
    store = PostgresExecutionStore(db, hot_pool)
    async with db.connect() as holder:
        transaction = await holder.begin()
        assert await reserve_idempotency_key(holder, reservation(user_id, "f1", "first")) is None
        waiter = asyncio.create_task(
            store.insert_execution(
                new_execution("second", user_id, function.id),
                idempotency=reservation(user_id, "f2", "second"),
            )
        )
        # The waiter's INSERT blocks on the holder's uncommitted key row until it ends.
        await asyncio.sleep(0.2)
        assert not waiter.done()
        if holder_commits:
            await transaction.commit()
        else:
            await transaction.rollback()
        held = await asyncio.wait_for(waiter, timeout=30)
    if holder_commits:
        assert held is not None
        assert (held.fingerprint, held.response) == ("f1", {"execution_id": "first"})
        assert await scalar(db, "SELECT count(*) FROM executions") == 0
    else:
        assert held is None
        assert await scalar(db, "SELECT id FROM executions") == "second"


async def submit_batch(
    scheduler: RunningScheduler, inputs: list[object], key: str = KEY
) -> pb.SubmitBatchResponse:
    response: pb.SubmitBatchResponse = await invoke(
        scheduler.batches.SubmitBatch,
        pb.SubmitBatchRequest(
            namespace="tests",
            name="echo",
            inputs_json=[dump_json(value) for value in inputs],
            idempotency_key=key,
        ),
        metadata=scheduler.admin,
    )
    return response


async def test_a_retried_batch_answers_the_original_batch(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    first = await submit_batch(scheduler, [{"i": 1}, {"i": 2}, {"i": 3}])
    again = await submit_batch(scheduler, [{"i": 1}, {"i": 2}, {"i": 3}])
    assert (again.batch_id, list(again.execution_ids), again.total) == (
        first.batch_id,
        list(first.execution_ids),
        3,
    )
    assert await scalar(db, "SELECT count(*) FROM batches") == 1
    assert await scalar(db, "SELECT count(*) FROM executions") == 3
    with pytest.raises(AlreadyExists, match=KEY_REUSED_MESSAGE):
        await submit_batch(scheduler, [{"i": 1}, {"i": 2}])
    # One key can't stand for a batch and a single submit.
    with pytest.raises(AlreadyExists):
        await scheduler.submit(scheduler.admin, {"i": 1}, idempotency_key=KEY)
    assert await scalar(db, "SELECT count(*) FROM executions") == 3


async def test_concurrent_batch_retries_store_one_batch(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    inputs: list[object] = [{"i": i} for i in range(50)]
    answers = await asyncio.gather(*(submit_batch(scheduler, inputs) for _ in range(10)))
    assert len({answer.batch_id for answer in answers}) == 1
    assert len({tuple(answer.execution_ids) for answer in answers}) == 1
    assert await scalar(db, "SELECT count(*) FROM batches") == 1
    assert await scalar(db, "SELECT count(*) FROM executions") == 50

"""The outbox over real NATS: due rows published once, delayed rows when due, restarts, API-only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.grpc_client import invoke
from sinas_common.jobstream import JobMessage, ensure_job_stream, job_stream_names
from sinas_common.jsoncodec import dump_json
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.dispatch import JetStreamDispatcher
from sinas_scheduler.models import DueExecution
from sinas_scheduler.pg import HotPool
from sinas_scheduler.postgres_executions import PostgresExecutionStore
from sinas_scheduler.prompt_dispatch import PromptDispatch
from sinas_scheduler.testing import RunningScheduler, stop_in_process

DEADLINE_SECONDS = 30.0


@pytest.fixture
async def jetstream(nats_settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    client = await connect_nats(nats_settings, name="test-scheduler")
    js = client.jetstream()
    await ensure_job_stream(js, nats_settings)
    yield js
    await client.close()


async def published(js: JetStreamContext, settings: NatsSettings) -> list[Any]:
    """Every message now in the job stream, read without consuming it."""
    names = job_stream_names(settings)
    info = await js.stream_info(names.stream)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        messages.append(await js.get_msg(names.stream, seq))
    return messages


async def wait_for_published(js: JetStreamContext, settings: NatsSettings, count: int) -> list[Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        messages = await published(js, settings)
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.05)


async def dispatched_at(db: AsyncEngine, execution_id: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(
                sa.text("SELECT dispatched_at FROM executions WHERE id = :id"),
                {"id": execution_id},
            )
        ).scalar_one()


async def wait_dispatched(db: AsyncEngine, execution_id: str) -> Any:
    """The row's dispatched_at once set: a prompt publish marks the row just after the ack."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (sent := await dispatched_at(db, execution_id)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_id} was never marked dispatched")
        await asyncio.sleep(0.02)
    return sent


async def test_due_rows_are_published_once_with_msg_id(
    scheduler: RunningScheduler,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    await scheduler.create_function()
    ids = [await scheduler.submit(scheduler.admin, {"i": i}) for i in range(3)]
    messages = await wait_for_published(jetstream, nats_settings, 3)
    # The message id names the attempt to come: a retry is a new message, a re-publish is not.
    assert sorted(m.headers["Nats-Msg-Id"] for m in messages) == sorted(f"{i}.0" for i in ids)
    assert {m.subject for m in messages} == {job_stream_names(nats_settings).subject("function")}
    assert sorted(JobMessage.decode(m.data).execution_id for m in messages) == sorted(ids)
    for execution_id in ids:
        await wait_dispatched(db, execution_id)
    # Another submit is published at once too; the first three are not published again.
    later = await scheduler.submit(scheduler.admin, {"i": 3})
    messages = await wait_for_published(jetstream, nats_settings, 4)
    assert sorted(m.headers["Nats-Msg-Id"] for m in messages) == sorted(
        f"{i}.0" for i in [*ids, later]
    )


async def test_batch_children_are_published_in_batch_order(
    scheduler: RunningScheduler, jetstream: JetStreamContext, nats_settings: NatsSettings
) -> None:
    # The children are made within a millisecond or two and share one run_at: their ids
    # alone must keep the batch's order, or the first input could run last.
    await scheduler.create_function()
    batch = await invoke(
        scheduler.batches.SubmitBatch,
        pb.SubmitBatchRequest(
            namespace="tests", name="echo", inputs_json=[dump_json({"i": i}) for i in range(200)]
        ),
        metadata=scheduler.admin,
    )
    messages = await wait_for_published(jetstream, nats_settings, 200)
    order = [JobMessage.decode(m.data).execution_id for m in messages]
    assert order == list(batch.execution_ids)


async def test_delayed_row_waits_until_due(
    scheduler: RunningScheduler,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    await scheduler.create_function()
    delayed = await scheduler.submit(scheduler.admin, {}, delay_seconds=2)
    far = await scheduler.submit(scheduler.admin, {}, delay_seconds=3600)
    now_id = await scheduler.submit(scheduler.admin, {})
    messages = await wait_for_published(jetstream, nats_settings, 1)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"{now_id}.0"]
    execution = await scheduler.get(scheduler.admin, delayed)
    run_at = execution.run_at.ToDatetime()
    assert (run_at - execution.created_at.ToDatetime()).total_seconds() == pytest.approx(
        2, abs=0.01
    )

    messages = await wait_for_published(jetstream, nats_settings, 2)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"{now_id}.0", f"{delayed}.0"]
    assert await dispatched_at(db, far) is None
    sent = await dispatched_at(db, delayed)
    assert sent.replace(tzinfo=None) >= run_at


async def test_delayed_row_survives_a_restart(
    start_scheduler: Any,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
) -> None:
    first: RunningScheduler = await start_scheduler()
    await first.create_function()
    delayed = await first.submit(first.admin, {}, delay_seconds=2)
    await stop_in_process(first)
    assert await published(jetstream, nats_settings) == []

    second: RunningScheduler = await start_scheduler()
    messages = await wait_for_published(jetstream, nats_settings, 1)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"{delayed}.0"]
    assert (await second.get(second.admin, delayed)).status == pb.EXECUTION_STATUS_PENDING


async def test_api_only_replica_never_publishes(
    start_scheduler: Any,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    api_only: RunningScheduler = await start_scheduler(SCHEDULER_DISPATCHER_ENABLED=False)
    assert not api_only.app.dispatching
    await api_only.create_function()
    execution_id = await api_only.submit(api_only.admin, {})
    # The submit's NOTIFY has been delivered to every listener long before a fresh
    # round trip returns; an API-only replica has no loop to act on it.
    await api_only.get(api_only.admin, execution_id)
    assert await dispatched_at(db, execution_id) is None
    assert await published(jetstream, nats_settings) == []

    await start_scheduler()
    messages = await wait_for_published(jetstream, nats_settings, 1)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"{execution_id}.0"]


async def test_many_replicas_publish_each_row_once(
    start_scheduler: Any,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    replicas: list[RunningScheduler] = [
        await start_scheduler(SCHEDULER_DISPATCH_BATCH=7) for _ in range(3)
    ]
    await replicas[0].create_function()
    ids = await asyncio.gather(
        *(replicas[i % 3].submit(replicas[i % 3].admin, {"i": i}) for i in range(60))
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        async with db.connect() as conn:
            left = (
                await conn.execute(
                    sa.text("SELECT count(*) FROM executions WHERE dispatched_at IS NULL")
                )
            ).scalar_one()
        if left == 0:
            break
        await asyncio.sleep(0.05)
    messages = await published(jetstream, nats_settings)
    # The message id names the attempt to come: a retry is a new message, a re-publish is not.
    assert sorted(m.headers["Nats-Msg-Id"] for m in messages) == sorted(f"{i}.0" for i in ids)


async def test_a_dispatch_round_reports_the_next_due_after_what_it_took(
    start_scheduler: Callable[..., Awaitable[RunningScheduler]], db: AsyncEngine, hot_pool: HotPool
) -> None:
    api_only = await start_scheduler(SCHEDULER_DISPATCHER_ENABLED="false")
    await api_only.create_function()
    due = [await api_only.submit(api_only.admin, {"n": n}) for n in range(2)]
    await api_only.submit(api_only.admin, {}, delay_seconds=60)
    store = PostgresExecutionStore(db, hot_pool)
    sent: list[str] = []

    async def publish(executions: Sequence[DueExecution]) -> None:
        sent.extend(execution.id for execution in executions)

    async def refuse(executions: Sequence[DueExecution]) -> None:
        raise RuntimeError("NATS is down")

    with pytest.raises(RuntimeError):
        await store.dispatch_due(limit=10, publish=refuse)
    assert all([await dispatched_at(db, execution_id) is None for execution_id in due])

    taken = await store.dispatch_due(limit=10, publish=publish)
    assert (taken.published, sent) == (2, due)
    # The rows just taken no longer count: the next one is the delayed row, a minute away.
    assert taken.next_due_seconds == pytest.approx(60, abs=5)
    empty = await store.dispatch_due(limit=10, publish=publish)
    assert empty.published == 0 and len(sent) == 2


async def test_a_row_published_promptly_but_left_unmarked_is_swept_without_a_second_message(
    start_scheduler: Callable[..., Awaitable[RunningScheduler]],
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
    hot_pool: HotPool,
) -> None:
    # The replica that accepted the row published it, then could not mark it (it died, or
    # PostgreSQL failed that one statement): a sweep later publishes it again, and
    # JetStream keeps one message.
    api_only = await start_scheduler(SCHEDULER_DISPATCHER_ENABLED="false")
    await api_only.create_function()
    execution_id = await api_only.submit(api_only.admin, {})
    store = PostgresExecutionStore(db, hot_pool)

    class LostMarks:
        async def mark_dispatched(self, execution_ids: Sequence[str], published_at: Any) -> None:
            raise ConnectionError("PostgreSQL went away")

    dispatcher = await JetStreamDispatcher.connect(nats_settings)
    try:
        prompt = PromptDispatch(marks=LostMarks(), fallback=asyncio.Event())
        prompt.attach(dispatcher)
        prompt.dispatch([DueExecution(id=execution_id, kind="function")])
        await prompt.publish_round()
        assert len(await wait_for_published(jetstream, nats_settings, 1)) == 1
        assert await dispatched_at(db, execution_id) is None

        swept = await store.dispatch_due(limit=10, publish=dispatcher.publish)
        assert swept.published == 1
        assert await dispatched_at(db, execution_id) is not None
        messages = await published(jetstream, nats_settings)
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"{execution_id}.0"]
    finally:
        await dispatcher.close()


async def test_a_prompt_mark_never_overwrites_an_earlier_one(
    start_scheduler: Callable[..., Awaitable[RunningScheduler]], db: AsyncEngine, hot_pool: HotPool
) -> None:
    # A sweep may publish and mark the row before the replica that accepted it gets to.
    api_only = await start_scheduler(SCHEDULER_DISPATCHER_ENABLED="false")
    await api_only.create_function()
    execution_id = await api_only.submit(api_only.admin, {})
    store = PostgresExecutionStore(db, hot_pool)

    async def publish(executions: Sequence[DueExecution]) -> None:
        return None

    await store.dispatch_due(limit=10, publish=publish)
    swept_at = await dispatched_at(db, execution_id)
    await store.mark_dispatched([execution_id], datetime.now(UTC) + timedelta(hours=1))
    assert await dispatched_at(db, execution_id) == swept_at

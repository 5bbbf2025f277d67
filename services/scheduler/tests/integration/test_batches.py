"""Batches over real gRPC, PostgreSQL and NATS: all-or-nothing submit, aggregates counted from
the children, ordered drill-in, the terminal derivation on every path that ends a child, and
exactly one summary event and callback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import CallbackUrlRejected, NotFound, PayloadTooLarge, SchemaViolation
from sinas_common.eventstream import (
    BATCH_TERMINATED,
    BatchTerminated,
    ensure_event_stream,
    event_stream_names,
)
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import CallbackPolicySettings, NatsSettings
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.testing import RunningScheduler, bearer

DEADLINE_SECONDS = 30.0
HOOK = "https://hooks.example/batch"
PUBLIC = "93.184.215.14"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}

StartScheduler = Callable[..., Awaitable[RunningScheduler]]


class FixedResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        if host != "hooks.example":
            raise OSError(f"no such host {host}")
        return [PUBLIC]


@pytest.fixture
async def scheduler(start_scheduler: StartScheduler) -> RunningScheduler:
    started = await start_scheduler(
        resolver=FixedResolver(),
        callbacks=CallbackPolicySettings(CALLBACK_URL_HOSTS="hooks.example"),  # type: ignore[call-arg]
        MAX_BATCH_SIZE=50,
    )
    await started.create_function(input_schema=SCHEMA)
    return started


@pytest.fixture
async def jetstream(nats_settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    client = await connect_nats(nats_settings, name="test-scheduler")
    js = client.jetstream()
    await ensure_event_stream(js, nats_settings)
    yield js
    await client.close()


async def submit(
    scheduler: RunningScheduler,
    inputs: list[Any],
    metadata: list[tuple[str, str]] | None = None,
    **fields: Any,
) -> pb.SubmitBatchResponse:
    response: pb.SubmitBatchResponse = await invoke(
        scheduler.batches.SubmitBatch,
        pb.SubmitBatchRequest(
            namespace="tests",
            name="echo",
            inputs_json=[dump_json(value) for value in inputs],
            **fields,
        ),
        metadata=metadata or scheduler.admin,
    )
    return response


async def get_batch(
    scheduler: RunningScheduler, batch_id: str, metadata: list[tuple[str, str]] | None = None
) -> pb.Batch:
    response = await invoke(
        scheduler.batches.GetBatch,
        pb.GetBatchRequest(batch_id=batch_id),
        metadata=metadata or scheduler.admin,
    )
    batch: pb.Batch = response.batch
    return batch


async def drill(
    scheduler: RunningScheduler, batch_id: str, **fields: Any
) -> pb.ListBatchExecutionsResponse:
    response: pb.ListBatchExecutionsResponse = await invoke(
        scheduler.batches.ListBatchExecutions,
        pb.ListBatchExecutionsRequest(batch_id=batch_id, **fields),
        metadata=scheduler.admin,
    )
    return response


async def claim(scheduler: RunningScheduler, *ids: str) -> list[str]:
    response = await invoke(
        scheduler.worker.ClaimExecutions,
        pb.ClaimExecutionsRequest(
            worker_id="w1",
            items=[pb.ClaimRequestItem(execution_id=i, delivery_attempt=1) for i in ids],
        ),
    )
    return [c.execution_id for c in response.claimed]


async def complete(
    scheduler: RunningScheduler, ids: list[str], status: pb.ExecutionStatus.ValueType
) -> None:
    await invoke(
        scheduler.worker.CompleteExecutions,
        pb.CompleteExecutionsRequest(
            worker_id="w1",
            outcomes=[
                pb.ExecutionOutcome(
                    execution_id=i, attempt=1, status=status, output_json=dump_json({})
                )
                for i in ids
            ],
        ),
    )


async def batch_events(js: JetStreamContext, settings: NatsSettings) -> list[str]:
    names = event_stream_names(settings)
    info = await js.stream_info(names.stream)
    if info.state.messages == 0:
        return []
    messages = [
        await js.get_msg(names.stream, seq)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    return [
        BatchTerminated.decode(m.data).batch_id
        for m in messages
        if m.subject == names.subject(BATCH_TERMINATED)
    ]


async def eventually(probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await probe():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def count(db: AsyncEngine, sql: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(sa.text(sql))).scalar_one())


# --- submit ---------------------------------------------------------------------------------


async def test_submit_stores_the_batch_and_ordered_children(scheduler: RunningScheduler) -> None:
    submitted = await submit(scheduler, [{"n": i} for i in range(5)], trigger_id_prefix="job")
    assert submitted.total == 5
    assert len(set(submitted.execution_ids)) == 5

    batch = await get_batch(scheduler, submitted.batch_id)
    assert (batch.total, batch.queued, batch.running, batch.status) == (5, 5, 0, "queued")
    assert (batch.namespace, batch.name, batch.kind) == ("tests", "echo", "function")
    assert batch.trigger_id_prefix == "job"
    assert not batch.HasField("finished_at")

    page = await drill(scheduler, submitted.batch_id, limit=2, offset=1)
    assert page.total == 5
    assert page.next_offset == 3
    assert [e.execution_id for e in page.executions] == list(submitted.execution_ids[1:3])
    assert [(e.batch_index, e.trigger_id) for e in page.executions] == [(1, "job:1"), (2, "job:2")]
    assert [load_json(e.input_json) for e in page.executions] == [{"n": 1}, {"n": 2}]
    last = await drill(scheduler, submitted.batch_id, limit=10, offset=3)
    assert not last.HasField("next_offset")
    assert len(last.executions) == 2

    plain = await submit(scheduler, [{"n": 1}])
    first = (await drill(scheduler, plain.batch_id)).executions[0]
    assert first.trigger_id == "batch:0"


async def test_one_bad_item_rejects_the_whole_batch(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    with pytest.raises(SchemaViolation) as caught:
        await submit(scheduler, [{"n": 1}, {"n": "two"}, {"m": 3}])
    fields = [v.field for v in caught.value.violations]
    assert "inputs[1].n" in fields
    assert any(field.startswith("inputs[2]") for field in fields)
    assert not any(field.startswith("inputs[0]") for field in fields)
    assert await count(db, "SELECT count(*) FROM executions") == 0
    assert await count(db, "SELECT count(*) FROM batches") == 0


async def test_size_limits(scheduler: RunningScheduler, db: AsyncEngine) -> None:
    with pytest.raises(PayloadTooLarge, match="batch size 51 exceeds MAX_BATCH_SIZE=50"):
        await submit(scheduler, [{"n": i} for i in range(51)])
    with pytest.raises(SchemaViolation, match="at least one"):
        await submit(scheduler, [])
    assert await count(db, "SELECT count(*) FROM batches") == 0
    assert (await submit(scheduler, [{"n": i} for i in range(50)])).total == 50


async def test_callback_urls_are_checked(scheduler: RunningScheduler, db: AsyncEngine) -> None:
    with pytest.raises(CallbackUrlRejected, match=r"elsewhere\.example"):
        await submit(scheduler, [{"n": 1}], batch_callback_url="https://elsewhere.example/x")
    with pytest.raises(CallbackUrlRejected):
        await submit(scheduler, [{"n": 1}], callback_url="http://hooks.example/x")
    assert await count(db, "SELECT count(*) FROM batches") == 0


async def test_another_users_batch_is_not_found(scheduler: RunningScheduler) -> None:
    _, alice = await scheduler.create_user(["Users"])
    _, bob = await scheduler.create_user(["Users"])
    alices = await submit(scheduler, [{"n": 1}], metadata=bearer(alice))
    bobs = await submit(scheduler, [{"n": 2}], metadata=bearer(bob))

    with pytest.raises(NotFound, match="Batch not found"):
        await get_batch(scheduler, alices.batch_id, bearer(bob))
    with pytest.raises(NotFound):
        await invoke(
            scheduler.batches.ListBatchExecutions,
            pb.ListBatchExecutionsRequest(batch_id=alices.batch_id),
            metadata=bearer(bob),
        )
    assert (await get_batch(scheduler, alices.batch_id)).batch_id == alices.batch_id

    async def listed(metadata: list[tuple[str, str]]) -> list[str]:
        response = await invoke(
            scheduler.batches.ListBatches, pb.ListBatchesRequest(), metadata=metadata
        )
        return [b.batch_id for b in response.batches]

    assert await listed(bearer(bob)) == [bobs.batch_id]
    assert await listed(scheduler.admin) == [bobs.batch_id, alices.batch_id], "newest first"


# --- terminal derivation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([pb.EXECUTION_STATUS_COMPLETED] * 3, "completed"),
        ([pb.EXECUTION_STATUS_FAILED] * 3, "failed"),
        ([pb.EXECUTION_STATUS_COMPLETED, pb.EXECUTION_STATUS_FAILED] * 2, "partial"),
    ],
)
async def test_the_last_child_ends_the_batch(
    scheduler: RunningScheduler, outcomes: list[pb.ExecutionStatus.ValueType], status: str
) -> None:
    submitted = await submit(scheduler, [{"n": i} for i in range(len(outcomes))])
    ids = list(submitted.execution_ids)
    assert sorted(await claim(scheduler, *ids)) == sorted(ids)
    running = await get_batch(scheduler, submitted.batch_id)
    assert (running.running, running.queued, running.status) == (len(ids), 0, "running")
    assert running.HasField("started_at")

    for execution_id, outcome in list(zip(ids, outcomes, strict=True))[:-1]:
        await complete(scheduler, [execution_id], outcome)
    assert not (await get_batch(scheduler, submitted.batch_id)).HasField("finished_at")
    await complete(scheduler, [ids[-1]], outcomes[-1])

    ended = await get_batch(scheduler, submitted.batch_id)
    assert ended.status == status
    assert ended.HasField("finished_at")
    assert ended.completed == outcomes.count(pb.EXECUTION_STATUS_COMPLETED)
    assert ended.failed == outcomes.count(pb.EXECUTION_STATUS_FAILED)
    assert (ended.running, ended.queued) == (0, 0)


async def test_the_reaper_ends_the_batch(start_scheduler: StartScheduler) -> None:
    scheduler = await start_scheduler(
        EXECUTION_LEASE_SECONDS=0.2,
        EXECUTION_MAX_ATTEMPTS=1,
        SCHEDULER_REAPER_INTERVAL_SECONDS=0.1,
    )
    await scheduler.create_function()
    submitted = await submit(scheduler, [{}, {}])
    await claim(scheduler, *submitted.execution_ids)
    await complete(scheduler, [submitted.execution_ids[0]], pb.EXECUTION_STATUS_COMPLETED)

    async def ended() -> bool:
        return (await get_batch(scheduler, submitted.batch_id)).status == "partial"

    await eventually(ended)


# --- the summary callback -------------------------------------------------------------------


async def test_one_summary_event_and_callback(
    scheduler: RunningScheduler, jetstream: JetStreamContext, nats_settings: NatsSettings
) -> None:
    submitted = await submit(
        scheduler, [{"n": 1}, {"n": 2}], batch_callback_url=HOOK, trigger_id_prefix="p"
    )
    silent = await submit(scheduler, [{"n": 3}])
    ids = [*submitted.execution_ids, *silent.execution_ids]
    await claim(scheduler, *ids)
    await complete(scheduler, ids[:1], pb.EXECUTION_STATUS_COMPLETED)
    await complete(scheduler, ids[1:], pb.EXECUTION_STATUS_FAILED)

    async def published() -> bool:
        return await batch_events(jetstream, nats_settings) == [submitted.batch_id]

    await eventually(published)
    assert (await get_batch(scheduler, submitted.batch_id)).batch_callback_status == "pending"

    claimed = await invoke(
        scheduler.notifier.ClaimCallbacks,
        pb.ClaimCallbacksRequest(notifier_id="n1", batch_ids=[submitted.batch_id, silent.batch_id]),
    )
    assert list(claimed.skipped_batch_ids) == [silent.batch_id]
    (delivery,) = claimed.deliveries
    assert (delivery.batch_id, delivery.execution_id, delivery.callback_url) == (
        submitted.batch_id,
        "",
        HOOK,
    )
    payload = load_json(delivery.payload_json)
    assert payload["batch_id"] == submitted.batch_id
    assert payload["target"] == {"namespace": "tests", "name": "echo"}
    assert (payload["status"], payload["total"], payload["completed"]) == ("partial", 2, 1)
    assert (payload["failed"], payload["cancelled"]) == (1, 0)
    assert payload["trigger_id_prefix"] == "p"
    assert payload["kind"] == "function"
    assert payload["finished_at"] is not None

    again = await invoke(
        scheduler.notifier.ClaimCallbacks,
        pb.ClaimCallbacksRequest(notifier_id="n2", batch_ids=[submitted.batch_id]),
    )
    assert (list(again.deliveries), list(again.skipped_batch_ids)) == ([], [submitted.batch_id])

    recorded = await invoke(
        scheduler.notifier.RecordCallbackOutcomes,
        pb.RecordCallbackOutcomesRequest(
            outcomes=[pb.CallbackOutcome(batch_id=submitted.batch_id, sent=True, response_code=204)]
        ),
    )
    assert list(recorded.applied_batch_ids) == [submitted.batch_id]
    assert list(recorded.applied_execution_ids) == []
    batch = await get_batch(scheduler, submitted.batch_id)
    assert (batch.batch_callback_status, batch.batch_callback_response_code) == ("sent", 204)
    assert batch.HasField("batch_callback_attempted_at")


async def test_concurrent_last_children_end_the_batch_once(
    scheduler: RunningScheduler,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    batch_ids = []
    for _ in range(20):
        submitted = await submit(scheduler, [{"n": 1}, {"n": 2}], batch_callback_url=HOOK)
        first, second = submitted.execution_ids
        await claim(scheduler, first, second)
        # Two executors report the two last children at the same moment.
        await asyncio.gather(
            complete(scheduler, [first], pb.EXECUTION_STATUS_COMPLETED),
            complete(scheduler, [second], pb.EXECUTION_STATUS_COMPLETED),
        )
        batch_ids.append(submitted.batch_id)

    for batch_id in batch_ids:
        assert (await get_batch(scheduler, batch_id)).status == "completed"

    async def all_published() -> bool:
        return sorted(await batch_events(jetstream, nats_settings)) == sorted(batch_ids)

    await eventually(all_published)
    assert await count(db, "SELECT count(*) FROM batches WHERE finished_at IS NULL") == 0


async def test_inputs_are_stored_as_sent_and_unfit_json_is_refused_by_index(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    sent = [b'{ "n" : 12345678901234567890123, "s": "h\\u00e9 \xe2\x9c\x93" }', b'{"n":1.0e2}']
    response: pb.SubmitBatchResponse = await invoke(
        scheduler.batches.SubmitBatch,
        pb.SubmitBatchRequest(namespace="tests", name="echo", inputs_json=[sent[0], b'{"n":1}']),
        metadata=scheduler.admin,
    )
    async with db.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT input::text FROM executions WHERE id = :id"),
                {"id": response.execution_ids[0]},
            )
        ).scalar_one()
    assert stored.encode() == sent[0]
    assert load_json(stored.encode()) == {"n": 12345678901234567890123, "s": "hé ✓"}
    for unfit in (b'{"n": NaN}', b'{"n": -Infinity}', '{"n": 1}'.encode("utf-16")):
        with pytest.raises(SchemaViolation) as refused:
            await invoke(
                scheduler.batches.SubmitBatch,
                pb.SubmitBatchRequest(namespace="tests", name="echo", inputs_json=[sent[1], unfit]),
                metadata=scheduler.admin,
            )
        assert [v.field for v in refused.value.violations] == ["inputs[1]"]


async def test_one_outcome_list_ends_lone_executions_and_a_batch_together(
    scheduler: RunningScheduler,
) -> None:
    # Lone rows and batch children take different statements; one list mixes them, and an
    # outcome for a row already ended changes nothing.
    submitted = await submit(scheduler, [{"n": 1}, {"n": 2}])
    children = list(submitted.execution_ids)
    lone = [await scheduler.submit(scheduler.admin, {"n": n}) for n in (3, 4)]
    assert sorted(await claim(scheduler, *children, *lone)) == sorted(children + lone)
    await complete(scheduler, [lone[1]], pb.EXECUTION_STATUS_FAILED)

    await complete(
        scheduler, [lone[0], children[0], lone[1], children[1]], pb.EXECUTION_STATUS_COMPLETED
    )

    ended = await get_batch(scheduler, submitted.batch_id)
    assert (ended.status, ended.completed) == ("completed", 2)
    assert ended.HasField("finished_at")
    statuses = [(await scheduler.get(scheduler.admin, i)).status for i in lone]
    assert statuses == [pb.EXECUTION_STATUS_COMPLETED, pb.EXECUTION_STATUS_FAILED]

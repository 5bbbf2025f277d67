"""The batch use cases over recording fakes: check order, every item validated, all or
nothing, limits, trigger ids, and visibility."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from sinas_common.callback_policy import CallbackPolicy
from sinas_common.errors import (
    CallbackUrlRejected,
    FunctionNotFound,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SchemaViolation,
)
from sinas_scheduler.batches import BatchLimits, BatchUseCases, SubmitBatchRequest
from sinas_scheduler.callback_urls import PolicyCallbackUrlCheck
from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.models import (
    Batch,
    BatchCounts,
    BatchPage,
    BatchQuery,
    BatchStatus,
    ExecutionStatus,
    Function,
    FunctionSpec,
    NewBatch,
    Principal,
    User,
    batch_trigger_id,
)
from sinas_scheduler.registry import FunctionLimits, FunctionUseCases

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXECUTE = "sinas.functions/ns/fn.execute:own"
READ_ALL = "sinas.executions.read:all"

FUNCTION = Function(
    id="f1",
    namespace="ns",
    name="fn",
    owner_user_id="admin",
    spec=FunctionSpec(
        description="",
        code="def handler(i, c):\n    return i\n",
        input_schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
        output_schema={},
        timeout_seconds=10,
        requires_approval=False,
    ),
    version=3,
    created_at=NOW,
    updated_at=NOW,
)


class InMemoryFunctionStore:
    async def get_function(self, namespace: str, name: str) -> Function | None:
        return FUNCTION if (namespace, name) == ("ns", "fn") else None


class RecordingBatchStore:
    def __init__(self) -> None:
        self.inserted: list[NewBatch] = []
        self.queries: list[BatchQuery] = []

    async def insert_batch(
        self, new: NewBatch, *, idempotency: IdempotencyReservation | None = None
    ) -> StoredResponse | None:
        self.inserted.append(new)
        return None

    async def get_batch(self, batch_id: str) -> Batch | None:
        for new in self.inserted:
            if new.id == batch_id:
                return _stored(new)
        return None

    async def list_batches(self, query: BatchQuery) -> list[Batch]:
        self.queries.append(query)
        return [_stored(new) for new in self.inserted]

    async def list_batch_executions(
        self, batch_id: str, *, status: ExecutionStatus | None, limit: int, offset: int
    ) -> BatchPage:
        return BatchPage(executions=(), total=0, next_offset=None)


def _stored(new: NewBatch) -> Batch:
    return Batch(
        id=new.id,
        user_id=new.user_id,
        kind=new.kind,
        namespace=new.namespace,
        name=new.name,
        total=len(new.execution_ids),
        counts=BatchCounts(queued=len(new.execution_ids)),
        final_status=None,
        trigger_id_prefix=new.trigger_id_prefix,
        callback_url=new.callback_url,
        batch_callback_url=new.batch_callback_url,
        batch_callback_status=None,
        batch_callback_response_code=None,
        batch_callback_error=None,
        batch_callback_attempted_at=None,
        created_at=NOW,
        started_at=None,
        finished_at=None,
        cancelled_at=None,
    )


class NoIdempotencyKeys:
    """No key was ever used: these tests submit without one."""

    async def find_response(
        self, *, user_id: str, key: str, ttl_seconds: int
    ) -> StoredResponse | None:
        return None


class FixedResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        return ["93.184.215.14"]


def principal(*permissions: str, user_id: str = "u1") -> Principal:
    user = User(id=user_id, email=f"{user_id}@example.com", roles=(), created_at=NOW)
    return Principal(user=user, permissions=frozenset(permissions))


@pytest.fixture
def store() -> RecordingBatchStore:
    return RecordingBatchStore()


@pytest.fixture
def batches(store: RecordingBatchStore) -> BatchUseCases:
    return BatchUseCases(
        batches=store,
        functions=FunctionUseCases(
            InMemoryFunctionStore(),  # type: ignore[arg-type]
            FunctionLimits(default_timeout_seconds=300, max_timeout_seconds=86400),
        ),
        limits=BatchLimits(max_batch_size=10, max_depth=4),
        callback_urls=PolicyCallbackUrlCheck(
            CallbackPolicy(hosts=["hooks.example"]), FixedResolver()
        ),
        idempotency=NoIdempotencyKeys(),
    )


def request(inputs: Sequence[Any], **fields: Any) -> SubmitBatchRequest:
    return SubmitBatchRequest(namespace="ns", name="fn", inputs=inputs, **fields)


async def test_submit_stores_one_batch_with_ordered_children(
    batches: BatchUseCases, store: RecordingBatchStore
) -> None:
    submitted = await batches.submit(
        principal(EXECUTE),
        request(
            [{"n": 1}, {"n": 2}, {"n": 3}],
            trigger_id_prefix="job",
            delay_seconds=5,
            callback_url="https://hooks.example/child",
            batch_callback_url="https://hooks.example/batch",
        ),
    )
    (stored,) = store.inserted
    assert submitted.batch_id == stored.id
    assert submitted.execution_ids == stored.execution_ids
    assert len(set(stored.execution_ids)) == 3
    assert stored.inputs_json == ('{"n":1}', '{"n":2}', '{"n":3}')
    assert (stored.function_id, stored.function_version) == ("f1", 3)
    assert (stored.trigger_id_prefix, stored.delay_seconds) == ("job", 5)
    assert stored.callback_url == "https://hooks.example/child"
    assert stored.batch_callback_url == "https://hooks.example/batch"


def test_trigger_ids() -> None:
    assert batch_trigger_id("job", 7) == "job:7"
    assert batch_trigger_id(None, 0) == "batch:0"


async def test_every_bad_item_is_reported_and_nothing_stored(
    batches: BatchUseCases, store: RecordingBatchStore
) -> None:
    with pytest.raises(SchemaViolation) as caught:
        await batches.submit(principal(EXECUTE), request([{"n": 1}, {"n": "x"}, [], {"n": 4}]))
    fields = [v.field for v in caught.value.violations]
    assert fields == ["inputs[1].n", "inputs[2]"]
    assert store.inserted == []


async def test_limits(batches: BatchUseCases, store: RecordingBatchStore) -> None:
    with pytest.raises(PayloadTooLarge, match="batch size 11 exceeds MAX_BATCH_SIZE=10"):
        await batches.submit(principal(EXECUTE), request([{"n": 1}] * 11))
    with pytest.raises(SchemaViolation, match="at least one"):
        await batches.submit(principal(EXECUTE), request([]))
    with pytest.raises(InvalidArgument, match="trigger_id"):
        await batches.submit(principal(EXECUTE), request([{"n": 1}], trigger_id_prefix="p" * 254))
    assert store.inserted == []


async def test_check_order(batches: BatchUseCases, store: RecordingBatchStore) -> None:
    with pytest.raises(FunctionNotFound):
        await batches.submit(
            principal(EXECUTE), SubmitBatchRequest(namespace="ns", name="x", inputs=[])
        )
    with pytest.raises(PermissionDenied):
        await batches.submit(principal(), request([]))
    with pytest.raises(CallbackUrlRejected):
        await batches.submit(
            principal(EXECUTE), request([{"n": "bad"}], batch_callback_url="https://other.example/")
        )
    assert store.inserted == []


async def test_visibility(batches: BatchUseCases, store: RecordingBatchStore) -> None:
    submitted = await batches.submit(principal(EXECUTE, user_id="alice"), request([{"n": 1}]))
    with pytest.raises(NotFound, match="Batch not found"):
        await batches.get(principal(user_id="bob"), submitted.batch_id)
    with pytest.raises(NotFound):
        await batches.list_executions(
            principal(user_id="bob"), submitted.batch_id, status=None, limit=10, offset=0
        )
    found = await batches.get(principal(READ_ALL, user_id="bob"), submitted.batch_id)
    assert (found.id, found.status) == (submitted.batch_id, BatchStatus.QUEUED)

    await batches.list(principal(user_id="bob"), limit=5, offset=0)
    await batches.list(principal(READ_ALL, user_id="bob"), limit=5, offset=0)
    assert [q.user_id for q in store.queries] == ["bob", None]
    with pytest.raises(InvalidArgument):
        await batches.list(principal(), limit=0, offset=0)


@pytest.mark.parametrize(
    ("counts", "final", "status"),
    [
        (BatchCounts(queued=2), None, BatchStatus.QUEUED),
        (BatchCounts(queued=1, running=1), None, BatchStatus.RUNNING),
        (BatchCounts(queued=1, completed=1), None, BatchStatus.RUNNING),
        (BatchCounts(completed=1, failed=1), BatchStatus.PARTIAL, BatchStatus.PARTIAL),
    ],
)
def test_reported_status(
    counts: BatchCounts, final: BatchStatus | None, status: BatchStatus
) -> None:
    batch = _stored(
        NewBatch(
            id="b",
            user_id="u",
            kind="function",
            namespace="ns",
            name="fn",
            function_id="f1",
            function_version=1,
            trigger_id_prefix=None,
            delay_seconds=0,
            depth=0,
            parent_execution_id=None,
            callback_url=None,
            batch_callback_url=None,
            execution_ids=("a", "b"),
            inputs_json=("{}", "{}"),
        )
    )
    assert replace(batch, counts=counts, final_status=final).status is status

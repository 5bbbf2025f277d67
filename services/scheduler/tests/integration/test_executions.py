"""Submitting and reading executions over gRPC: check order, validation, exact JSON, visibility."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import (
    CallbackUrlRejected,
    ExecutionDepthExceeded,
    ExecutionNotFound,
    FunctionNotFound,
    InvalidArgument,
    PayloadTooLarge,
    PermissionDenied,
    SchemaViolation,
    Unauthenticated,
    from_status_bytes,
)
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json
from sinas_common.timeconv import utcnow
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.testing import RunningScheduler, bearer

ITEMS_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            },
        },
        "count": {"type": "integer"},
    },
    "required": ["items"],
}


async def count_executions(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM executions"))).scalar_one())


async def test_submit_stores_a_pending_row(scheduler: RunningScheduler, db: AsyncEngine) -> None:
    function = await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {"a": 1})
    execution = await scheduler.get(scheduler.admin, execution_id)
    assert execution.status == pb.EXECUTION_STATUS_PENDING
    assert (execution.kind, execution.trigger_type, execution.trigger_id) == (
        "function",
        "API",
        "runtime-api",
    )
    assert (execution.namespace, execution.function_name) == ("tests", "echo")
    assert execution.function_version == function.version and execution.depth == 0
    assert execution.HasField("created_at") and not execution.HasField("started_at")
    assert not execution.HasField("duration_ms") and execution.output_json == b""


async def test_json_survives_exactly(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    value: dict[str, Any] = {
        "big": 2**60,
        "bigger": 2**70 + 1,
        "float": 0.1,
        "tiny": 1e-300,
        "text": "héllo ✓ 你好 \U0001f600",
        "nested": [{"x": -(2**63)}, None, True],
    }
    execution_id = await scheduler.submit(scheduler.admin, value)
    stored = json.loads((await scheduler.get(scheduler.admin, execution_id)).input_json)
    assert stored == value
    assert type(stored["float"]) is float and stored["big"] == 1152921504606846976


async def test_check_order_and_nothing_stored_on_failure(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function(input_schema=ITEMS_SCHEMA)
    _, guest = await scheduler.create_user(["GuestUsers"])
    admin = scheduler.admin

    with pytest.raises(FunctionNotFound):
        await scheduler.submit(bearer(guest), {}, name="missing")
    with pytest.raises(PermissionDenied, match="Not authorized to execute this function"):
        await scheduler.submit(bearer(guest), {"items": []}, callback_url="https://x.example")
    with pytest.raises(CallbackUrlRejected, match="callbacks are not enabled on this instance"):
        await scheduler.submit(admin, {"bad": 1}, callback_url="https://x.example")
    with pytest.raises(InvalidArgument, match="trigger_id") as caught:
        await scheduler.submit(admin, {"items": []}, trigger_id="t" * 256)
    assert [v.field for v in caught.value.violations] == ["trigger_id"]
    for delay in (-1, 31_536_001):
        with pytest.raises(InvalidArgument) as caught:
            await scheduler.submit(admin, {"items": []}, delay_seconds=delay)
        assert [v.field for v in caught.value.violations] == ["delay_seconds"]

    with pytest.raises(SchemaViolation) as caught:
        await scheduler.submit(admin, {"items": [{"name": "a"}, {"name": 2}, {}], "count": "three"})
    assert sorted(v.field for v in caught.value.violations) == [
        "input.count",
        "input.items[1].name",
        "input.items[2].name",
    ]
    with pytest.raises(SchemaViolation) as caught:
        await scheduler.submit(admin, [1, 2])
    assert [v.field for v in caught.value.violations] == ["input"]
    with pytest.raises(SchemaViolation):
        await invoke(
            scheduler.executions.SubmitExecution,
            pb.SubmitExecutionRequest(namespace="tests", name="echo", input_json=b"{nope"),
            metadata=admin,
        )
    assert await count_executions(db) == 0

    # The largest allowed values are accepted.
    await scheduler.submit(admin, {"items": []}, trigger_id="t" * 255, delay_seconds=31_536_000)
    assert await count_executions(db) == 1


async def test_depth_comes_from_the_execution_token(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    user, key = await scheduler.create_user(["Users"])
    parent = await scheduler.submit(bearer(key), {})
    tokens = scheduler.app.tokens

    def token(depth: int) -> list[tuple[str, str]]:
        return bearer(
            tokens.mint(
                user_id=user.id,
                email=user.email,
                now=utcnow(),
                lifetime=timedelta(minutes=5),
                execution_id=parent,
                execution_depth=depth,
            )
        )

    child = await scheduler.submit(token(3), {})
    execution = await scheduler.get(bearer(key), child)
    assert execution.depth == 4 and execution.user_id == user.id
    async with db.connect() as conn:
        recorded = (
            await conn.execute(
                sa.text("SELECT parent_execution_id FROM executions WHERE id = :id"),
                {"id": child},
            )
        ).scalar_one()
    assert recorded == parent
    with pytest.raises(ExecutionDepthExceeded, match=r"\(4\)"):
        await scheduler.submit(token(4), {})


async def test_depth_check_can_be_disabled(
    start_scheduler: Any,
) -> None:
    scheduler: RunningScheduler = await start_scheduler(MAX_EXECUTION_DEPTH=0)
    await scheduler.create_function()
    admin_user = (
        await invoke(scheduler.identity.GetMe, pb.GetMeRequest(), metadata=scheduler.admin)
    ).user
    deep = scheduler.app.tokens.mint(
        user_id=admin_user.id,
        email=admin_user.email,
        now=utcnow(),
        lifetime=timedelta(minutes=5),
        execution_depth=50,
    )
    execution_id = await scheduler.submit(bearer(deep), {})
    assert (await scheduler.get(scheduler.admin, execution_id)).depth == 51


async def test_visibility_is_own_unless_read_all(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    _, alice = await scheduler.create_user(["Users"])
    _, bob = await scheduler.create_user(["Users"])
    alices = await scheduler.submit(bearer(alice), {"who": "alice"})
    bobs = await scheduler.submit(bearer(bob), {"who": "bob"})

    with pytest.raises(ExecutionNotFound):
        await scheduler.get(bearer(bob), alices)
    for malformed in ("not-a-uuid", "x" * 500, ""):
        with pytest.raises(ExecutionNotFound):
            await scheduler.get(bearer(bob), malformed)
    assert (await scheduler.get(bearer(alice), alices)).execution_id == alices
    assert (await scheduler.get(scheduler.admin, alices)).execution_id == alices

    async def listed(metadata: list[tuple[str, str]], **filters: Any) -> list[str]:
        response = await invoke(
            scheduler.executions.ListExecutions,
            pb.ListExecutionsRequest(**filters),
            metadata=metadata,
        )
        return [e.execution_id for e in response.executions]

    assert await listed(bearer(bob)) == [bobs]
    assert await listed(scheduler.admin) == [bobs, alices], "newest first"
    with pytest.raises(ExecutionNotFound):
        await invoke(
            scheduler.executions.WaitExecution,
            pb.WaitExecutionRequest(execution_id=alices, timeout_seconds=0.1),
            metadata=bearer(bob),
        )


async def test_list_filters_and_paging(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    await scheduler.create_function(name="other")
    admin = scheduler.admin
    ids = [await scheduler.submit(admin, {"i": i}, trigger_id=f"t{i % 2}") for i in range(5)]
    other = await scheduler.submit(admin, {}, name="other")

    async def listed(**filters: Any) -> list[str]:
        response = await invoke(
            scheduler.executions.ListExecutions,
            pb.ListExecutionsRequest(**filters),
            metadata=admin,
        )
        return [e.execution_id for e in response.executions]

    newest_first = [other, *reversed(ids)]
    assert await listed() == newest_first
    assert await listed(limit=2) == newest_first[:2]
    assert await listed(limit=2, offset=2) == newest_first[2:4]
    assert await listed(function_name="other") == [other]
    assert await listed(trigger_id="t1") == [ids[3], ids[1]]
    assert await listed(status=pb.EXECUTION_STATUS_PENDING) == newest_first
    assert await listed(status=pb.EXECUTION_STATUS_COMPLETED) == []
    assert await listed(batch_id="none") == []
    for bad in ({"limit": 1001}, {"limit": -1}, {"offset": -1}):
        with pytest.raises(InvalidArgument):
            await listed(**bad)


def one_submit(value: Any, **fields: Any) -> pb.SubmitExecutionRequest:
    fields.setdefault("namespace", "tests")
    fields.setdefault("name", "echo")
    return pb.SubmitExecutionRequest(input_json=json.dumps(value).encode(), **fields)


async def test_submit_executions_answers_each_on_its_own_in_order(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function(input_schema=ITEMS_SCHEMA)
    requests = [
        one_submit({"items": [{"name": "a"}]}),
        one_submit({"items": [{}]}),
        pb.SubmitExecutionRequest(namespace="tests", name="echo", input_json=b"{nope"),
        one_submit({"items": []}, name="missing"),
        one_submit({"items": []}, callback_url="ftp://hooks.example/x"),
        one_submit({"items": []}, delay_seconds=60, idempotency_key="k-1"),
        one_submit({"items": []}, delay_seconds=60, idempotency_key="k-1"),
    ]
    response = await invoke(
        scheduler.executions.SubmitExecutions,
        pb.SubmitExecutionsRequest(requests=requests),
        metadata=scheduler.admin,
    )
    first, bad_input, bad_json, missing, bad_url, keyed, replayed = response.results
    assert [r.WhichOneof("outcome") for r in response.results] == [
        "execution_id", "error_status", "error_status", "error_status", "error_status",
        "execution_id", "execution_id",
    ]  # fmt: skip
    schema_error = from_status_bytes(bad_input.error_status)
    assert isinstance(schema_error, SchemaViolation)
    assert [v.field for v in schema_error.violations] == ["input.items[0].name"]
    json_error = from_status_bytes(bad_json.error_status)
    assert isinstance(json_error, SchemaViolation)
    assert [v.field for v in json_error.violations] == ["input"]
    assert isinstance(from_status_bytes(missing.error_status), FunctionNotFound)
    assert isinstance(from_status_bytes(bad_url.error_status), CallbackUrlRejected)
    assert keyed.execution_id == replayed.execution_id
    stored = await scheduler.get(scheduler.admin, first.execution_id)
    assert json.loads(stored.input_json) == {"items": [{"name": "a"}]}
    assert stored.status == pb.EXECUTION_STATUS_PENDING
    assert await count_executions(db) == 2


async def test_submit_executions_fails_whole_for_the_caller_or_the_size(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    with pytest.raises(Unauthenticated):
        await invoke(
            scheduler.executions.SubmitExecutions,
            pb.SubmitExecutionsRequest(requests=[one_submit({})]),
            metadata=bearer("sk-not-a-key"),
        )
    with pytest.raises(PayloadTooLarge) as too_many:
        await invoke(
            scheduler.executions.SubmitExecutions,
            pb.SubmitExecutionsRequest(requests=[one_submit({})] * 1001),
            metadata=scheduler.admin,
        )
    assert [v.field for v in too_many.value.violations] == ["requests"]
    assert await count_executions(db) == 0


async def test_a_submit_after_its_function_changed_or_went_is_checked_against_what_is_live(
    scheduler: RunningScheduler,
) -> None:
    # Submits go by the function as last read and store only while that is the live
    # version: a change (here made by this replica, as another one's would be) is seen.
    await scheduler.create_function(input_schema={"type": "object", "required": ["n"]})
    first = await scheduler.submit(scheduler.admin, {"n": 1})
    again = await scheduler.submit(scheduler.admin, {"n": 2})
    await invoke(
        scheduler.functions.UpdateFunction,
        pb.UpdateFunctionRequest(
            namespace="tests",
            name="echo",
            input_schema_json=dump_json({"type": "object", "required": ["m"]}),
        ),
        metadata=scheduler.admin,
    )
    with pytest.raises(SchemaViolation):
        await scheduler.submit(scheduler.admin, {"n": 3})
    changed = await scheduler.submit(scheduler.admin, {"m": 4})
    versions = [
        (await scheduler.get(scheduler.admin, i)).function_version for i in (first, again, changed)
    ]
    assert versions == [versions[0], versions[0], versions[0] + 1]

    await invoke(
        scheduler.functions.DeleteFunction,
        pb.DeleteFunctionRequest(namespace="tests", name="echo"),
        metadata=scheduler.admin,
    )
    with pytest.raises(FunctionNotFound):
        await scheduler.submit(scheduler.admin, {"m": 5})

"""The function registry over gRPC: admin-only changes, validation, versions, soft delete."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import (
    AlreadyExists,
    FunctionNotFound,
    PermissionDenied,
    SchemaViolation,
)
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.testing import RunningScheduler, bearer

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


async def test_create_get_update_delete_with_versions(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    created = await scheduler.create_function(input_schema=SCHEMA, timeout_seconds=30)
    assert (created.version, created.timeout_seconds) == (1, 30)
    assert json.loads(created.input_schema_json) == SCHEMA

    updated = (
        await invoke(
            scheduler.functions.UpdateFunction,
            pb.UpdateFunctionRequest(
                namespace="tests", name="echo", code="async def handler(i, c):\n    return 1\n"
            ),
            metadata=scheduler.admin,
        )
    ).function
    assert updated.version == 2
    assert updated.timeout_seconds == 30, "unset fields keep their value"
    assert json.loads(updated.input_schema_json) == SCHEMA

    got = (
        await invoke(
            scheduler.functions.GetFunction,
            pb.GetFunctionRequest(namespace="tests", name="echo"),
            metadata=scheduler.admin,
        )
    ).function
    assert got.version == 2 and got.code.startswith("async def handler")
    async with db.connect() as conn:
        versions = (
            await conn.execute(
                sa.text("SELECT version, code FROM function_versions ORDER BY version")
            )
        ).all()
    assert [v for v, _ in versions] == [1, 2]
    assert versions[0][1] != versions[1][1]

    await invoke(
        scheduler.functions.DeleteFunction,
        pb.DeleteFunctionRequest(namespace="tests", name="echo"),
        metadata=scheduler.admin,
    )
    with pytest.raises(FunctionNotFound):
        await invoke(
            scheduler.functions.GetFunction,
            pb.GetFunctionRequest(namespace="tests", name="echo"),
            metadata=scheduler.admin,
        )
    with pytest.raises(FunctionNotFound):
        await invoke(
            scheduler.functions.DeleteFunction,
            pb.DeleteFunctionRequest(namespace="tests", name="echo"),
            metadata=scheduler.admin,
        )
    again = await scheduler.create_function()
    assert again.version == 1 and again.id != created.id


async def test_duplicate_live_name_is_already_exists(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    with pytest.raises(AlreadyExists):
        await scheduler.create_function()


async def test_default_timeout_applies(scheduler: RunningScheduler) -> None:
    assert (await scheduler.create_function()).timeout_seconds == 300


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"namespace": "1bad"}, "namespace"),
        ({"name": "has-dash"}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"code": "def handler(:\n"}, "code"),
        ({"code": "def other(a, b):\n    return a\n"}, "code"),
        ({"code": "class K:\n    def handler(self):\n        pass\n"}, "code"),
        ({"input_schema_json": b"[1]"}, "input_schema"),
        ({"input_schema_json": b"{not json"}, "input_schema"),
        ({"output_schema_json": dump_json({"type": "nonsense"})}, "output_schema"),
        ({"timeout_seconds": 0}, "timeout"),
        ({"timeout_seconds": 86401}, "timeout"),
    ],
)
async def test_invalid_definitions_name_the_field(
    scheduler: RunningScheduler, overrides: dict[str, object], field: str
) -> None:
    fields: dict[str, object] = {
        "namespace": "tests",
        "name": "echo",
        "code": "def handler(input_data, context):\n    return 1\n",
        "input_schema_json": dump_json({}),
        "output_schema_json": dump_json({}),
        **overrides,
    }
    with pytest.raises(SchemaViolation) as caught:
        await invoke(
            scheduler.functions.CreateFunction,
            pb.CreateFunctionRequest(**fields),  # type: ignore[arg-type]
            metadata=scheduler.admin,
        )
    assert field in [v.field for v in caught.value.violations]


async def test_update_is_validated_and_keeps_the_old_version(
    scheduler: RunningScheduler,
) -> None:
    await scheduler.create_function()
    with pytest.raises(SchemaViolation):
        await invoke(
            scheduler.functions.UpdateFunction,
            pb.UpdateFunctionRequest(namespace="tests", name="echo", code="x = 1\n"),
            metadata=scheduler.admin,
        )
    got = await invoke(
        scheduler.functions.GetFunction,
        pb.GetFunctionRequest(namespace="tests", name="echo"),
        metadata=scheduler.admin,
    )
    assert got.function.version == 1


async def test_only_admins_change_functions(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    _, key = await scheduler.create_user(["Users"])
    with pytest.raises(PermissionDenied):
        await scheduler.create_function(name="mine", metadata=bearer(key))
    with pytest.raises(PermissionDenied):
        await invoke(
            scheduler.functions.UpdateFunction,
            pb.UpdateFunctionRequest(namespace="tests", name="echo", description="x"),
            metadata=bearer(key),
        )
    with pytest.raises(PermissionDenied):
        await invoke(
            scheduler.functions.DeleteFunction,
            pb.DeleteFunctionRequest(namespace="tests", name="echo"),
            metadata=bearer(key),
        )
    # Users hold sinas.functions/*/*.read:own.
    got = await invoke(
        scheduler.functions.GetFunction,
        pb.GetFunctionRequest(namespace="tests", name="echo"),
        metadata=bearer(key),
    )
    assert got.function.name == "echo"
    _, guest = await scheduler.create_user(["GuestUsers"])
    with pytest.raises(PermissionDenied):
        await invoke(
            scheduler.functions.GetFunction,
            pb.GetFunctionRequest(namespace="tests", name="echo"),
            metadata=bearer(guest),
        )

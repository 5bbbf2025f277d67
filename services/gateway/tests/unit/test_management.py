"""Management API: functions, roles, users and API keys."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from sinas_common.errors import AlreadyExists, PermissionDenied
from sinas_common.jsoncodec import load_json
from sinas_common.timeconv import to_timestamp
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**60}}}


def _function(version: int = 1) -> pb.Function:
    return pb.Function(
        id="fn-1",
        namespace="tools",
        name="greet",
        description="says hi",
        code="def handler(input_data, context):\n    return {}\n",
        input_schema_json=b'{"type":"object","properties":{"n":{"type":"integer","maximum":1152921504606846976}}}',
        output_schema_json=b'{"type":"object"}',
        timeout_seconds=60,
        requires_approval=False,
        version=version,
        owner_user_id="admin",
        created_at=to_timestamp(WHEN),
        updated_at=to_timestamp(WHEN),
    )


async def test_create_function(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("create_function", pb.CreateFunctionResponse(function=_function()))

    response = await client.post(
        "/api/v1/functions",
        json={
            "namespace": "tools",
            "name": "greet",
            "code": "def handler(input_data, context):\n    return {}\n",
            "description": "says hi",
            "input_schema": SCHEMA,
            "output_schema": {"type": "object"},
            "timeout": 60,
        },
    )

    assert response.status_code == 201
    assert response.json() == {
        "id": "fn-1",
        "namespace": "tools",
        "name": "greet",
        "description": "says hi",
        "code": "def handler(input_data, context):\n    return {}\n",
        "input_schema": SCHEMA,
        "output_schema": {"type": "object"},
        "timeout": 60,
        "requires_approval": False,
        "version": 1,
        "created_at": "2025-01-02T03:04:05Z",
        "updated_at": "2025-01-02T03:04:05Z",
    }
    (call,) = scheduler.calls_to("create_function")
    assert isinstance(call.request, pb.CreateFunctionRequest)
    assert load_json(call.request.input_schema_json) == SCHEMA
    assert call.request.timeout_seconds == 60
    assert call.request.requires_approval is False


async def test_create_function_defaults(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("create_function", pb.CreateFunctionResponse(function=_function()))

    response = await client.post(
        "/api/v1/functions",
        json={"name": "greet", "code": "x", "input_schema": {}, "output_schema": {}},
    )

    assert response.status_code == 201
    (call,) = scheduler.calls_to("create_function")
    assert isinstance(call.request, pb.CreateFunctionRequest)
    assert call.request.namespace == "default"
    assert call.request.description == ""
    assert not call.request.HasField("timeout_seconds")


async def test_create_function_requires_both_schemas(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.post("/api/v1/functions", json={"name": "greet", "code": "x"})

    assert response.status_code == 422
    locs = sorted(tuple(error["loc"]) for error in response.json()["detail"])
    assert locs == [("body", "input_schema"), ("body", "output_schema")]
    assert scheduler.calls == []


async def test_create_function_conflict_is_409(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("create_function", AlreadyExists("Function tools/greet already exists"))

    response = await client.post(
        "/api/v1/functions",
        json={"name": "greet", "code": "x", "input_schema": {}, "output_schema": {}},
    )

    assert response.status_code == 409
    assert response.json()["reason"] == "already_exists"


async def test_get_function(client: httpx.AsyncClient, scheduler: RecordingSchedulerClient) -> None:
    scheduler.script("get_function", pb.GetFunctionResponse(function=_function()))

    response = await client.get("/api/v1/functions/tools/greet")

    assert response.status_code == 200
    assert response.json()["input_schema"] == SCHEMA
    (call,) = scheduler.calls_to("get_function")
    assert call.request == pb.GetFunctionRequest(namespace="tools", name="greet")


async def test_update_function_sets_only_given_fields(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("update_function", pb.UpdateFunctionResponse(function=_function(version=2)))

    response = await client.put(
        "/api/v1/functions/tools/greet",
        json={"code": "new", "requires_approval": True, "description": None, "name": "greet"},
    )

    assert response.status_code == 200
    assert response.json()["version"] == 2
    (call,) = scheduler.calls_to("update_function")
    assert call.request == pb.UpdateFunctionRequest(
        namespace="tools", name="greet", code="new", requires_approval=True
    )


async def test_update_function_refuses_a_rename(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.put("/api/v1/functions/tools/greet", json={"name": "other"})

    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert scheduler.calls == []


async def test_delete_function(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.delete("/api/v1/functions/tools/greet")

    assert response.status_code == 204
    assert response.content == b""
    (call,) = scheduler.calls_to("delete_function")
    assert call.request == pb.DeleteFunctionRequest(namespace="tools", name="greet")


async def test_create_role(client: httpx.AsyncClient, scheduler: RecordingSchedulerClient) -> None:
    permissions = ["sinas.functions/tools/*.execute:own"]
    scheduler.script(
        "create_role",
        pb.CreateRoleResponse(role=pb.Role(id="r-1", name="runners", permissions=permissions)),
    )

    response = await client.post(
        "/api/v1/roles", json={"name": "runners", "permissions": permissions}
    )

    assert response.status_code == 201
    assert response.json() == {"id": "r-1", "name": "runners", "permissions": permissions}
    (call,) = scheduler.calls_to("create_role")
    assert call.request == pb.CreateRoleRequest(name="runners", permissions=permissions)


async def test_create_user(client: httpx.AsyncClient, scheduler: RecordingSchedulerClient) -> None:
    scheduler.script(
        "create_user",
        pb.CreateUserResponse(user=pb.User(id="u-1", email="a@example.com", roles=["runners"])),
    )

    response = await client.post(
        "/api/v1/users", json={"email": "a@example.com", "roles": ["runners"]}
    )

    assert response.status_code == 201
    assert response.json() == {"id": "u-1", "email": "a@example.com", "roles": ["runners"]}


async def test_create_user_without_admin_rights_is_403(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("create_user", PermissionDenied("Not authorized"))

    response = await client.post("/api/v1/users", json={"email": "a@example.com"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Not authorized", "reason": "permission_denied"}


async def test_create_api_key(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "create_api_key",
        pb.CreateApiKeyResponse(
            id="k-1", name="ci", user_id="u-1", key="sk-secret", created_at=to_timestamp(WHEN)
        ),
    )

    response = await client.post("/api/v1/api-keys", json={"name": "ci", "user_id": "u-1"})
    own = await client.post("/api/v1/api-keys", json={"name": "mine"})

    assert response.status_code == 201
    assert response.json() == {
        "id": "k-1",
        "name": "ci",
        "user_id": "u-1",
        "key": "sk-secret",
        "created_at": "2025-01-02T03:04:05Z",
    }
    assert own.status_code == 201
    first, second = scheduler.calls_to("create_api_key")
    assert first.request == pb.CreateApiKeyRequest(name="ci", user_id="u-1")
    assert second.request == pb.CreateApiKeyRequest(name="mine", user_id="")

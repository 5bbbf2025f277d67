"""Management API: functions, roles, users and API keys (created, listed, revoked)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from google.protobuf.timestamp_pb2 import Timestamp

from sinas_common.errors import AlreadyExists, ApiKeyNotFound, PermissionDenied
from sinas_common.jsoncodec import load_json
from sinas_common.timeconv import to_timestamp
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = datetime(2999, 1, 1, tzinfo=UTC)
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
        "expires_at": None,
        "prefix": "",
    }
    assert own.status_code == 201
    first, second = scheduler.calls_to("create_api_key")
    assert first.request == pb.CreateApiKeyRequest(name="ci", user_id="u-1")
    assert second.request == pb.CreateApiKeyRequest(name="mine", user_id="")


def _api_key(key_id: str = "k-1", **times: Timestamp | None) -> pb.ApiKey:
    return pb.ApiKey(
        id=key_id,
        name="ci",
        user_id="u-1",
        prefix="sk-abcde",
        created_at=to_timestamp(WHEN),
        **times,
    )


async def test_create_api_key_with_an_expiry(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    later = to_timestamp(LATER)
    scheduler.script(
        "create_api_key",
        pb.CreateApiKeyResponse(
            id="k-1",
            name="ci",
            user_id="u-1",
            key="sk-abcdefghijkl",
            created_at=to_timestamp(WHEN),
            expires_at=later,
            prefix="sk-abcde",
        ),
    )

    response = await client.post(
        "/api/v1/api-keys", json={"name": "ci", "expires_at": "2999-01-01T02:00:00+02:00"}
    )

    assert response.status_code == 201
    assert response.json()["expires_at"] == "2999-01-01T00:00:00Z"
    assert response.json()["prefix"] == "sk-abcde"
    [call] = scheduler.calls_to("create_api_key")
    assert call.request == pb.CreateApiKeyRequest(name="ci", expires_at=later)


async def test_a_bad_expiry_is_refused_naming_the_field_and_nothing_is_asked(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    for expires_at in (
        "2000-01-01T00:00:00Z",  # past
        "2999-01-01T00:00:00",  # no timezone
        "next tuesday",
        12,
    ):
        response = await client.post(
            "/api/v1/api-keys", json={"name": "ci", "expires_at": expires_at}
        )
        assert response.status_code == 422, expires_at
        body = response.json()
        assert body["reason"] == "schema_violation"
        assert [item["loc"] for item in body["detail"]] == [["body", "expires_at"]], expires_at
    assert scheduler.calls_to("create_api_key") == []


async def test_list_api_keys(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "list_api_keys",
        pb.ListApiKeysResponse(
            api_keys=[
                _api_key(last_used_at=to_timestamp(WHEN), revoked_at=to_timestamp(WHEN)),
                _api_key("k-0", expires_at=to_timestamp(LATER)),
            ]
        ),
    )

    mine = await client.get("/api/v1/api-keys")
    theirs = await client.get("/api/v1/api-keys", params={"user_id": "u-2"})

    assert mine.status_code == 200
    assert mine.json() == [
        {
            "id": "k-1",
            "name": "ci",
            "user_id": "u-1",
            "prefix": "sk-abcde",
            "created_at": "2025-01-02T03:04:05Z",
            "last_used_at": "2025-01-02T03:04:05Z",
            "expires_at": None,
            "revoked_at": "2025-01-02T03:04:05Z",
        },
        {
            "id": "k-0",
            "name": "ci",
            "user_id": "u-1",
            "prefix": "sk-abcde",
            "created_at": "2025-01-02T03:04:05Z",
            "last_used_at": None,
            "expires_at": "2999-01-01T00:00:00Z",
            "revoked_at": None,
        },
    ]
    assert theirs.status_code == 200 and theirs.json() == []
    first, second = scheduler.calls_to("list_api_keys")
    assert first.request == pb.ListApiKeysRequest()
    assert second.request == pb.ListApiKeysRequest(user_id="u-2")


async def test_revoke_api_key(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "revoke_api_key",
        pb.RevokeApiKeyResponse(api_key=_api_key(revoked_at=to_timestamp(WHEN))),
        ApiKeyNotFound(),
    )

    revoked = await client.delete("/api/v1/api-keys/k-1")
    hidden = await client.delete("/api/v1/api-keys/k-9")

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] == "2025-01-02T03:04:05Z"
    assert "key" not in revoked.json()
    assert hidden.status_code == 404
    assert hidden.json() == {"detail": "API key not found", "reason": "api_key_not_found"}
    first, second = scheduler.calls_to("revoke_api_key")
    assert (first.request, second.request) == (
        pb.RevokeApiKeyRequest(id="k-1"),
        pb.RevokeApiKeyRequest(id="k-9"),
    )

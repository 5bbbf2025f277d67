"""The management API over real sockets: function lifecycle, roles, users, API keys."""

from __future__ import annotations

import httpx

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**60}}}


async def test_function_lifecycle(http: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    created = await http.post(
        "/api/v1/functions",
        headers=admin_headers,
        json={
            "namespace": "tools",
            "name": "count",
            "code": "def handler(input_data, context):\n    return {}\n",
            "description": "counts",
            "input_schema": SCHEMA,
            "output_schema": {"type": "object"},
            "timeout": 45,
        },
    )
    duplicate = await http.post(
        "/api/v1/functions",
        headers=admin_headers,
        json={
            "namespace": "tools",
            "name": "count",
            "code": "",
            "input_schema": {},
            "output_schema": {},
        },
    )
    fetched = await http.get("/api/v1/functions/tools/count", headers=admin_headers)
    updated = await http.put(
        "/api/v1/functions/tools/count",
        headers=admin_headers,
        json={"description": "counts better", "requires_approval": True},
    )
    deleted = await http.delete("/api/v1/functions/tools/count", headers=admin_headers)
    gone = await http.get("/api/v1/functions/tools/count", headers=admin_headers)

    assert created.status_code == 201
    function = created.json()
    assert function["input_schema"] == SCHEMA
    assert (function["timeout"], function["version"], function["requires_approval"]) == (
        45,
        1,
        False,
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["reason"] == "already_exists"
    assert fetched.json() == function
    assert updated.status_code == 200
    assert updated.json()["version"] == 2
    assert updated.json()["description"] == "counts better"
    assert updated.json()["requires_approval"] is True
    assert updated.json()["code"] == function["code"]
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert gone.status_code == 404


async def test_roles_users_and_api_keys(
    http: httpx.AsyncClient, admin_headers: dict[str, str], user_headers: dict[str, str]
) -> None:
    role = await http.post(
        "/api/v1/roles",
        headers=admin_headers,
        json={"name": "runners", "permissions": ["sinas.functions/tools/*.execute:own"]},
    )
    user = await http.post(
        "/api/v1/users",
        headers=admin_headers,
        json={"email": "new@example.com", "roles": ["runners"]},
    )
    own_key = await http.post("/api/v1/api-keys", headers=user_headers, json={"name": "laptop"})
    someone_elses = await http.post(
        "/api/v1/api-keys", headers=user_headers, json={"name": "x", "user_id": "admin-1"}
    )

    assert role.status_code == 201
    assert role.json()["permissions"] == ["sinas.functions/tools/*.execute:own"]
    assert user.status_code == 201
    assert set(user.json()) == {"id", "email", "roles"}
    assert user.json()["roles"] == ["runners"]
    assert own_key.status_code == 201
    key = own_key.json()
    assert key["user_id"] == "user-1"
    assert key["key"].startswith("sk-")
    assert someone_elses.status_code == 403
    me_with_new_key = await http.get("/auth/me", headers={"X-API-Key": key["key"]})
    assert me_with_new_key.json()["id"] == "user-1"

"""The management API over real sockets: function lifecycle, roles, users, API keys."""

from __future__ import annotations

import httpx

from .fake_scheduler import OTHER_KEY

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


async def test_api_keys_are_listed_and_revoked_and_others_are_not_found(
    http: httpx.AsyncClient, admin_headers: dict[str, str], user_headers: dict[str, str]
) -> None:
    other_headers = {"X-API-Key": OTHER_KEY}
    mine = (
        await http.post(
            "/api/v1/api-keys",
            headers=user_headers,
            json={"name": "laptop", "expires_at": "2999-01-01T00:00:00+02:00"},
        )
    ).json()
    assert mine["expires_at"] == "2998-12-31T22:00:00Z"
    assert mine["prefix"] == mine["key"][:8]

    listed = await http.get("/api/v1/api-keys", headers=user_headers)
    assert listed.status_code == 200
    [summary] = listed.json()
    assert set(summary) == {
        "id",
        "name",
        "user_id",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    }
    assert mine["key"] not in listed.text
    assert (summary["id"], summary["revoked_at"]) == (mine["id"], None)
    by_admin = await http.get(
        "/api/v1/api-keys", headers=admin_headers, params={"user_id": mine["user_id"]}
    )
    assert [k["id"] for k in by_admin.json()] == [mine["id"]]
    peeking = await http.get(
        "/api/v1/api-keys", headers=other_headers, params={"user_id": mine["user_id"]}
    )
    assert peeking.status_code == 403

    stolen = await http.delete(f"/api/v1/api-keys/{mine['id']}", headers=other_headers)
    assert stolen.status_code == 404
    assert stolen.json()["reason"] == "api_key_not_found"
    revoked = await http.delete(f"/api/v1/api-keys/{mine['id']}", headers=user_headers)
    again = await http.delete(f"/api/v1/api-keys/{mine['id']}", headers=user_headers)
    assert revoked.status_code == again.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert again.json() == revoked.json()

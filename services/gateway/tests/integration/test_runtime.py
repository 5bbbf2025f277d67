"""The runtime API over real sockets against a fake scheduler on a real gRPC server."""

from __future__ import annotations

import httpx

from .fake_scheduler import ADMIN_TOKEN, OTHER_KEY, USER_KEY, FakeScheduler

EXACT_INPUT = {
    "big": 2**60,
    "bigger": 2**70,
    "negative": -(2**63),
    "float": 0.1,
    "tiny": 5e-324,
    "large_float": 1.7976931348623157e308,
    "unicode": 'Zoë 🚀 日本語 \u0000 "quoted"',
    "nested": [{"a": [1, 2.5, None, True]}],
}
GREETING_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            },
        }
    },
}


async def _create_function(http: httpx.AsyncClient, name: str, schema: dict[str, object]) -> None:
    response = await http.post(
        "/api/v1/functions",
        headers={"Authorization": ADMIN_TOKEN},
        json={
            "namespace": "tools",
            "name": name,
            "code": "def handler(input_data, context):\n    return input_data\n",
            "input_schema": schema,
            "output_schema": {"type": "object"},
        },
    )
    assert response.status_code == 201, response.text


async def test_enqueue_then_poll_with_exact_json(
    http: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await _create_function(http, "echo", {"type": "object"})

    queued = await http.post(
        "/functions/tools/echo/execute/async",
        headers=user_headers,
        json={"input": EXACT_INPUT, "trigger_id": "order-1"},
    )
    assert queued.status_code == 202
    execution_id = queued.json()["execution_id"]
    assert queued.json() == {"execution_id": execution_id, "status": "queued"}

    polled = await http.get(f"/executions/{execution_id}", headers=user_headers)

    assert polled.status_code == 200
    document = polled.json()
    assert document["status"] == "COMPLETED"
    assert document["input_data"] == EXACT_INPUT
    assert document["output_data"] == EXACT_INPUT
    assert document["trigger_id"] == "order-1"
    assert document["created_at"].endswith("Z")
    assert '"bigger":1180591620717411303424' in polled.text.replace(" ", "")


async def test_sync_execute_success_error_and_timeout(
    http: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    for name in ("echo", "explode", "sleepy"):
        await _create_function(http, name, {"type": "object"})

    success = await http.post(
        "/functions/tools/echo/execute", headers=user_headers, json={"input": EXACT_INPUT}
    )
    failure = await http.post(
        "/functions/tools/explode/execute", headers=user_headers, json={"input": {}}
    )
    pending = await http.post(
        "/functions/tools/sleepy/execute", headers=user_headers, json={"input": {}, "timeout": 1}
    )

    assert success.status_code == 200
    assert success.json()["status"] == "success"
    assert success.json()["result"] == EXACT_INPUT
    assert failure.json()["status"] == "error"
    assert failure.json()["error"] == "ZeroDivisionError: division by zero"
    assert pending.status_code == 200
    timed_out = pending.json()
    assert timed_out["status"] == "timeout"
    assert timed_out["result"] is None
    assert f"GET /executions/{timed_out['execution_id']}" in timed_out["error"]
    still = await http.get(f"/executions/{timed_out['execution_id']}", headers=user_headers)
    assert still.json()["status"] == "PENDING"


async def test_credentials_are_forwarded_as_sent(
    http: httpx.AsyncClient, fake_scheduler: FakeScheduler
) -> None:
    await http.get("/auth/me", headers={"Authorization": f"Bearer {USER_KEY}"})
    await http.get("/auth/me", headers={"X-API-Key": USER_KEY, "Authorization": ADMIN_TOKEN})
    await http.get("/.well-known/jwks.json", headers={"X-API-Key": USER_KEY})

    (_, first), (_, second), (_, jwks) = fake_scheduler.state.calls
    assert first["authorization"] == f"Bearer {USER_KEY}"
    assert "x-api-key" not in first
    assert (second["x-api-key"], second["authorization"]) == (USER_KEY, ADMIN_TOKEN)
    assert "x-api-key" not in jwks
    assert "authorization" not in jwks


async def test_auth_errors(http: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    missing = await http.get("/auth/me")
    forged = await http.get("/auth/me", headers={"Authorization": "Bearer forged"})
    me = await http.get("/auth/me", headers=user_headers)
    forbidden = await http.post(
        "/api/v1/roles", headers=user_headers, json={"name": "x", "permissions": []}
    )

    assert missing.status_code == 401
    assert missing.json() == {
        "detail": "Missing authorization header",
        "reason": "missing_credentials",
    }
    assert missing.headers["www-authenticate"] == "Bearer"
    assert forged.status_code == 401
    assert forged.json()["reason"] == "invalid_credentials"
    assert me.status_code == 200
    assert me.json()["email"] == "zoë@example.com"
    assert me.json()["last_login_at"] is None
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": "Not authorized", "reason": "permission_denied"}


async def test_not_found_cases(http: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    await _create_function(http, "echo", {"type": "object"})
    mine = await http.post(
        "/functions/tools/echo/execute/async", headers=user_headers, json={"input": {}}
    )

    unknown_function = await http.post(
        "/functions/tools/nope/execute/async", headers=user_headers, json={"input": {}}
    )
    someone_elses = await http.get(
        f"/executions/{mine.json()['execution_id']}", headers={"X-API-Key": OTHER_KEY}
    )

    assert unknown_function.status_code == 404
    assert unknown_function.json() == {
        "detail": "Function not found",
        "reason": "function_not_found",
    }
    assert someone_elses.status_code == 404
    assert someone_elses.json()["reason"] == "execution_not_found"


async def test_schema_violation_names_the_field_path(
    http: httpx.AsyncClient, user_headers: dict[str, str], fake_scheduler: FakeScheduler
) -> None:
    await _create_function(http, "greet", GREETING_SCHEMA)

    response = await http.post(
        "/functions/tools/greet/execute/async",
        headers=user_headers,
        json={"input": {"items": [{"name": "a"}, {"name": "b"}, {}]}},
    )

    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "input", "items", 2, "name"],
                "msg": "'name' is a required property",
                "type": "schema_violation",
            }
        ],
        "reason": "schema_violation",
    }
    assert fake_scheduler.state.executions == {}


async def test_callback_url_is_a_400_while_callbacks_are_disabled(
    http: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    await _create_function(http, "echo", {"type": "object"})

    response = await http.post(
        "/functions/tools/echo/execute/async",
        headers=user_headers,
        json={"input": {}, "callback_url": "https://app.example/hook"},
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Callbacks are disabled on this instance",
        "reason": "callback_url_rejected",
    }


async def test_list_filters_and_pages(
    http: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    for name in ("echo", "sleepy"):
        await _create_function(http, name, {"type": "object"})
    ids = []
    for name in ("echo", "sleepy", "echo"):
        queued = await http.post(
            f"/functions/tools/{name}/execute/async", headers=user_headers, json={"input": {}}
        )
        ids.append(queued.json()["execution_id"])

    everything = await http.get("/executions", headers=user_headers)
    completed = await http.get(
        "/executions", headers=user_headers, params={"status": "completed", "limit": 1}
    )
    second_page = await http.get(
        "/executions",
        headers=user_headers,
        params={"function_name": "echo", "limit": 1, "offset": 1},
    )
    bad = await http.get("/executions", headers=user_headers, params={"limit": 5000})

    assert [doc["execution_id"] for doc in everything.json()] == ids[::-1]
    assert [doc["execution_id"] for doc in completed.json()] == [ids[2]]
    assert [doc["execution_id"] for doc in second_page.json()] == [ids[0]]
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "limit"]

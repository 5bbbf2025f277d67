"""The one error mapping: status, reason, detail shape, and the 401 challenge."""

from __future__ import annotations

import httpx
import pytest

from sinas_common import errors
from sinas_gateway.errors import field_location
from sinas_gateway.testing import RecordingSchedulerClient

ME_PATH = "/auth/me"


@pytest.mark.parametrize(
    ("field", "loc"),
    [
        ("input", ["body", "input"]),
        ("input.items[2].name", ["body", "input", "items", 2, "name"]),
        ("input.matrix[0][1]", ["body", "input", "matrix", 0, 1]),
        ("input['dotted.key'].x", ["body", "input", "dotted.key", "x"]),
        ("trigger_id", ["body", "trigger_id"]),
        ("", ["body"]),
    ],
)
def test_field_location_splits_paths(field: str, loc: list[str | int]) -> None:
    assert field_location(field) == loc


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidArgument("bad"), 400),
        (errors.ExecutionDepthExceeded("too deep"), 400),
        (errors.CallbackUrlRejected("Callbacks are disabled"), 400),
        (errors.PermissionDenied("Not authorized"), 403),
        (errors.NotFound("gone"), 404),
        (errors.UserNotFound("User not found"), 404),
        (errors.Conflict("busy"), 409),
        (errors.AlreadyExists("taken"), 409),
        (errors.PayloadTooLarge("too big"), 413),
        (errors.ServiceUnavailable("down"), 503),
        (errors.DeadlineExceeded("slow"), 504),
        (errors.SinasError("oops"), 500),
    ],
)
async def test_scheduler_errors_map_to_http(
    client: httpx.AsyncClient,
    scheduler: RecordingSchedulerClient,
    error: errors.SinasError,
    status: int,
) -> None:
    scheduler.script("get_me", error)

    response = await client.get(ME_PATH)

    assert response.status_code == status
    assert response.json() == {"detail": error.message, "reason": error.reason}
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    "error",
    [errors.MissingCredentials("Missing authorization header"), errors.Unauthenticated()],
)
async def test_401_carries_bearer_challenge(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, error: errors.SinasError
) -> None:
    scheduler.script("get_me", error)

    response = await client.get(ME_PATH)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": error.message, "reason": error.reason}


async def test_violations_on_a_400_render_as_a_field_list(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_execution",
        errors.InvalidArgument(
            "trigger_id is too long",
            violations=[errors.FieldViolation(field="trigger_id", description="too long")],
        ),
    )

    response = await client.post("/functions/a/b/execute/async", json={"input": {}})

    assert response.status_code == 400
    assert response.json() == {
        "detail": [{"loc": ["body", "trigger_id"], "msg": "too long", "type": "invalid_argument"}],
        "reason": "invalid_argument",
    }


async def test_a_rejected_callback_url_keeps_upstreams_message_detail(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_execution",
        errors.CallbackUrlRejected(
            "callback_url rejected: callbacks are not enabled on this instance",
            violations=[errors.FieldViolation(field="callback_url", description="disabled")],
        ),
    )

    response = await client.post(
        "/functions/a/b/execute/async", json={"input": {}, "callback_url": "https://x.example"}
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "callback_url rejected: callbacks are not enabled on this instance",
        "reason": "callback_url_rejected",
    }


async def test_schema_violation_without_fields_is_still_a_list(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("create_function", errors.SchemaViolation("input_schema is not a schema"))

    response = await client.post(
        "/api/v1/functions",
        json={"name": "f", "code": "", "input_schema": {}, "output_schema": {}},
    )

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body"], "msg": "input_schema is not a schema", "type": "schema_violation"}
    ]


@pytest.mark.parametrize("body", [b'{"input": ', b"{input: 1}", b"\xff\xfe"])
async def test_invalid_json_is_422_with_a_clear_message(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, body: bytes
) -> None:
    response = await client.post(
        "/functions/a/b/execute/async",
        content=body,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    payload = response.json()
    assert payload["reason"] == "invalid_json"
    assert payload["detail"][0]["msg"].startswith("Invalid JSON in request body")
    assert scheduler.calls == []


async def test_unknown_route_and_method_keep_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/no/such/path")
    wrong_method = await client.delete("/auth/me")

    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found", "reason": "not_found"}
    assert wrong_method.status_code == 405
    assert wrong_method.json()["reason"] == "method_not_allowed"


async def test_non_ascii_credential_is_refused_without_a_call(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.get(ME_PATH, headers={"X-API-Key": "sk-é".encode("latin-1")})  # type: ignore[dict-item]

    assert response.status_code == 401
    assert response.json()["reason"] == "invalid_credentials"
    assert scheduler.calls == []

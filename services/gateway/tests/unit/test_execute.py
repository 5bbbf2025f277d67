"""Runtime execute endpoints: what reaches the scheduler and what the caller gets back."""

from __future__ import annotations

import httpx
import pytest

from sinas_common.errors import AlreadyExists, FieldViolation, FunctionNotFound, SchemaViolation
from sinas_common.jsoncodec import load_json
from sinas_gateway.scheduler_client import Credentials
from sinas_gateway.settings import GatewaySettings
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

ASYNC_PATH = "/functions/tools/greet/execute/async"
SYNC_PATH = "/functions/tools/greet/execute"


def _submitted(scheduler: RecordingSchedulerClient) -> pb.SubmitExecutionRequest:
    (call,) = scheduler.calls_to("submit_execution")
    assert isinstance(call.request, pb.SubmitExecutionRequest)
    return call.request


async def test_async_execute_submits_and_answers_queued(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_execution", pb.SubmitExecutionResponse(execution_id="exec-1"))

    response = await client.post(
        ASYNC_PATH,
        json={"input": {"n": 2**60, "x": 0.1, "s": "héllo ✓"}, "delay_seconds": 30},
        headers={"X-API-Key": "sk-abc"},
    )

    assert response.status_code == 202
    assert response.json() == {"execution_id": "exec-1", "status": "queued"}
    request = _submitted(scheduler)
    assert (request.namespace, request.name) == ("tools", "greet")
    assert load_json(request.input_json) == {"n": 2**60, "x": 0.1, "s": "héllo ✓"}
    assert request.trigger_id == "runtime-api"
    assert request.HasField("delay_seconds")
    assert request.delay_seconds == 30
    assert request.callback_url == ""
    assert scheduler.calls[0].caller == Credentials(
        authorization="Bearer test-token", api_key="sk-abc"
    )


async def test_async_execute_forwards_trigger_and_callback(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.post(
        ASYNC_PATH,
        json={
            "input": {},
            "trigger_id": "order-7",
            "delay_seconds": 0,
            "callback_url": "https://app.example/hook",
        },
    )

    assert response.status_code == 202
    request = _submitted(scheduler)
    assert request.trigger_id == "order-7"
    assert not request.HasField("delay_seconds")
    assert request.callback_url == "https://app.example/hook"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "input"]),
        ({"input": [1, 2]}, ["body", "input"]),
        ({"input": "text"}, ["body", "input"]),
        ({"input": {}, "trigger_id": "t" * 256}, ["body", "trigger_id"]),
        ({"input": {}, "trigger_id": 5}, ["body", "trigger_id"]),
        ({"input": {}, "delay_seconds": -1}, ["body", "delay_seconds"]),
        ({"input": {}, "delay_seconds": 31536001}, ["body", "delay_seconds"]),
        ({"input": {}, "delay_seconds": "10"}, ["body", "delay_seconds"]),
        ({"input": {}, "delay_seconds": 1.5}, ["body", "delay_seconds"]),
    ],
)
async def test_async_execute_rejects_bad_bodies_before_the_scheduler(
    client: httpx.AsyncClient,
    scheduler: RecordingSchedulerClient,
    body: dict[str, object],
    loc: list[str],
) -> None:
    response = await client.post(ASYNC_PATH, json=body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["reason"] == "schema_violation"
    assert [error["loc"] for error in payload["detail"]] == [loc]
    assert scheduler.calls == []


async def test_largest_delay_is_accepted(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.post(ASYNC_PATH, json={"input": {}, "delay_seconds": 31536000})

    assert response.status_code == 202
    assert _submitted(scheduler).delay_seconds == 31536000


async def test_nan_in_input_is_a_field_error_not_a_crash(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.post(
        ASYNC_PATH,
        content=b'{"input": {"x": NaN}}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input"]
    assert scheduler.calls == []


async def test_schema_violation_from_scheduler_names_the_field_path(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_execution",
        SchemaViolation(
            "Input does not match the function's input_schema",
            violations=[
                FieldViolation(field="input.items[2].name", description="'name' is required")
            ],
        ),
    )

    response = await client.post(ASYNC_PATH, json={"input": {"items": [{}, {}, {}]}})

    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "input", "items", 2, "name"],
                "msg": "'name' is required",
                "type": "schema_violation",
            }
        ],
        "reason": "schema_violation",
    }


async def test_unknown_function_is_404(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_execution", FunctionNotFound())

    response = await client.post(ASYNC_PATH, json={"input": {}})

    assert response.status_code == 404
    assert response.json() == {"detail": "Function not found", "reason": "function_not_found"}


def _finished(status: pb.ExecutionStatus.ValueType, **fields: object) -> pb.WaitExecutionResponse:
    return pb.WaitExecutionResponse(
        execution=pb.Execution(execution_id="exec-9", status=status, **fields),  # type: ignore[arg-type]
        finished=True,
    )


async def test_sync_execute_success_returns_output(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_execution", pb.SubmitExecutionResponse(execution_id="exec-9"))
    scheduler.script(
        "wait_execution",
        _finished(pb.EXECUTION_STATUS_COMPLETED, output_json=b'{"big":1152921504606846976}'),
    )

    response = await client.post(SYNC_PATH, json={"input": {"a": 1}, "timeout": 12})

    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "execution_id": "exec-9",
        "result": {"big": 2**60},
        "error": None,
    }
    (wait,) = scheduler.calls_to("wait_execution")
    assert isinstance(wait.request, pb.WaitExecutionRequest)
    assert wait.request.execution_id == "exec-9"
    assert wait.request.timeout_seconds == 12
    assert wait.caller.authorization == "Bearer test-token"


async def test_sync_execute_failure_returns_error(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_execution", pb.SubmitExecutionResponse(execution_id="exec-9"))
    scheduler.script("wait_execution", _finished(pb.EXECUTION_STATUS_FAILED, error="boom"))

    response = await client.post(SYNC_PATH, json={"input": {}})

    assert response.json() == {
        "status": "error",
        "execution_id": "exec-9",
        "result": None,
        "error": "boom",
    }


async def test_sync_execute_cancelled_without_message_still_explains(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_execution", pb.SubmitExecutionResponse(execution_id="exec-9"))
    scheduler.script("wait_execution", _finished(pb.EXECUTION_STATUS_CANCELLED))

    response = await client.post(SYNC_PATH, json={"input": {}})

    assert response.json()["status"] == "error"
    assert response.json()["error"] == "Execution ended CANCELLED"


async def test_sync_execute_timeout_uses_default_wait_and_points_at_polling(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, settings: GatewaySettings
) -> None:
    scheduler.script("submit_execution", pb.SubmitExecutionResponse(execution_id="exec-9"))
    scheduler.script(
        "wait_execution",
        pb.WaitExecutionResponse(
            execution=pb.Execution(execution_id="exec-9", status=pb.EXECUTION_STATUS_RUNNING),
            finished=False,
        ),
    )

    response = await client.post(SYNC_PATH, json={"input": {}})

    payload = response.json()
    assert response.status_code == 200
    assert payload["status"] == "timeout"
    assert payload["result"] is None
    assert "GET /executions/exec-9" in payload["error"]
    (wait,) = scheduler.calls_to("wait_execution")
    assert isinstance(wait.request, pb.WaitExecutionRequest)
    assert wait.request.timeout_seconds == settings.sync_execute_default_timeout == 7


@pytest.mark.parametrize("timeout", [0, -3, "5"])
async def test_sync_execute_rejects_bad_timeout(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, timeout: object
) -> None:
    response = await client.post(SYNC_PATH, json={"input": {}, "timeout": timeout})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "timeout"]
    assert scheduler.calls == []


async def test_async_execute_forwards_the_idempotency_key(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    key = "k" * 255
    response = await client.post(ASYNC_PATH, json={"input": {}}, headers={"Idempotency-Key": key})
    assert response.status_code == 202
    assert _submitted(scheduler).idempotency_key == key


async def test_async_execute_without_an_idempotency_key_sends_none(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    await client.post(ASYNC_PATH, json={"input": {}})
    assert _submitted(scheduler).idempotency_key == ""


@pytest.mark.parametrize("key", ["k" * 256, "", "caf\u00e9".encode().decode("latin-1")])
async def test_a_malformed_idempotency_key_is_a_400_that_reaches_nobody(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, key: str
) -> None:
    response = await client.post(
        ASYNC_PATH, json={"input": {}}, headers={"Idempotency-Key": key.encode("latin-1")}
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_argument"
    assert "Idempotency-Key" in response.json()["detail"]
    assert scheduler.calls_to("submit_execution") == []


async def test_a_reused_idempotency_key_is_a_409(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_execution",
        AlreadyExists("Idempotency-Key was already used for a different request"),
    )
    response = await client.post(ASYNC_PATH, json={"input": {}}, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Idempotency-Key was already used for a different request",
        "reason": "already_exists",
    }

"""Execution documents and the filtered list."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from sinas_common.errors import ExecutionNotFound
from sinas_common.timeconv import to_timestamp
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

CREATED = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
STARTED = datetime(2025, 3, 1, 12, 0, 1, tzinfo=UTC)
COMPLETED = datetime(2025, 3, 1, 12, 0, 3, tzinfo=UTC)
ATTEMPTED = datetime(2025, 3, 1, 12, 0, 4, 500000, tzinfo=UTC)


def _completed_execution() -> pb.Execution:
    execution = pb.Execution(
        execution_id="exec-1",
        user_id="user-1",
        kind="function",
        namespace="tools",
        function_name="greet",
        status=pb.EXECUTION_STATUS_COMPLETED,
        input_json='{"name":"Zoë","n":1152921504606846976}'.encode(),
        output_json=b'{"pi":3.141592653589793,"tiny":5e-324}',
        trigger_type="API",
        trigger_id="runtime-api",
        created_at=to_timestamp(CREATED),
        started_at=to_timestamp(STARTED),
        completed_at=to_timestamp(COMPLETED),
        duration_ms=2000,
        attempts=1,
        callback_url="https://app.example/hook",
        callback_status="failed",
        callback_response_code=500,
        callback_error="the receiver answered 500",
        callback_attempted_at=to_timestamp(ATTEMPTED),
    )
    return execution


async def test_execution_document_has_every_field(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("get_execution", pb.GetExecutionResponse(execution=_completed_execution()))

    response = await client.get("/executions/exec-1")

    assert response.status_code == 200
    assert response.json() == {
        "execution_id": "exec-1",
        "namespace": "tools",
        "function_name": "greet",
        "status": "COMPLETED",
        "input_data": {"name": "Zoë", "n": 2**60},
        "output_data": {"pi": 3.141592653589793, "tiny": 5e-324},
        "error": None,
        "traceback": None,
        "trigger_type": "API",
        "trigger_id": "runtime-api",
        "batch_id": None,
        "chat_id": None,
        "created_at": "2025-03-01T12:00:00.250000Z",
        "started_at": "2025-03-01T12:00:01Z",
        "completed_at": "2025-03-01T12:00:03Z",
        "duration_ms": 2000,
        "attempts": 1,
        "callback_url": "https://app.example/hook",
        "callback_status": "failed",
        "callback_response_code": 500,
        "callback_error": "the receiver answered 500",
        "callback_attempted_at": "2025-03-01T12:00:04.500000Z",
        "input_prompt": None,
        "input_deadline_at": None,
        "kind": "function",
        "prompt_tokens": None,
        "completion_tokens": None,
        "parent_execution_id": None,
    }
    (call,) = scheduler.calls_to("get_execution")
    assert call.request == pb.GetExecutionRequest(execution_id="exec-1")


async def test_pending_execution_has_nulls_where_unset(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    pending = pb.Execution(
        execution_id="exec-2",
        namespace="tools",
        function_name="greet",
        status=pb.EXECUTION_STATUS_PENDING,
        input_json=b"{}",
        created_at=to_timestamp(CREATED),
    )
    scheduler.script("get_execution", pb.GetExecutionResponse(execution=pending))

    document = (await client.get("/executions/exec-2")).json()

    assert document["status"] == "PENDING"
    assert document["input_data"] == {}
    for field in (
        "output_data",
        "error",
        "trigger_type",
        "started_at",
        "completed_at",
        "duration_ms",
        "callback_url",
        "callback_status",
        "callback_response_code",
        "callback_error",
        "callback_attempted_at",
    ):
        assert document[field] is None, field
    assert document["attempts"] == 0


async def test_someone_elses_execution_is_404(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("get_execution", ExecutionNotFound("Execution not found"))

    response = await client.get("/executions/not-mine")

    assert response.status_code == 404
    assert response.json() == {"detail": "Execution not found", "reason": "execution_not_found"}


async def test_list_forwards_filters_and_returns_documents(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "list_executions",
        pb.ListExecutionsResponse(executions=[_completed_execution(), _completed_execution()]),
    )

    response = await client.get(
        "/executions",
        params={
            "function_name": "greet",
            "status": "completed",
            "trigger_id": "order-1",
            "batch_id": "batch-1",
            "limit": 1000,
            "offset": 20,
        },
    )

    assert response.status_code == 200
    assert [doc["execution_id"] for doc in response.json()] == ["exec-1", "exec-1"]
    (call,) = scheduler.calls_to("list_executions")
    assert call.request == pb.ListExecutionsRequest(
        function_name="greet",
        status=pb.EXECUTION_STATUS_COMPLETED,
        trigger_id="order-1",
        batch_id="batch-1",
        limit=1000,
        offset=20,
    )


async def test_list_defaults(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.get("/executions")

    assert response.json() == []
    (call,) = scheduler.calls_to("list_executions")
    assert call.request == pb.ListExecutionsRequest(limit=100, offset=0)


@pytest.mark.parametrize("status", ["AWAITING_INPUT", "awaiting_input", "Running"])
async def test_list_status_in_either_case(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, status: str
) -> None:
    response = await client.get("/executions", params={"status": status})

    assert response.status_code == 200
    (call,) = scheduler.calls_to("list_executions")
    assert isinstance(call.request, pb.ListExecutionsRequest)
    assert pb.ExecutionStatus.Name(call.request.status).endswith(status.upper())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "done"}, "status"),
    ],
)
async def test_list_rejects_bad_query_naming_the_field(
    client: httpx.AsyncClient,
    scheduler: RecordingSchedulerClient,
    params: dict[str, object],
    field: str,
) -> None:
    response = await client.get("/executions", params=params)  # type: ignore[arg-type]

    assert response.status_code == 422
    assert response.json()["reason"] == "schema_violation"
    assert response.json()["detail"][0]["loc"] == ["query", field]
    assert scheduler.calls == []


@pytest.mark.parametrize("state", ["pending", "in_flight", "sent", "failed"])
async def test_every_callback_state_is_reported(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, state: str
) -> None:
    execution = _completed_execution()
    execution.callback_status = state
    scheduler.script("get_execution", pb.GetExecutionResponse(execution=execution))

    document = (await client.get("/executions/exec-1")).json()

    assert document["callback_status"] == state

"""Continue, cancel and batch cancel: requests forwarded as sent, answers and errors mapped."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from sinas_common.errors import ExecutionNotFound, InvalidTransition, NotFound
from sinas_common.timeconv import to_timestamp
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

DEADLINE = datetime(2025, 3, 1, 13, 0, 0, tzinfo=UTC)


def _execution(status: pb.ExecutionStatus.ValueType, **fields: object) -> pb.Execution:
    return pb.Execution(
        execution_id="exec-1",
        namespace="tools",
        function_name="ask",
        status=status,
        input_json=b"{}",
        **fields,  # type: ignore[arg-type]
    )


async def test_continue_forwards_the_input_exactly(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "continue_execution",
        pb.ContinueExecutionResponse(execution=_execution(pb.EXECUTION_STATUS_RUNNING)),
    )
    response = await client.post(
        "/executions/exec-1/continue",
        content=b'{"input": {"n": 1152921504606846977, "name": "Ada"}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["input_prompt"], body["input_deadline_at"]) == (
        "RUNNING",
        None,
        None,
    )
    [call] = scheduler.calls_to("continue_execution")
    assert isinstance(call.request, pb.ContinueExecutionRequest)
    assert call.request.execution_id == "exec-1"
    assert call.request.input_json == b'{"n":1152921504606846977,"name":"Ada"}'
    assert call.caller.authorization == "Bearer test-token"


async def test_continue_needs_an_input_and_maps_errors(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    missing = await client.post("/executions/exec-1/continue", json={})
    assert missing.status_code == 422
    assert not scheduler.calls_to("continue_execution")

    scheduler.script(
        "continue_execution",
        InvalidTransition("Execution is not awaiting input (status RUNNING)"),
        ExecutionNotFound(),
    )
    conflict = await client.post("/executions/exec-1/continue", json={"input": "x"})
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == "Execution is not awaiting input (status RUNNING)"
    unknown = await client.post("/executions/exec-2/continue", json={"input": None})
    assert unknown.status_code == 404
    assert scheduler.calls_to("continue_execution")[1].request.input_json == b"null"  # type: ignore[attr-defined]


async def test_paused_execution_document_shows_prompt_and_deadline(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    paused = _execution(
        pb.EXECUTION_STATUS_AWAITING_INPUT,
        input_prompt="Name?",
        input_deadline_at=to_timestamp(DEADLINE),
    )
    scheduler.script("get_execution", pb.GetExecutionResponse(execution=paused))
    body = (await client.get("/executions/exec-1")).json()
    assert body["status"] == "AWAITING_INPUT"
    assert body["input_prompt"] == "Name?"
    assert body["input_deadline_at"] == "2025-03-01T13:00:00Z"


async def test_cancel_execution_reports_whether_it_cancelled(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "cancel_execution",
        pb.CancelExecutionResponse(
            execution=_execution(pb.EXECUTION_STATUS_CANCELLED), cancelled=True
        ),
        pb.CancelExecutionResponse(execution=_execution(pb.EXECUTION_STATUS_RUNNING)),
    )
    first = await client.post("/executions/exec-1/cancel")
    assert first.status_code == 200
    assert (first.json()["status"], first.json()["cancelled"]) == ("CANCELLED", True)
    second = await client.post("/executions/exec-1/cancel")
    assert (second.json()["status"], second.json()["cancelled"]) == ("RUNNING", False)
    assert [c.request.execution_id for c in scheduler.calls_to("cancel_execution")] == [  # type: ignore[attr-defined]
        "exec-1",
        "exec-1",
    ]


async def test_cancel_batch_answers_upstreams_shape(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "cancel_batch",
        pb.CancelBatchResponse(batch_id="b-1", status="cancelled", cancelled_children=7),
        NotFound("Batch not found"),
    )
    response = await client.post("/batches/b-1/cancel")
    assert response.status_code == 200
    assert response.json() == {"batch_id": "b-1", "status": "cancelled", "cancelled_children": 7}
    missing = await client.post("/batches/b-2/cancel")
    assert (missing.status_code, missing.json()["detail"]) == (404, "Batch not found")

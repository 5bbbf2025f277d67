"""Batch endpoints: what reaches the scheduler and what the caller gets back."""

from __future__ import annotations

import httpx

from sinas_common.errors import FieldViolation, NotFound, PayloadTooLarge, SchemaViolation
from sinas_common.jsoncodec import load_json
from sinas_common.timeconv import to_timestamp, utcnow
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

BATCH_PATH = "/functions/tools/greet/execute/batch"


async def test_batch_submit_forwards_every_input_and_answers_queued(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_batch",
        pb.SubmitBatchResponse(batch_id="b1", execution_ids=["e0", "e1"], total=2),
    )
    response = await client.post(
        BATCH_PATH,
        json={
            "inputs": [{"n": 2**60}, {"n": 1}],
            "trigger_id_prefix": "nightly",
            "delay_seconds": 5,
            "callback_url": "https://app.example/child",
            "batch_callback_url": "https://app.example/batch",
        },
        headers={"Idempotency-Key": "k-1"},
    )
    assert response.status_code == 202
    assert response.json() == {
        "batch_id": "b1",
        "execution_ids": ["e0", "e1"],
        "total": 2,
        "status": "queued",
    }
    (call,) = scheduler.calls_to("submit_batch")
    request = call.request
    assert isinstance(request, pb.SubmitBatchRequest)
    assert (request.namespace, request.name) == ("tools", "greet")
    assert [load_json(raw) for raw in request.inputs_json] == [{"n": 2**60}, {"n": 1}]
    assert (request.trigger_id_prefix, request.delay_seconds) == ("nightly", 5)
    assert request.callback_url == "https://app.example/child"
    assert request.batch_callback_url == "https://app.example/batch"
    assert request.idempotency_key == "k-1"


async def test_batch_submit_errors(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    empty = await client.post(BATCH_PATH, json={"inputs": []})
    assert empty.status_code == 422
    assert scheduler.calls_to("submit_batch") == []

    scheduler.script(
        "submit_batch",
        SchemaViolation(
            "Input validation failed",
            violations=[FieldViolation(field="inputs[3].n", description="not an integer")],
        ),
        PayloadTooLarge("batch size 1001 exceeds MAX_BATCH_SIZE=1000"),
    )
    invalid = await client.post(BATCH_PATH, json={"inputs": [{}]})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "inputs", 3, "n"]
    too_many = await client.post(BATCH_PATH, json={"inputs": [{}]})
    assert too_many.status_code == 413
    assert "MAX_BATCH_SIZE=1000" in too_many.json()["detail"]


async def test_batch_document_and_drill_in(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    now = to_timestamp(utcnow())
    scheduler.script(
        "get_batch",
        pb.GetBatchResponse(
            batch=pb.Batch(
                batch_id="b1",
                kind="function",
                namespace="tools",
                name="greet",
                user_id="u1",
                total=3,
                queued=1,
                running=1,
                completed=1,
                status="running",
                created_at=now,
                batch_callback_url="https://app.example/batch",
            )
        ),
        NotFound("Batch not found"),
    )
    document = (await client.get("/batches/b1")).json()
    assert document["target"] == {"namespace": "tools", "name": "greet"}
    assert (document["total"], document["queued"], document["running"]) == (3, 1, 1)
    assert (document["completed"], document["failed"], document["cancelled"]) == (1, 0, 0)
    assert (document["status"], document["finished_at"]) == ("running", None)
    assert document["batch_callback_status"] is None
    missing = await client.get("/batches/other")
    assert (missing.status_code, missing.json()["detail"]) == (404, "Batch not found")

    scheduler.script(
        "list_batch_executions",
        pb.ListBatchExecutionsResponse(
            executions=[
                pb.Execution(
                    execution_id="e1",
                    function_name="greet",
                    status=pb.EXECUTION_STATUS_FAILED,
                    batch_index=1,
                    trigger_id="batch:1",
                    error="boom",
                )
            ],
            total=3,
            next_offset=2,
        ),
    )
    page = await client.get("/batches/b1/executions?status=Failed&limit=1&offset=1")
    assert page.status_code == 200
    body = page.json()
    assert (body["total"], body["next_offset"]) == (3, 2)
    (item,) = body["executions"]
    assert (item["execution_id"], item["index"], item["status"]) == ("e1", 1, "failed")
    assert (item["trigger_id"], item["error"]) == ("batch:1", "boom")
    (call,) = scheduler.calls_to("list_batch_executions")
    request = call.request
    assert isinstance(request, pb.ListBatchExecutionsRequest)
    assert (request.batch_id, request.status) == ("b1", pb.EXECUTION_STATUS_FAILED)
    assert (request.limit, request.offset) == (1, 1)

    bad = await client.get("/batches/b1/executions?status=sleeping")
    assert bad.status_code == 422


async def test_list_batches(client: httpx.AsyncClient, scheduler: RecordingSchedulerClient) -> None:
    scheduler.script(
        "list_batches",
        pb.ListBatchesResponse(
            batches=[
                pb.Batch(batch_id="b2", kind="function", status="completed", total=1, completed=1),
                pb.Batch(batch_id="b1", kind="function", status="queued", total=1, queued=1),
            ]
        ),
    )
    listed = await client.get("/batches?limit=5")
    assert [(b["batch_id"], b["status"]) for b in listed.json()] == [
        ("b2", "completed"),
        ("b1", "queued"),
    ]
    (call,) = scheduler.calls_to("list_batches")
    assert isinstance(call.request, pb.ListBatchesRequest)
    assert call.request.limit == 5

"""The gRPC adapter of the scheduler port against an in-process WorkerService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from sinas_common.errors import ServiceUnavailable
from sinas_common.grpc_client import call_with_retry, open_channel
from sinas_common.grpc_server import GrpcServer
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.timeconv import utcnow
from sinas_devstack.pytest_plugin import InternalTls
from sinas_executor.models import (
    AwaitingInput,
    ClaimItem,
    ExecutionOutcome,
    HeldAttempt,
    OutcomeStatus,
    ResumedInput,
)
from sinas_executor.scheduler_client import GrpcSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc


class RecordingWorkerService(scheduler_pb2_grpc.WorkerServiceServicer):
    """Answers claims with one claimed and one skipped execution; records every request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.unavailable_heartbeats = 0

    async def ClaimExecutions(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        first, second = request.items
        return scheduler_pb2.ClaimExecutionsResponse(
            claimed=[
                scheduler_pb2.ClaimedExecution(
                    execution_id=first.execution_id,
                    attempt=first.delivery_attempt,
                    user_id="u1",
                    function_id="f1",
                    function_version=4,
                    input_json=dump_json({"big": 2**63 + 1, "f": 1.1}),
                    access_token="tok",
                )
            ],
            skipped_execution_ids=[second.execution_id],
            functions=[
                scheduler_pb2.FunctionVersion(
                    function_id="f1",
                    version=4,
                    code="def handler(i, c): return i",
                    input_schema_json=dump_json({"type": "object"}),
                    timeout_seconds=9,
                )
            ],
        )

    async def CompleteExecutions(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return scheduler_pb2.CompleteExecutionsResponse(
            applied_execution_ids=[o.execution_id for o in request.outcomes]
        )

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if self.unavailable_heartbeats:
            self.unavailable_heartbeats -= 1
            raise ServiceUnavailable()
        return scheduler_pb2.HeartbeatResponse(
            cancelled_execution_ids=["gone"],
            resumed=[
                scheduler_pb2.ResumedInput(
                    execution_id="paused", input_json=dump_json({"n": 2**64}), round=2
                )
            ],
        )

    async def ReportAwaitingInput(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return scheduler_pb2.ReportAwaitingInputResponse(
            paused_execution_ids=[i.execution_id for i in request.items if i.prompt != "late"]
        )


@pytest.fixture
async def service(
    internal_tls: InternalTls,
) -> AsyncIterator[tuple[RecordingWorkerService, GrpcSchedulerClient]]:
    servicer = RecordingWorkerService()
    server = GrpcServer(
        bind="127.0.0.1:0",
        registrars=[lambda s: scheduler_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, s)],
        service_names=["sinas.scheduler.v1.WorkerService"],
        tls=internal_tls("scheduler"),
    )
    await server.start()
    channel: grpc.aio.Channel = open_channel(
        f"127.0.0.1:{server.port}", tls=internal_tls("executor")
    )
    yield servicer, GrpcSchedulerClient(channel, timeout_seconds=10)
    await channel.close()
    await server.stop(1)


async def test_claim_converts_both_ways(
    service: tuple[RecordingWorkerService, GrpcSchedulerClient],
) -> None:
    servicer, client = service
    result = await client.claim_executions(
        "w1",
        [
            ClaimItem(execution_id="a", delivery_attempt=3),
            ClaimItem(execution_id="b", delivery_attempt=1),
        ],
    )
    (request,) = servicer.requests
    assert request.worker_id == "w1"
    assert [(i.execution_id, i.delivery_attempt) for i in request.items] == [("a", 3), ("b", 1)]
    (claimed,) = result.claimed
    assert claimed.execution_id == "a" and claimed.attempt == 3
    assert claimed.input_data == {"big": 2**63 + 1, "f": 1.1}
    assert result.skipped_execution_ids == ("b",)
    (function,) = result.functions
    assert function.input_schema == {"type": "object"} and function.output_schema == {}
    assert function.timeout_seconds == 9


async def test_complete_sends_outputs_exactly(
    service: tuple[RecordingWorkerService, GrpcSchedulerClient],
) -> None:
    servicer, client = service
    done = utcnow()
    applied = await client.complete_executions(
        "w1",
        [
            ExecutionOutcome(
                execution_id="a",
                attempt=2,
                status=OutcomeStatus.COMPLETED,
                output={"n": 2**70},
                completed_at=done,
            ),
            ExecutionOutcome(
                execution_id="b",
                attempt=1,
                status=OutcomeStatus.FAILED,
                error="Function execution timed out after 1 seconds",
                timed_out=True,
                completed_at=done,
            ),
        ],
    )
    assert applied == ["a", "b"]
    (request,) = servicer.requests
    assert request.worker_id == "w1"
    ok, failed = request.outcomes
    assert ok.status == scheduler_pb2.EXECUTION_STATUS_COMPLETED
    assert load_json(ok.output_json) == {"n": 2**70}
    assert failed.status == scheduler_pb2.EXECUTION_STATUS_FAILED
    assert failed.timed_out and failed.output_json == b""
    assert ok.completed_at.ToDatetime().replace(microsecond=0) == done.replace(
        microsecond=0, tzinfo=None
    )


async def test_transient_errors_are_retried(
    service: tuple[RecordingWorkerService, GrpcSchedulerClient],
) -> None:
    servicer, client = service
    servicer.unavailable_heartbeats = 2
    held = [HeldAttempt(execution_id="a", attempt=1)]
    await call_with_retry(lambda: client.heartbeat("w1", held), first_delay=0.01)
    assert len(servicer.requests) == 3
    servicer.unavailable_heartbeats = 5
    with pytest.raises(ServiceUnavailable):
        await call_with_retry(lambda: client.heartbeat("w1", held), attempts=2, first_delay=0.01)


async def test_heartbeat_news_and_awaiting_input_convert(
    service: tuple[RecordingWorkerService, GrpcSchedulerClient],
) -> None:
    servicer, client = service
    news = await client.heartbeat(
        "w1",
        [
            HeldAttempt(execution_id="gone", attempt=1),
            HeldAttempt(execution_id="paused", attempt=3),
        ],
    )
    beat = servicer.requests[-1]
    assert beat.worker_id == "w1"
    assert [(a.execution_id, a.attempt) for a in beat.attempts] == [("gone", 1), ("paused", 3)]
    assert news.cancelled == ("gone",)
    assert news.resumed == (ResumedInput(execution_id="paused", input={"n": 2**64}, round=2),)

    paused = await client.report_awaiting_input(
        "w1",
        [
            AwaitingInput(execution_id="a", attempt=2, prompt="Name?", round=1),
            AwaitingInput(execution_id="b", attempt=1, prompt="late", round=3),
        ],
    )
    assert paused == ["a"]
    report = servicer.requests[-1]
    assert report.worker_id == "w1"
    assert [(i.execution_id, i.attempt, i.prompt, i.round) for i in report.items] == [
        ("a", 2, "Name?", 1),
        ("b", 1, "late", 3),
    ]

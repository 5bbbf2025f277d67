"""The scheduler port the executor needs, and its gRPC adapter over WorkerService."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

import grpc

from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.timeconv import to_timestamp
from sinas_executor.models import (
    AwaitingInput,
    ClaimedExecution,
    ClaimItem,
    ClaimResult,
    ExecutionOutcome,
    FunctionVersion,
    HeartbeatNews,
    OutcomeStatus,
    ResumedInput,
)
from sinas_proto.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STATUS_TO_PROTO = {
    OutcomeStatus.COMPLETED: scheduler_pb2.EXECUTION_STATUS_COMPLETED,
    OutcomeStatus.FAILED: scheduler_pb2.EXECUTION_STATUS_FAILED,
}


class SchedulerPort(Protocol):
    """What the executor asks of the scheduler; every call takes a whole batch."""

    async def claim_executions(self, worker_id: str, items: Sequence[ClaimItem]) -> ClaimResult: ...

    async def complete_executions(self, outcomes: Sequence[ExecutionOutcome]) -> list[str]: ...

    async def heartbeat(self, worker_id: str, execution_ids: Sequence[str]) -> HeartbeatNews: ...

    async def report_awaiting_input(self, items: Sequence[AwaitingInput]) -> list[str]: ...


def _function_from_proto(message: scheduler_pb2.FunctionVersion) -> FunctionVersion:
    return FunctionVersion(
        function_id=message.function_id,
        version=message.version,
        namespace=message.namespace,
        name=message.name,
        code=message.code,
        input_schema=load_json(message.input_schema_json, empty={}),
        output_schema=load_json(message.output_schema_json, empty={}),
        timeout_seconds=message.timeout_seconds,
    )


def _claimed_from_proto(message: scheduler_pb2.ClaimedExecution) -> ClaimedExecution:
    return ClaimedExecution(
        execution_id=message.execution_id,
        attempt=message.attempt,
        user_id=message.user_id,
        user_email=message.user_email,
        function_id=message.function_id,
        function_version=message.function_version,
        input_data=load_json(message.input_json, empty={}),
        trigger_type=message.trigger_type,
        trigger_id=message.trigger_id,
        batch_id=message.batch_id,
        chat_id=message.chat_id,
        access_token=message.access_token,
        depth=message.depth,
    )


def _outcome_to_proto(outcome: ExecutionOutcome) -> scheduler_pb2.ExecutionOutcome:
    completed = outcome.status is OutcomeStatus.COMPLETED
    return scheduler_pb2.ExecutionOutcome(
        execution_id=outcome.execution_id,
        attempt=outcome.attempt,
        status=_STATUS_TO_PROTO[outcome.status],
        output_json=dump_json(outcome.output) if completed else b"",
        error=outcome.error,
        traceback=outcome.traceback,
        timed_out=outcome.timed_out,
        completed_at=to_timestamp(outcome.completed_at),
    )


class GrpcSchedulerClient:
    """SchedulerPort over the scheduler's WorkerService; every call has a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float = 30.0) -> None:
        self._stub = scheduler_pb2_grpc.WorkerServiceStub(channel)
        self._timeout = timeout_seconds

    async def claim_executions(self, worker_id: str, items: Sequence[ClaimItem]) -> ClaimResult:
        request = scheduler_pb2.ClaimExecutionsRequest(
            worker_id=worker_id,
            items=[
                scheduler_pb2.ClaimRequestItem(
                    execution_id=item.execution_id, delivery_attempt=item.delivery_attempt
                )
                for item in items
            ],
        )
        response: scheduler_pb2.ClaimExecutionsResponse = await invoke(
            self._stub.ClaimExecutions, request, timeout=self._timeout
        )
        return ClaimResult(
            claimed=tuple(_claimed_from_proto(c) for c in response.claimed),
            skipped_execution_ids=tuple(response.skipped_execution_ids),
            functions=tuple(_function_from_proto(f) for f in response.functions),
        )

    async def complete_executions(self, outcomes: Sequence[ExecutionOutcome]) -> list[str]:
        request = scheduler_pb2.CompleteExecutionsRequest(
            outcomes=[_outcome_to_proto(o) for o in outcomes]
        )
        response: scheduler_pb2.CompleteExecutionsResponse = await invoke(
            self._stub.CompleteExecutions, request, timeout=self._timeout
        )
        return list(response.applied_execution_ids)

    async def heartbeat(self, worker_id: str, execution_ids: Sequence[str]) -> HeartbeatNews:
        request = scheduler_pb2.HeartbeatRequest(
            worker_id=worker_id, execution_ids=list(execution_ids)
        )
        response: scheduler_pb2.HeartbeatResponse = await invoke(
            self._stub.Heartbeat, request, timeout=self._timeout
        )
        return HeartbeatNews(
            cancelled=tuple(response.cancelled_execution_ids),
            resumed=tuple(
                ResumedInput(
                    execution_id=r.execution_id,
                    input=load_json(r.input_json, empty=None),
                    round=r.round,
                )
                for r in response.resumed
            ),
        )

    async def report_awaiting_input(self, items: Sequence[AwaitingInput]) -> list[str]:
        request = scheduler_pb2.ReportAwaitingInputRequest(
            items=[
                scheduler_pb2.AwaitingInput(
                    execution_id=item.execution_id,
                    attempt=item.attempt,
                    prompt=item.prompt,
                    round=item.round,
                )
                for item in items
            ]
        )
        response: scheduler_pb2.ReportAwaitingInputResponse = await invoke(
            self._stub.ReportAwaitingInput, request, timeout=self._timeout
        )
        return list(response.paused_execution_ids)

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
    AgentTool,
    AwaitingInput,
    ChatMessage,
    ChildResult,
    ClaimedAgentRun,
    ClaimedExecution,
    ClaimItem,
    ClaimResult,
    ExecutionOutcome,
    FunctionVersion,
    HeartbeatNews,
    HeldAttempt,
    OutcomeStatus,
    ResumedInput,
    ToolCallRequest,
    ToolCallSubmission,
)
from sinas_proto.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STATUS_TO_PROTO = {
    OutcomeStatus.COMPLETED: scheduler_pb2.EXECUTION_STATUS_COMPLETED,
    OutcomeStatus.FAILED: scheduler_pb2.EXECUTION_STATUS_FAILED,
}


class SchedulerPort(Protocol):
    """What the executor asks of the scheduler; every call takes a whole batch. Each names
    the worker that claimed the attempts: the scheduler acts only on attempts it holds."""

    async def claim_executions(self, worker_id: str, items: Sequence[ClaimItem]) -> ClaimResult: ...

    async def complete_executions(
        self, worker_id: str, outcomes: Sequence[ExecutionOutcome]
    ) -> list[str]: ...

    async def release_executions(
        self, worker_id: str, attempts: Sequence[HeldAttempt]
    ) -> list[str]: ...

    async def heartbeat(self, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews: ...

    async def report_awaiting_input(
        self, worker_id: str, items: Sequence[AwaitingInput]
    ) -> list[str]: ...


class AgentSchedulerPort(Protocol):
    """What an agent run asks of the scheduler for its tool calls."""

    async def submit_tool_calls(
        self,
        execution_id: str,
        attempt: int,
        calls: Sequence[ToolCallRequest],
        *,
        worker_id: str,
    ) -> list[ToolCallSubmission]: ...

    async def wait_execution(
        self, execution_id: str, *, access_token: str, timeout_seconds: float
    ) -> ChildResult:
        """The execution after waiting up to `timeout_seconds`, as the token's user sees it."""
        ...


def _status_name(status: scheduler_pb2.ExecutionStatus.ValueType) -> str:
    # EXECUTION_STATUS_COMPLETED -> COMPLETED
    return scheduler_pb2.ExecutionStatus.Name(status).removeprefix("EXECUTION_STATUS_")


def message_from_proto(message: scheduler_pb2.ChatMessage) -> ChatMessage:
    tool_calls = load_json(message.tool_calls_json, empty=[])
    return ChatMessage(
        role=message.role,
        content=message.content,
        tool_calls=tuple(tool_calls) if isinstance(tool_calls, list) else (),
        tool_call_id=message.tool_call_id,
    )


def message_to_proto(message: ChatMessage) -> scheduler_pb2.ChatMessage:
    return scheduler_pb2.ChatMessage(
        role=message.role,
        content=message.content,
        tool_calls_json=dump_json(list(message.tool_calls)) if message.tool_calls else b"",
        tool_call_id=message.tool_call_id,
    )


def _agent_run_from_proto(message: scheduler_pb2.ClaimedAgentRun) -> ClaimedAgentRun:
    return ClaimedAgentRun(
        execution_id=message.execution_id,
        attempt=message.attempt,
        user_id=message.user_id,
        user_email=message.user_email,
        chat_id=message.chat_id,
        access_token=message.access_token,
        depth=message.depth,
        provider_base_url=message.provider_base_url,
        provider_api_key=message.provider_api_key,
        model=message.model,
        temperature=message.temperature if message.HasField("temperature") else None,
        max_tokens=message.max_tokens if message.HasField("max_tokens") else None,
        max_turns=message.max_turns,
        timeout_seconds=message.timeout_seconds,
        messages=tuple(message_from_proto(m) for m in message.messages),
        tools=tuple(
            AgentTool(
                namespace=t.namespace,
                name=t.name,
                description=t.description,
                input_schema=load_json(t.input_schema_json, empty=None),
                requires_approval=t.requires_approval,
            )
            for t in message.tools
        ),
        trigger_id=message.trigger_id,
        batch_id=message.batch_id,
    )


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
        new_messages=[message_to_proto(m) for m in outcome.new_messages],
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
    )


class GrpcSchedulerClient:
    """SchedulerPort and AgentSchedulerPort over the scheduler; every call has a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float = 30.0) -> None:
        self._stub = scheduler_pb2_grpc.WorkerServiceStub(channel)
        self._executions = scheduler_pb2_grpc.ExecutionServiceStub(channel)
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
            agent_runs=tuple(_agent_run_from_proto(r) for r in response.agent_runs),
        )

    async def release_executions(
        self, worker_id: str, attempts: Sequence[HeldAttempt]
    ) -> list[str]:
        request = scheduler_pb2.ReleaseExecutionsRequest(
            worker_id=worker_id,
            attempts=[
                scheduler_pb2.ReleasedAttempt(execution_id=a.execution_id, attempt=a.attempt)
                for a in attempts
            ],
        )
        response: scheduler_pb2.ReleaseExecutionsResponse = await invoke(
            self._stub.ReleaseExecutions, request, timeout=self._timeout
        )
        return list(response.released_execution_ids)

    async def complete_executions(
        self, worker_id: str, outcomes: Sequence[ExecutionOutcome]
    ) -> list[str]:
        request = scheduler_pb2.CompleteExecutionsRequest(
            worker_id=worker_id, outcomes=[_outcome_to_proto(o) for o in outcomes]
        )
        response: scheduler_pb2.CompleteExecutionsResponse = await invoke(
            self._stub.CompleteExecutions, request, timeout=self._timeout
        )
        return list(response.applied_execution_ids)

    async def heartbeat(self, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews:
        request = scheduler_pb2.HeartbeatRequest(
            worker_id=worker_id,
            attempts=[
                scheduler_pb2.HeldAttempt(execution_id=a.execution_id, attempt=a.attempt)
                for a in attempts
            ],
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

    async def report_awaiting_input(
        self, worker_id: str, items: Sequence[AwaitingInput]
    ) -> list[str]:
        request = scheduler_pb2.ReportAwaitingInputRequest(
            worker_id=worker_id,
            items=[
                scheduler_pb2.AwaitingInput(
                    execution_id=item.execution_id,
                    attempt=item.attempt,
                    prompt=item.prompt,
                    round=item.round,
                )
                for item in items
            ],
        )
        response: scheduler_pb2.ReportAwaitingInputResponse = await invoke(
            self._stub.ReportAwaitingInput, request, timeout=self._timeout
        )
        return list(response.paused_execution_ids)

    async def submit_tool_calls(
        self,
        execution_id: str,
        attempt: int,
        calls: Sequence[ToolCallRequest],
        *,
        worker_id: str,
    ) -> list[ToolCallSubmission]:
        request = scheduler_pb2.SubmitToolCallsRequest(
            worker_id=worker_id,
            execution_id=execution_id,
            attempt=attempt,
            calls=[
                scheduler_pb2.ToolCall(
                    tool_call_id=call.tool_call_id,
                    namespace=call.namespace,
                    name=call.name,
                    arguments_json=dump_json(call.arguments),
                )
                for call in calls
            ],
        )
        response: scheduler_pb2.SubmitToolCallsResponse = await invoke(
            self._stub.SubmitToolCalls, request, timeout=self._timeout
        )
        return [
            ToolCallSubmission(
                tool_call_id=s.tool_call_id,
                execution_id=s.execution_id,
                error=s.error,
                requires_approval=s.requires_approval,
            )
            for s in response.submissions
        ]

    async def wait_execution(
        self, execution_id: str, *, access_token: str, timeout_seconds: float
    ) -> ChildResult:
        request = scheduler_pb2.WaitExecutionRequest(
            execution_id=execution_id, timeout_seconds=timeout_seconds
        )
        response: scheduler_pb2.WaitExecutionResponse = await invoke(
            self._executions.WaitExecution,
            request,
            metadata=[("authorization", f"Bearer {access_token}")],
            # The server holds the call for up to the wait; the deadline covers both.
            timeout=timeout_seconds + self._timeout,
        )
        execution = response.execution
        return ChildResult(
            execution_id=execution.execution_id,
            status=_status_name(execution.status),
            finished=response.finished,
            output=load_json(execution.output_json, empty=None),
            error=execution.error,
        )

"""Protobuf ⇄ domain conversions; the only module besides server.py that knows the proto types."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sinas_common.errors import FieldViolation, InvalidArgument
from sinas_common.jsoncodec import dump_json
from sinas_common.timeconv import from_timestamp, to_timestamp
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.agent_convert import agent_run_to_proto, messages_from_proto
from sinas_scheduler.models import (
    ApiKeyRecord,
    AwaitingInput,
    Batch,
    BatchPage,
    CallbackClaim,
    CallbackOutcome,
    ClaimItem,
    ClaimResult,
    Execution,
    ExecutionStatus,
    Function,
    FunctionChanges,
    FunctionSpec,
    FunctionVersion,
    HeartbeatNews,
    HeldAttempt,
    IssuedApiKey,
    Outcome,
    ReleasedAttempt,
    Role,
    User,
)
from sinas_scheduler.validation import parse_json_field

_STATUS_TO_PROTO: dict[ExecutionStatus, pb.ExecutionStatus.ValueType] = {
    ExecutionStatus.PENDING: pb.EXECUTION_STATUS_PENDING,
    ExecutionStatus.RUNNING: pb.EXECUTION_STATUS_RUNNING,
    ExecutionStatus.AWAITING_INPUT: pb.EXECUTION_STATUS_AWAITING_INPUT,
    ExecutionStatus.COMPLETED: pb.EXECUTION_STATUS_COMPLETED,
    ExecutionStatus.FAILED: pb.EXECUTION_STATUS_FAILED,
    ExecutionStatus.CANCELLED: pb.EXECUTION_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO = {value: key for key, value in _STATUS_TO_PROTO.items()}


def status_to_proto(status: ExecutionStatus) -> pb.ExecutionStatus.ValueType:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: pb.ExecutionStatus.ValueType, field: str) -> ExecutionStatus | None:
    """None for UNSPECIFIED; an unknown number is an invalid argument."""
    if value == pb.EXECUTION_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUS_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgument(
            "Unknown execution status",
            violations=[FieldViolation(field=field, description="unknown status")],
        ) from None


def _set_time(message: Any, field: str, value: datetime | None) -> None:
    stamp = to_timestamp(value)
    if stamp is not None:
        getattr(message, field).CopyFrom(stamp)


def _json(value: Any) -> bytes:
    return b"" if value is None else dump_json(value)


def user_to_proto(user: User) -> pb.User:
    message = pb.User(id=user.id, email=user.email, roles=list(user.roles))
    _set_time(message, "created_at", user.created_at)
    _set_time(message, "last_login_at", user.last_login_at)
    return message


def role_to_proto(role: Role) -> pb.Role:
    return pb.Role(id=role.id, name=role.name, permissions=list(role.permissions))


def api_key_to_proto(issued: IssuedApiKey) -> pb.CreateApiKeyResponse:
    message = pb.CreateApiKeyResponse(
        id=issued.record.id,
        name=issued.record.name,
        user_id=issued.record.user_id,
        key=issued.key,
        prefix=issued.record.prefix,
    )
    _set_time(message, "created_at", issued.record.created_at)
    _set_time(message, "expires_at", issued.record.expires_at)
    return message


def api_key_record_to_proto(record: ApiKeyRecord) -> pb.ApiKey:
    message = pb.ApiKey(
        id=record.id, name=record.name, user_id=record.user_id, prefix=record.prefix
    )
    _set_time(message, "created_at", record.created_at)
    _set_time(message, "last_used_at", record.last_used_at)
    _set_time(message, "expires_at", record.expires_at)
    _set_time(message, "revoked_at", record.revoked_at)
    return message


def key_expiry(request: pb.CreateApiKeyRequest) -> datetime | None:
    return from_timestamp(request.expires_at, present=request.HasField("expires_at"))


def function_to_proto(function: Function) -> pb.Function:
    spec = function.spec
    message = pb.Function(
        id=function.id,
        namespace=function.namespace,
        name=function.name,
        description=spec.description,
        code=spec.code,
        input_schema_json=_json(spec.input_schema),
        output_schema_json=_json(spec.output_schema),
        timeout_seconds=spec.timeout_seconds,
        requires_approval=spec.requires_approval,
        version=function.version,
        owner_user_id=function.owner_user_id,
    )
    _set_time(message, "created_at", function.created_at)
    _set_time(message, "updated_at", function.updated_at)
    return message


def spec_from_create(request: pb.CreateFunctionRequest, default_timeout: int) -> FunctionSpec:
    return FunctionSpec(
        description=request.description,
        code=request.code,
        input_schema=parse_json_field("input_schema", request.input_schema_json, empty={}),
        output_schema=parse_json_field("output_schema", request.output_schema_json, empty={}),
        timeout_seconds=(
            request.timeout_seconds if request.HasField("timeout_seconds") else default_timeout
        ),
        requires_approval=request.requires_approval,
    )


def changes_from_update(request: pb.UpdateFunctionRequest) -> FunctionChanges:
    def present(field: str) -> bool:
        return request.HasField(field)  # type: ignore[arg-type]

    return FunctionChanges(
        description=request.description if present("description") else None,
        code=request.code if present("code") else None,
        input_schema=(
            parse_json_field("input_schema", request.input_schema_json, empty={})
            if present("input_schema_json")
            else None
        ),
        output_schema=(
            parse_json_field("output_schema", request.output_schema_json, empty={})
            if present("output_schema_json")
            else None
        ),
        timeout_seconds=request.timeout_seconds if present("timeout_seconds") else None,
        requires_approval=request.requires_approval if present("requires_approval") else None,
    )


def execution_to_proto(execution: Execution) -> pb.Execution:
    message = pb.Execution(
        execution_id=execution.id,
        user_id=execution.user_id,
        kind=execution.kind,
        namespace=execution.namespace,
        function_name=execution.name,
        function_version=execution.function_version or 0,
        status=status_to_proto(execution.status),
        input_json=dump_json(execution.input),
        output_json=_json(execution.output),
        error=execution.error or "",
        traceback=execution.traceback or "",
        trigger_type=execution.trigger_type,
        trigger_id=execution.trigger_id,
        batch_id=execution.batch_id or "",
        chat_id=execution.chat_id or "",
        attempts=execution.attempts,
        callback_url=execution.callback_url or "",
        callback_status=execution.callback_status or "",
        callback_error=execution.callback_error or "",
        timed_out=execution.timed_out,
        depth=execution.depth,
        input_prompt=execution.input_prompt or "",
        parent_execution_id=execution.parent_execution_id or "",
    )
    if execution.prompt_tokens is not None:
        message.prompt_tokens = execution.prompt_tokens
    if execution.completion_tokens is not None:
        message.completion_tokens = execution.completion_tokens
    _set_time(message, "input_deadline_at", execution.input_deadline_at)
    if execution.duration_ms is not None:
        message.duration_ms = execution.duration_ms
    if execution.callback_response_code is not None:
        message.callback_response_code = execution.callback_response_code
    if execution.batch_index is not None:
        message.batch_index = execution.batch_index
    _set_time(message, "created_at", execution.created_at)
    _set_time(message, "run_at", execution.run_at)
    _set_time(message, "started_at", execution.started_at)
    _set_time(message, "completed_at", execution.completed_at)
    _set_time(message, "callback_attempted_at", execution.callback_attempted_at)
    return message


def claim_items(request: pb.ClaimExecutionsRequest) -> list[ClaimItem]:
    return [
        ClaimItem(execution_id=item.execution_id, delivery_attempt=item.delivery_attempt)
        for item in request.items
    ]


def released_attempts(request: pb.ReleaseExecutionsRequest) -> list[ReleasedAttempt]:
    return [
        ReleasedAttempt(execution_id=item.execution_id, attempt=item.attempt)
        for item in request.attempts
    ]


def held_attempts(request: pb.HeartbeatRequest) -> list[HeldAttempt]:
    return [HeldAttempt(execution_id=a.execution_id, attempt=a.attempt) for a in request.attempts]


def function_version_to_proto(version: FunctionVersion) -> pb.FunctionVersion:
    return pb.FunctionVersion(
        function_id=version.function_id,
        version=version.version,
        namespace=version.namespace,
        name=version.name,
        code=version.code,
        input_schema_json=_json(version.input_schema),
        output_schema_json=_json(version.output_schema),
        timeout_seconds=version.timeout_seconds,
    )


def claim_result_to_proto(result: ClaimResult) -> pb.ClaimExecutionsResponse:
    return pb.ClaimExecutionsResponse(
        claimed=[
            pb.ClaimedExecution(
                execution_id=c.row.execution_id,
                attempt=c.row.attempt,
                user_id=c.row.user_id,
                user_email=c.row.user_email,
                function_id=c.row.function_id or "",
                function_version=c.row.function_version or 0,
                input_json=dump_json(c.row.input),
                trigger_type=c.row.trigger_type,
                trigger_id=c.row.trigger_id,
                batch_id=c.row.batch_id or "",
                chat_id=c.row.chat_id or "",
                access_token=c.access_token,
                depth=c.row.depth,
            )
            for c in result.claimed
        ],
        skipped_execution_ids=list(result.skipped),
        functions=[function_version_to_proto(f) for f in result.functions],
        agent_runs=[agent_run_to_proto(run) for run in result.agent_runs],
    )


def outcomes_from_proto(items: Sequence[pb.ExecutionOutcome]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for index, item in enumerate(items):
        status = status_from_proto(item.status, f"outcomes[{index}].status")
        if status is None:
            raise InvalidArgument(
                "An outcome needs a status",
                violations=[
                    FieldViolation(field=f"outcomes[{index}].status", description="required")
                ],
            )
        outcomes.append(
            Outcome(
                execution_id=item.execution_id,
                attempt=item.attempt,
                status=status,
                output=parse_json_field(
                    f"outcomes[{index}].output_json", item.output_json, empty=None
                ),
                error=item.error or None,
                traceback=item.traceback or None,
                timed_out=item.timed_out,
                completed_at=from_timestamp(
                    item.completed_at, present=item.HasField("completed_at")
                ),
                new_messages=messages_from_proto(
                    item.new_messages, f"outcomes[{index}].new_messages"
                ),
                prompt_tokens=item.prompt_tokens if item.HasField("prompt_tokens") else None,
                completion_tokens=(
                    item.completion_tokens if item.HasField("completion_tokens") else None
                ),
            )
        )
    return outcomes


def callback_claim_to_proto(
    claim: CallbackClaim, batch_claim: CallbackClaim | None = None
) -> pb.ClaimCallbacksResponse:
    batch_deliveries = () if batch_claim is None else batch_claim.deliveries
    return pb.ClaimCallbacksResponse(
        deliveries=[
            pb.CallbackDelivery(
                execution_id=d.execution_id,
                callback_url=d.callback_url,
                webhook_id=d.webhook_id,
                access_token=d.access_token,
                payload_json=d.payload,
                batch_id=d.batch_id,
            )
            for d in (*claim.deliveries, *batch_deliveries)
        ],
        skipped_execution_ids=list(claim.skipped),
        skipped_batch_ids=[] if batch_claim is None else list(batch_claim.skipped),
    )


def callback_outcomes_from_proto(
    request: pb.RecordCallbackOutcomesRequest,
) -> list[CallbackOutcome]:
    return [
        CallbackOutcome(
            execution_id=item.execution_id,
            sent=item.sent,
            response_code=item.response_code if item.HasField("response_code") else None,
            error=item.error or None,
            attempted_at=from_timestamp(item.attempted_at, present=item.HasField("attempted_at")),
            batch_id=item.batch_id,
        )
        for item in request.outcomes
    ]


def batch_to_proto(batch: Batch) -> pb.Batch:
    counts = batch.counts
    message = pb.Batch(
        batch_id=batch.id,
        kind=batch.kind,
        namespace=batch.namespace,
        name=batch.name,
        user_id=batch.user_id,
        total=batch.total,
        queued=counts.queued,
        running=counts.running,
        completed=counts.completed,
        failed=counts.failed,
        cancelled=counts.cancelled,
        status=batch.status.value,
        trigger_id_prefix=batch.trigger_id_prefix or "",
        callback_url=batch.callback_url or "",
        batch_callback_url=batch.batch_callback_url or "",
        batch_callback_status=batch.batch_callback_status or "",
        batch_callback_error=batch.batch_callback_error or "",
        prompt_tokens=counts.prompt_tokens,
        completion_tokens=counts.completion_tokens,
    )
    if batch.batch_callback_response_code is not None:
        message.batch_callback_response_code = batch.batch_callback_response_code
    _set_time(message, "created_at", batch.created_at)
    _set_time(message, "started_at", batch.started_at)
    _set_time(message, "finished_at", batch.finished_at)
    _set_time(message, "cancelled_at", batch.cancelled_at)
    _set_time(message, "batch_callback_attempted_at", batch.batch_callback_attempted_at)
    return message


def batch_page_to_proto(page: BatchPage) -> pb.ListBatchExecutionsResponse:
    response = pb.ListBatchExecutionsResponse(
        executions=[execution_to_proto(execution) for execution in page.executions],
        total=page.total,
    )
    if page.next_offset is not None:
        response.next_offset = page.next_offset
    return response


def heartbeat_news_to_proto(news: HeartbeatNews) -> pb.HeartbeatResponse:
    return pb.HeartbeatResponse(
        cancelled_execution_ids=list(news.cancelled),
        resumed=[
            pb.ResumedInput(
                execution_id=r.execution_id, input_json=dump_json(r.input), round=r.round
            )
            for r in news.resumed
        ],
    )


def awaiting_input_from_proto(request: pb.ReportAwaitingInputRequest) -> list[AwaitingInput]:
    return [
        AwaitingInput(
            execution_id=item.execution_id,
            attempt=item.attempt,
            prompt=item.prompt,
            round=item.round,
        )
        for item in request.items
    ]

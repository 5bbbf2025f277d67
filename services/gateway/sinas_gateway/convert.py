"""Protobuf ⇄ REST documents; the only gateway module besides the client that reads protos."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from sinas_common.errors import FieldViolation, InvalidArgument, SchemaViolation, SinasError
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.timeconv import from_timestamp, to_timestamp
from sinas_gateway.schemas import (
    DEFAULT_TRIGGER_ID,
    ApiKeyCreate,
    ApiKeyDocument,
    ApiKeySummary,
    AsyncExecuteRequest,
    BatchCancelResponse,
    BatchDocument,
    BatchExecuteRequest,
    BatchExecutionItem,
    BatchExecutionsPage,
    BatchStatusName,
    BatchTarget,
    CallbackStatusName,
    CancelledExecution,
    ContinueRequest,
    ExecutionDocument,
    ExecutionStatusName,
    FunctionCreate,
    FunctionDocument,
    FunctionUpdate,
    JwksDocument,
    MeResponse,
    RoleCreate,
    RoleDocument,
    SyncExecuteResponse,
    UserCreate,
    UserDocument,
)
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

_STATUS_PREFIX = "EXECUTION_STATUS_"


def encode_json(field: str, value: Any) -> bytes:
    """JSON bytes for the scheduler; NaN and infinities (which Python's parser lets in) are 422."""
    try:
        return dump_json(value)
    except ValueError as exc:
        raise SchemaViolation(
            violations=[FieldViolation(field=field, description=f"Not valid JSON: {exc}")]
        ) from exc


def optional_text(value: str) -> str | None:
    """Proto strings can't be null; an empty one means the field is unset."""
    return value or None


_CALLBACK_STATUSES: dict[str, CallbackStatusName] = {
    "pending": "pending",
    "in_flight": "in_flight",
    "sent": "sent",
    "failed": "failed",
}


def _callback_status(value: str) -> CallbackStatusName | None:
    """None when the execution has no callback; the scheduler stores only the four states."""
    return _CALLBACK_STATUSES[value] if value else None


def optional_time(message: Message, field: str) -> datetime | None:
    stamp: Timestamp = getattr(message, field)
    return from_timestamp(stamp, present=message.HasField(field))


def optional_int(message: Message, field: str) -> int | None:
    return int(getattr(message, field)) if message.HasField(field) else None


# --- executions --------------------------------------------------------------------------


def status_name(value: pb.ExecutionStatus.ValueType) -> ExecutionStatusName:
    if value == pb.EXECUTION_STATUS_UNSPECIFIED:
        raise SinasError("The scheduler returned an execution without a status")
    return ExecutionStatusName(pb.ExecutionStatus.Name(value).removeprefix(_STATUS_PREFIX))


def status_value(name: ExecutionStatusName | None) -> pb.ExecutionStatus.ValueType:
    if name is None:
        return pb.EXECUTION_STATUS_UNSPECIFIED
    return pb.ExecutionStatus.Value(_STATUS_PREFIX + name.value)


def submit_request(
    namespace: str, name: str, body: AsyncExecuteRequest, *, idempotency_key: str = ""
) -> pb.SubmitExecutionRequest:
    request = pb.SubmitExecutionRequest(
        namespace=namespace,
        name=name,
        input_json=encode_json("input", body.input),
        trigger_id=body.trigger_id or DEFAULT_TRIGGER_ID,
        callback_url=body.callback_url or "",
        idempotency_key=idempotency_key,
    )
    if body.delay_seconds:
        request.delay_seconds = body.delay_seconds
    return request


def wait_request(execution_id: str, timeout_seconds: int) -> pb.WaitExecutionRequest:
    return pb.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=timeout_seconds)


def sync_response(
    execution_id: str, waited: pb.WaitExecutionResponse, timeout_seconds: int
) -> SyncExecuteResponse:
    """The sync execute answer: success with the output, error with its message, or timeout."""
    execution = waited.execution
    if not waited.finished:
        return SyncExecuteResponse(
            status="timeout",
            execution_id=execution_id,
            result=None,
            error=(
                f"Execution still running after {timeout_seconds} seconds; "
                f"poll GET /executions/{execution_id} for its result"
            ),
        )
    if execution.status == pb.EXECUTION_STATUS_COMPLETED:
        return SyncExecuteResponse(
            status="success",
            execution_id=execution_id,
            result=load_json(execution.output_json),
            error=None,
        )
    status = status_name(execution.status)
    return SyncExecuteResponse(
        status="error",
        execution_id=execution_id,
        result=None,
        error=execution.error or f"Execution ended {status.value}",
    )


def execution_document(execution: pb.Execution) -> ExecutionDocument:
    return ExecutionDocument(
        execution_id=execution.execution_id,
        namespace=execution.namespace,
        function_name=execution.function_name,
        status=status_name(execution.status),
        input_data=load_json(execution.input_json),
        output_data=load_json(execution.output_json),
        error=optional_text(execution.error),
        traceback=optional_text(execution.traceback),
        trigger_type=optional_text(execution.trigger_type),
        trigger_id=optional_text(execution.trigger_id),
        batch_id=optional_text(execution.batch_id),
        chat_id=optional_text(execution.chat_id),
        created_at=optional_time(execution, "created_at"),
        started_at=optional_time(execution, "started_at"),
        completed_at=optional_time(execution, "completed_at"),
        duration_ms=optional_int(execution, "duration_ms"),
        attempts=execution.attempts,
        callback_url=optional_text(execution.callback_url),
        callback_status=_callback_status(execution.callback_status),
        callback_response_code=optional_int(execution, "callback_response_code"),
        callback_error=optional_text(execution.callback_error),
        callback_attempted_at=optional_time(execution, "callback_attempted_at"),
        input_prompt=optional_text(execution.input_prompt),
        input_deadline_at=optional_time(execution, "input_deadline_at"),
        kind=optional_text(execution.kind),
        prompt_tokens=optional_int(execution, "prompt_tokens"),
        completion_tokens=optional_int(execution, "completion_tokens"),
        parent_execution_id=optional_text(execution.parent_execution_id),
    )


def continue_request(execution_id: str, body: ContinueRequest) -> pb.ContinueExecutionRequest:
    return pb.ContinueExecutionRequest(
        execution_id=execution_id, input_json=encode_json("input", body.input)
    )


def cancel_execution_request(execution_id: str) -> pb.CancelExecutionRequest:
    return pb.CancelExecutionRequest(execution_id=execution_id)


def cancelled_execution(response: pb.CancelExecutionResponse) -> CancelledExecution:
    document = execution_document(response.execution)
    return CancelledExecution(**document.model_dump(), cancelled=response.cancelled)


def cancel_batch_request(batch_id: str) -> pb.CancelBatchRequest:
    return pb.CancelBatchRequest(batch_id=batch_id)


def batch_cancel_document(response: pb.CancelBatchResponse) -> BatchCancelResponse:
    return BatchCancelResponse(
        batch_id=response.batch_id,
        status=cast(BatchStatusName, response.status),
        cancelled_children=response.cancelled_children,
    )


def get_execution_request(execution_id: str) -> pb.GetExecutionRequest:
    return pb.GetExecutionRequest(execution_id=execution_id)


def list_request(
    *,
    function_name: str | None,
    status: ExecutionStatusName | None,
    trigger_id: str | None,
    batch_id: str | None,
    limit: int,
    offset: int,
) -> pb.ListExecutionsRequest:
    return pb.ListExecutionsRequest(
        function_name=function_name or "",
        status=status_value(status),
        trigger_id=trigger_id or "",
        batch_id=batch_id or "",
        limit=limit,
        offset=offset,
    )


# --- identity ----------------------------------------------------------------------------


def get_me_request() -> pb.GetMeRequest:
    return pb.GetMeRequest()


def get_jwks_request() -> pb.GetJwksRequest:
    return pb.GetJwksRequest()


def create_role_request(body: RoleCreate) -> pb.CreateRoleRequest:
    return pb.CreateRoleRequest(name=body.name, permissions=body.permissions)


def create_user_request(body: UserCreate) -> pb.CreateUserRequest:
    return pb.CreateUserRequest(email=body.email, roles=body.roles)


def create_api_key_request(body: ApiKeyCreate) -> pb.CreateApiKeyRequest:
    return pb.CreateApiKeyRequest(
        name=body.name, user_id=body.user_id or "", expires_at=to_timestamp(body.expires_at)
    )


def list_api_keys_request(user_id: str | None) -> pb.ListApiKeysRequest:
    return pb.ListApiKeysRequest(user_id=user_id or "")


def revoke_api_key_request(key_id: str) -> pb.RevokeApiKeyRequest:
    return pb.RevokeApiKeyRequest(id=key_id)


def me_document(user: pb.User) -> MeResponse:
    return MeResponse(
        id=user.id,
        email=user.email,
        roles=list(user.roles),
        created_at=optional_time(user, "created_at"),
        last_login_at=optional_time(user, "last_login_at"),
    )


def jwks_document(response: pb.GetJwksResponse) -> JwksDocument:
    return JwksDocument.model_validate(load_json(response.jwks_json, empty={"keys": []}))


def role_document(role: pb.Role) -> RoleDocument:
    return RoleDocument(id=role.id, name=role.name, permissions=list(role.permissions))


def user_document(user: pb.User) -> UserDocument:
    return UserDocument(id=user.id, email=user.email, roles=list(user.roles))


def api_key_document(response: pb.CreateApiKeyResponse) -> ApiKeyDocument:
    return ApiKeyDocument(
        id=response.id,
        name=response.name,
        user_id=response.user_id,
        key=response.key,
        created_at=optional_time(response, "created_at"),
        expires_at=optional_time(response, "expires_at"),
        prefix=response.prefix,
    )


def api_key_summary(api_key: pb.ApiKey) -> ApiKeySummary:
    return ApiKeySummary(
        id=api_key.id,
        name=api_key.name,
        user_id=api_key.user_id,
        prefix=api_key.prefix,
        created_at=optional_time(api_key, "created_at"),
        last_used_at=optional_time(api_key, "last_used_at"),
        expires_at=optional_time(api_key, "expires_at"),
        revoked_at=optional_time(api_key, "revoked_at"),
    )


# --- functions ---------------------------------------------------------------------------


def get_function_request(namespace: str, name: str) -> pb.GetFunctionRequest:
    return pb.GetFunctionRequest(namespace=namespace, name=name)


def delete_function_request(namespace: str, name: str) -> pb.DeleteFunctionRequest:
    return pb.DeleteFunctionRequest(namespace=namespace, name=name)


def create_function_request(body: FunctionCreate) -> pb.CreateFunctionRequest:
    request = pb.CreateFunctionRequest(
        namespace=body.namespace,
        name=body.name,
        description=body.description,
        code=body.code,
        input_schema_json=encode_json("input_schema", body.input_schema),
        output_schema_json=encode_json("output_schema", body.output_schema),
        requires_approval=body.requires_approval,
    )
    if body.timeout is not None:
        request.timeout_seconds = body.timeout
    return request


def update_function_request(
    namespace: str, name: str, body: FunctionUpdate
) -> pb.UpdateFunctionRequest:
    """An update that sets only the fields the body gives; a rename is refused."""
    renamed = [
        FieldViolation(field=field, description="A function can't be renamed; omit this field")
        for field, given, current in (
            ("namespace", body.namespace, namespace),
            ("name", body.name, name),
        )
        if given is not None and given != current
    ]
    if renamed:
        raise InvalidArgument("A function can't be renamed", violations=renamed)
    request = pb.UpdateFunctionRequest(namespace=namespace, name=name)
    if body.description is not None:
        request.description = body.description
    if body.code is not None:
        request.code = body.code
    if body.input_schema is not None:
        request.input_schema_json = encode_json("input_schema", body.input_schema)
    if body.output_schema is not None:
        request.output_schema_json = encode_json("output_schema", body.output_schema)
    if body.timeout is not None:
        request.timeout_seconds = body.timeout
    if body.requires_approval is not None:
        request.requires_approval = body.requires_approval
    return request


def function_document(function: pb.Function) -> FunctionDocument:
    return FunctionDocument(
        id=function.id,
        namespace=function.namespace,
        name=function.name,
        description=function.description,
        code=function.code,
        input_schema=load_json(function.input_schema_json),
        output_schema=load_json(function.output_schema_json),
        timeout=function.timeout_seconds or None,
        requires_approval=function.requires_approval,
        version=function.version,
        created_at=optional_time(function, "created_at"),
        updated_at=optional_time(function, "updated_at"),
    )


# --- batches -----------------------------------------------------------------------------


def submit_batch_request(
    namespace: str, name: str, body: BatchExecuteRequest, *, idempotency_key: str = ""
) -> pb.SubmitBatchRequest:
    request = pb.SubmitBatchRequest(
        namespace=namespace,
        name=name,
        inputs_json=[
            encode_json(f"inputs[{index}]", value) for index, value in enumerate(body.inputs)
        ],
        trigger_id_prefix=body.trigger_id_prefix or "",
        callback_url=body.callback_url or "",
        batch_callback_url=body.batch_callback_url or "",
        idempotency_key=idempotency_key,
    )
    if body.delay_seconds:
        request.delay_seconds = body.delay_seconds
    return request


_BATCH_STATUSES: dict[str, BatchStatusName] = {
    "queued": "queued",
    "running": "running",
    "completed": "completed",
    "partial": "partial",
    "failed": "failed",
    "cancelled": "cancelled",
}


def batch_document(batch: pb.Batch) -> BatchDocument:
    return BatchDocument(
        batch_id=batch.batch_id,
        kind=batch.kind,
        target=BatchTarget(namespace=batch.namespace, name=batch.name),
        user_id=batch.user_id,
        total=batch.total,
        queued=batch.queued,
        running=batch.running,
        completed=batch.completed,
        failed=batch.failed,
        cancelled=batch.cancelled,
        status=_BATCH_STATUSES[batch.status],
        created_at=optional_time(batch, "created_at"),
        started_at=optional_time(batch, "started_at"),
        finished_at=optional_time(batch, "finished_at"),
        cancelled_at=optional_time(batch, "cancelled_at"),
        trigger_id_prefix=optional_text(batch.trigger_id_prefix),
        callback_url=optional_text(batch.callback_url),
        batch_callback_url=optional_text(batch.batch_callback_url),
        batch_callback_status=_callback_status(batch.batch_callback_status),
        batch_callback_response_code=optional_int(batch, "batch_callback_response_code"),
        batch_callback_error=optional_text(batch.batch_callback_error),
        batch_callback_attempted_at=optional_time(batch, "batch_callback_attempted_at"),
        prompt_tokens=batch.prompt_tokens,
        completion_tokens=batch.completion_tokens,
    )


def batch_execution_item(execution: pb.Execution) -> BatchExecutionItem:
    return BatchExecutionItem(
        execution_id=execution.execution_id,
        index=optional_int(execution, "batch_index"),
        status=status_name(execution.status).value.lower(),
        function_name=execution.function_name,
        trigger_id=optional_text(execution.trigger_id),
        chat_id=optional_text(execution.chat_id),
        created_at=optional_time(execution, "created_at"),
        started_at=optional_time(execution, "started_at"),
        completed_at=optional_time(execution, "completed_at"),
        duration_ms=optional_int(execution, "duration_ms"),
        error=optional_text(execution.error),
    )


def batch_executions_page(response: pb.ListBatchExecutionsResponse) -> BatchExecutionsPage:
    return BatchExecutionsPage(
        executions=[batch_execution_item(execution) for execution in response.executions],
        total=response.total,
        next_offset=optional_int(response, "next_offset"),
    )


def get_batch_request(batch_id: str) -> pb.GetBatchRequest:
    return pb.GetBatchRequest(batch_id=batch_id)


def list_batches_request(*, limit: int, offset: int) -> pb.ListBatchesRequest:
    return pb.ListBatchesRequest(limit=limit, offset=offset)


def list_batch_executions_request(
    batch_id: str, *, status: ExecutionStatusName | None, limit: int, offset: int
) -> pb.ListBatchExecutionsRequest:
    return pb.ListBatchExecutionsRequest(
        batch_id=batch_id, status=status_value(status), limit=limit, offset=offset
    )

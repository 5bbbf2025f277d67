"""REST request and response documents; every route names its models so OpenAPI shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

MAX_DELAY_SECONDS = 365 * 24 * 3600
DEFAULT_TRIGGER_ID = "runtime-api"


class ExecutionStatusName(StrEnum):
    """An execution's status as the REST API spells it (upper case, as upstream)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    AWAITING_INPUT = "AWAITING_INPUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# --- errors ------------------------------------------------------------------------------


class FieldError(BaseModel):
    """One offending field, in FastAPI's validation error shape."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error response: a message or a list of field errors, plus a stable reason."""

    detail: str | list[FieldError]
    reason: str


# --- runtime: execute --------------------------------------------------------------------


class AsyncExecuteRequest(BaseModel):
    """Body of `POST /functions/{namespace}/{name}/execute/async`."""

    input: dict[str, Any] = Field(description="The function's input; checked against its schema.")
    trigger_id: str | None = Field(
        default=None,
        max_length=255,
        strict=True,
        description=f'Correlation id stored on the execution; null means "{DEFAULT_TRIGGER_ID}".',
    )
    delay_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        strict=True,
        description="Run no earlier than this many seconds from now; null or 0 runs now.",
    )
    callback_url: str | None = Field(
        default=None,
        strict=True,
        description="HTTPS URL that receives the outcome; subject to the callback policy.",
    )


class SyncExecuteRequest(AsyncExecuteRequest):
    """Body of `POST /functions/{namespace}/{name}/execute`: the async body plus a wait time."""

    timeout: int | None = Field(
        default=None,
        gt=0,
        strict=True,
        description="Seconds to wait for the result; null means the gateway's default.",
    )


class QueuedResponse(BaseModel):
    """The answer to an accepted async execute."""

    execution_id: str
    status: Literal["queued"] = "queued"


class SyncExecuteResponse(BaseModel):
    """The answer to a sync execute: the outcome, or `timeout` while it still runs."""

    status: Literal["success", "error", "timeout"]
    execution_id: str
    result: Any = None
    error: str | None = None


# --- runtime: executions -----------------------------------------------------------------


# A callback's delivery state; null when the execution has no callback.
CallbackStatusName = Literal["pending", "in_flight", "sent", "failed"]


class ExecutionDocument(BaseModel):
    """One execution, as `GET /executions/{execution_id}` returns it."""

    execution_id: str
    namespace: str
    function_name: str
    status: ExecutionStatusName
    input_data: Any = None
    output_data: Any = None
    error: str | None = None
    traceback: str | None = None
    trigger_type: str | None = None
    trigger_id: str | None = None
    batch_id: str | None = None
    chat_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    attempts: int = 0
    callback_url: str | None = None
    callback_status: CallbackStatusName | None = None
    callback_response_code: int | None = None
    callback_error: str | None = None
    callback_attempted_at: datetime | None = None
    # While AWAITING_INPUT: what `input(prompt)` asked, and when the execution fails unless
    # continued.
    input_prompt: str | None = None
    input_deadline_at: datetime | None = None
    kind: str | None = Field(default=None, description='"function" or "agent".')
    # Agent runs: the LLM tokens used (null for functions); a tool call's run names the agent
    # run that made it.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    parent_execution_id: str | None = None


class ContinueRequest(BaseModel):
    """`POST /executions/{execution_id}/continue`: the answer to the waiting `input()`."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(
        description="Any JSON value; a string comes back from `input()` as that string."
    )


class CancelledExecution(ExecutionDocument):
    """The execution after a cancel; `cancelled` is false when it was already running or done."""

    cancelled: bool


class BatchCancelResponse(BaseModel):
    """`POST /batches/{batch_id}/cancel`."""

    batch_id: str
    status: BatchStatusName
    cancelled_children: int


# --- runtime: batches --------------------------------------------------------------------


class BatchExecuteRequest(BaseModel):
    """Body of `POST /functions/{namespace}/{name}/execute/batch`."""

    inputs: list[dict[str, Any]] = Field(
        min_length=1,
        description=(
            "One input per child, 1 to MAX_BATCH_SIZE (413 above it); every item is checked"
            " against the function's schema before anything is stored."
        ),
    )
    trigger_id_prefix: str | None = Field(
        default=None,
        max_length=255,
        strict=True,
        description='Child i gets trigger id "{prefix}:{i}", or "batch:{i}" without one.',
    )
    delay_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        strict=True,
        description="Applied to every child; null or 0 runs now.",
    )
    callback_url: str | None = Field(
        default=None, strict=True, description="HTTPS URL that receives each child's outcome."
    )
    batch_callback_url: str | None = Field(
        default=None,
        strict=True,
        description="HTTPS URL that receives one summary when the last child ends.",
    )


class BatchQueuedResponse(BaseModel):
    """The answer to an accepted batch: the children's ids in input order."""

    batch_id: str
    execution_ids: list[str]
    total: int
    status: Literal["queued"] = "queued"


BatchStatusName = Literal["queued", "running", "completed", "partial", "failed", "cancelled"]


class BatchTarget(BaseModel):
    namespace: str
    name: str


class BatchDocument(BaseModel):
    """One batch, as `GET /batches/{batch_id}` returns it; counts come from the children."""

    batch_id: str
    kind: str
    target: BatchTarget
    user_id: str
    total: int
    queued: int = Field(description="PENDING plus AWAITING_INPUT children.")
    running: int
    completed: int
    failed: int
    cancelled: int
    status: BatchStatusName
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None
    trigger_id_prefix: str | None = None
    callback_url: str | None = None
    batch_callback_url: str | None = None
    batch_callback_status: CallbackStatusName | None = None
    batch_callback_response_code: int | None = None
    batch_callback_error: str | None = None
    batch_callback_attempted_at: datetime | None = None
    prompt_tokens: int = Field(default=0, description="LLM prompt tokens over the children.")
    completion_tokens: int = Field(
        default=0, description="LLM completion tokens over the children."
    )


class BatchExecutionItem(BaseModel):
    """One child in the drill-in; its status in lower case, as the batch document."""

    execution_id: str
    index: int | None
    status: str
    function_name: str
    trigger_id: str | None = None
    chat_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    error: str | None = None


class BatchExecutionsPage(BaseModel):
    """A page of children in batch order; `next_offset` is null on the last page."""

    executions: list[BatchExecutionItem]
    total: int
    next_offset: int | None = None


# --- auth --------------------------------------------------------------------------------


class MeResponse(BaseModel):
    """The caller, as `GET /auth/me` returns it."""

    id: str
    email: str
    roles: list[str]
    created_at: datetime | None = None
    last_login_at: datetime | None = None


class JwksDocument(BaseModel):
    """The public keys that verify the runtime's bearer tokens (RFC 7517)."""

    model_config = ConfigDict(extra="allow")

    keys: list[dict[str, Any]]


class HealthResponse(BaseModel):
    """The gateway is up and the scheduler answers."""

    status: Literal["ok"] = "ok"


# --- management --------------------------------------------------------------------------


class FunctionCreate(BaseModel):
    """Body of `POST /api/v1/functions`."""

    namespace: str = Field(default="default", min_length=1, max_length=255, strict=True)
    name: str = Field(min_length=1, max_length=255, strict=True)
    code: str = Field(
        strict=True, description="Python source defining `handler(input_data, context)`."
    )
    description: str = Field(default="", strict=True)
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    timeout: int | None = Field(
        default=None, gt=0, strict=True, description="Seconds; null means the instance default."
    )
    requires_approval: bool = Field(default=False, strict=True)


class FunctionUpdate(BaseModel):
    """Body of `PUT /api/v1/functions/{namespace}/{name}`: fields left out or null stay as they are.

    `namespace` and `name` are accepted for symmetry with create but must match the path:
    a function can't be renamed.
    """

    namespace: str | None = Field(default=None, strict=True)
    name: str | None = Field(default=None, strict=True)
    code: str | None = Field(default=None, strict=True)
    description: str | None = Field(default=None, strict=True)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout: int | None = Field(default=None, gt=0, strict=True)
    requires_approval: bool | None = Field(default=None, strict=True)


class FunctionDocument(BaseModel):
    """One function at its current version."""

    id: str
    namespace: str
    name: str
    description: str
    code: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    timeout: int | None
    requires_approval: bool
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RoleCreate(BaseModel):
    """Body of `POST /api/v1/roles`."""

    name: str = Field(min_length=1, max_length=255, strict=True)
    permissions: list[str] = Field(default_factory=list)


class RoleDocument(BaseModel):
    """A role and the permission strings it grants."""

    id: str
    name: str
    permissions: list[str]


class UserCreate(BaseModel):
    """Body of `POST /api/v1/users`."""

    email: str = Field(min_length=3, max_length=255, strict=True)
    roles: list[str] = Field(default_factory=list)


class UserDocument(BaseModel):
    """A user created through the management API."""

    id: str
    email: str
    roles: list[str]


class ApiKeyCreate(BaseModel):
    """Body of `POST /api/v1/api-keys`; `user_id` (admins only) defaults to the caller."""

    name: str = Field(min_length=1, max_length=255, strict=True)
    user_id: str | None = Field(default=None, strict=True)
    expires_at: AwareDatetime | None = Field(
        default=None,
        description=(
            "ISO 8601 with a timezone, in the future; the key is refused from then on. "
            "Null: it never expires."
        ),
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return value


class ApiKeyDocument(BaseModel):
    """A new API key; `key` is shown this once and never again."""

    id: str
    name: str
    user_id: str
    key: str
    created_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="Null: it never expires.")
    prefix: str = Field(description="The key's first characters, by which listings name it.")


class ApiKeySummary(BaseModel):
    """An API key as listed: never the key itself."""

    id: str
    name: str
    user_id: str
    prefix: str = Field(description="The key's first characters.")
    created_at: datetime | None = None
    last_used_at: datetime | None = Field(
        default=None,
        description="Null: never used. Written in batches, so it may lag use by a minute.",
    )
    expires_at: datetime | None = Field(default=None, description="Null: it never expires.")
    revoked_at: datetime | None = Field(default=None, description="Null: not revoked.")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries documenting the error body for each status a route can answer."""
    return {code: {"model": ErrorBody} for code in codes}

"""Pure domain values: users, functions, executions, their statuses and what workers report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class ExecutionStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    AWAITING_INPUT = "AWAITING_INPUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)

# Which status may follow which; a terminal status has no successor.
TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.PENDING: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
    ),
    ExecutionStatus.RUNNING: frozenset(
        {
            ExecutionStatus.RUNNING,  # a redelivery after a lost worker claims it again
            ExecutionStatus.AWAITING_INPUT,
            ExecutionStatus.COMPLETED,
            ExecutionStatus.FAILED,
            ExecutionStatus.CANCELLED,
        }
    ),
    ExecutionStatus.AWAITING_INPUT: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
    ),
    ExecutionStatus.COMPLETED: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
}


def can_transition(current: ExecutionStatus, target: ExecutionStatus) -> bool:
    return target in TRANSITIONS[current]


WORKER_LOST_PREFIX = "worker lost: the execution's worker stopped before it finished ("
WORKER_LOST_SUFFIX = " attempts)"


def worker_lost_error(attempts: int) -> str:
    """The error of an execution whose last allowed attempt lost its worker."""
    return f"{WORKER_LOST_PREFIX}{attempts}{WORKER_LOST_SUFFIX}"


class CallbackStatus(enum.StrEnum):
    """A callback's delivery state; NULL on the row means the execution has no callback."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"


NOTIFIER_LOST_ERROR = "notifier lost before the delivery outcome was recorded"

DEFAULT_TRIGGER_ID = "runtime-api"
TRIGGER_TYPE_API = "API"
KIND_FUNCTION = "function"


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    id: str
    email: str
    roles: tuple[str, ...]
    created_at: datetime
    last_login_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    id: str
    name: str
    permissions: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An authenticated caller: the user, their effective permissions and token context."""

    user: User
    permissions: frozenset[str]
    # Set when the caller presented a per-execution token.
    execution_id: str | None = None
    execution_depth: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord:
    id: str
    name: str
    user_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedApiKey:
    record: ApiKeyRecord
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """What defines one version of a function."""

    description: str
    code: str
    input_schema: Any
    output_schema: Any
    timeout_seconds: int
    requires_approval: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Function:
    id: str
    namespace: str
    name: str
    owner_user_id: str
    spec: FunctionSpec
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionChanges:
    """An update: None keeps the current value."""

    description: str | None = None
    code: str | None = None
    input_schema: Any = None
    output_schema: Any = None
    timeout_seconds: int | None = None
    requires_approval: bool | None = None

    def apply(self, spec: FunctionSpec) -> FunctionSpec:
        def pick(new: Any, old: Any) -> Any:
            return old if new is None else new

        return FunctionSpec(
            description=pick(self.description, spec.description),
            code=pick(self.code, spec.code),
            input_schema=pick(self.input_schema, spec.input_schema),
            output_schema=pick(self.output_schema, spec.output_schema),
            timeout_seconds=pick(self.timeout_seconds, spec.timeout_seconds),
            requires_approval=pick(self.requires_approval, spec.requires_approval),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionVersion:
    function_id: str
    version: int
    namespace: str
    name: str
    code: str
    input_schema: Any
    output_schema: Any
    timeout_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewExecution:
    id: str
    user_id: str
    kind: str
    namespace: str
    name: str
    function_id: str
    function_version: int
    trigger_type: str
    trigger_id: str
    input: Any
    depth: int
    delay_seconds: int
    parent_execution_id: str | None
    callback_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    id: str
    user_id: str
    kind: str
    namespace: str
    name: str
    function_id: str | None
    function_version: int | None
    status: ExecutionStatus
    input: Any
    output: Any
    error: str | None
    traceback: str | None
    timed_out: bool
    depth: int
    trigger_type: str
    trigger_id: str
    batch_id: str | None
    chat_id: str | None
    parent_execution_id: str | None
    created_at: datetime
    run_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    attempts: int
    callback_url: str | None
    callback_status: str | None
    callback_response_code: int | None
    callback_error: str | None = None
    callback_attempted_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionQuery:
    """A listing: `user_id` None means every user's executions."""

    user_id: str | None
    function_name: str | None = None
    status: ExecutionStatus | None = None
    trigger_id: str | None = None
    batch_id: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DueExecution:
    """An execution the dispatcher publishes."""

    id: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimItem:
    execution_id: str
    delivery_attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedRow:
    """A claimed execution as stored, before its token is minted."""

    execution_id: str
    attempt: int
    user_id: str
    user_email: str
    function_id: str
    function_version: int
    timeout_seconds: int
    input: Any
    trigger_type: str
    trigger_id: str
    batch_id: str | None
    chat_id: str | None
    depth: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOutcome:
    """What one claim statement did."""

    claimed: tuple[ClaimedRow, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedExecution:
    row: ClaimedRow
    access_token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    claimed: tuple[ClaimedExecution, ...]
    skipped: tuple[str, ...]
    functions: tuple[FunctionVersion, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """A worker's report of how one claimed attempt ended."""

    execution_id: str
    attempt: int
    status: ExecutionStatus
    output: Any = None
    error: str | None = None
    traceback: str | None = None
    timed_out: bool = False
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key_pem: str
    public_jwk: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackRow:
    """A terminal execution whose callback was just claimed, as stored."""

    execution_id: str
    callback_url: str
    user_id: str
    user_email: str
    namespace: str
    name: str
    trigger_id: str
    status: ExecutionStatus
    timed_out: bool
    output: Any
    error: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackDelivery:
    """What a notifier needs to POST one callback."""

    execution_id: str
    callback_url: str
    webhook_id: str
    access_token: str
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackClaim:
    deliveries: tuple[CallbackDelivery, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackOutcome:
    """A notifier's report of its single attempt; `response_code` None when none came."""

    execution_id: str
    sent: bool
    response_code: int | None = None
    error: str | None = None
    attempted_at: datetime | None = None

"""Pure domain values: users, functions, executions, their statuses and what workers report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sinas_scheduler.agent_models import ChatMessage, ClaimedAgentRun


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
class KeyHolder:
    """The user behind a live API key, their permissions, and when the key stops working."""

    user: User
    permissions: frozenset[str]
    key_expires_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord:
    """An API key as listed: never the key itself, nor its hash."""

    id: str
    name: str
    user_id: str
    prefix: str
    created_at: datetime
    # Each None until it happens; `last_used_at` lags use by up to the usage flush interval.
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


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
    # Tool-call children of agent runs.
    chat_id: str | None = None
    tool_call_id: str | None = None


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
    batch_index: int | None = None
    input_prompt: str | None = None
    input_deadline_at: datetime | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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
class DispatchRound:
    """One dispatch transaction: how many executions it published, and the seconds until the
    earliest one still waiting comes due (negative: already due; None: none waits)."""

    published: int
    next_due_seconds: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DueExecution:
    """An execution the dispatcher publishes."""

    id: str
    kind: str
    # Attempts made so far: part of the message id, so a retry is not taken for a duplicate.
    attempts: int = 0

    @property
    def message_id(self) -> str:
        return f"{self.id}.{self.attempts}"


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
    # None for agent runs (kind "agent"), which run no function version.
    function_id: str | None
    function_version: int | None
    timeout_seconds: int | None
    input: Any
    trigger_type: str
    trigger_id: str
    batch_id: str | None
    chat_id: str | None
    depth: int
    kind: str = KIND_FUNCTION
    # Seconds from run_at to this claim: how long a due execution waited to start.
    dispatch_lag_seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOutcome:
    """What one claim statement did."""

    claimed: tuple[ClaimedRow, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldAttempt:
    """An attempt as a worker names it: only the worker its claim recorded may keep it alive,
    report on it or hand it back."""

    execution_id: str
    attempt: int


# An attempt a stopping worker hands back unfinished.
ReleasedAttempt = HeldAttempt


@dataclass(frozen=True, slots=True, kw_only=True)
class ReapOutcome:
    """Attempts whose worker went quiet: failed after the last one, else dispatched again."""

    lost: tuple[str, ...]
    retried: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedExecution:
    row: ClaimedRow
    access_token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    claimed: tuple[ClaimedExecution, ...]
    skipped: tuple[str, ...]
    functions: tuple[FunctionVersion, ...]
    agent_runs: tuple[ClaimedAgentRun, ...] = ()


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
    # Agent runs: the messages this attempt added to its chat, and its token usage.
    new_messages: tuple[ChatMessage, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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
    # Set (and execution_id empty) for a batch-summary callback.
    batch_id: str = ""


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
    # Set (and execution_id empty) for a batch-summary callback.
    batch_id: str = ""


class BatchStatus(enum.StrEnum):
    """A batch's status as reported (lower case, as upstream's batch documents)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


BATCH_TRIGGER_PREFIX = "batch"


def batch_trigger_id(prefix: str | None, index: int) -> str:
    """Child `index`'s trigger id: `{prefix}:{index}`, or `batch:{index}` without a prefix."""
    return f"{prefix or BATCH_TRIGGER_PREFIX}:{index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewBatch:
    """A batch and its children as one insert; child `i` has `execution_ids[i]` and the JSON
    text `inputs_json[i]`."""

    id: str
    user_id: str
    kind: str
    namespace: str
    name: str
    function_id: str
    function_version: int
    trigger_id_prefix: str | None
    delay_seconds: int
    depth: int
    parent_execution_id: str | None
    callback_url: str | None
    batch_callback_url: str | None
    execution_ids: tuple[str, ...]
    inputs_json: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCounts:
    """Children per status group, counted from the children themselves."""

    queued: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    # Agent batches: the children's token usage summed.
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    id: str
    user_id: str
    kind: str
    namespace: str
    name: str
    total: int
    counts: BatchCounts
    # The stored terminal status; None while children remain.
    final_status: BatchStatus | None
    trigger_id_prefix: str | None
    callback_url: str | None
    batch_callback_url: str | None
    batch_callback_status: str | None
    batch_callback_response_code: int | None
    batch_callback_error: str | None
    batch_callback_attempted_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None

    @property
    def status(self) -> BatchStatus:
        """The terminal status once finished; before that `running` once any child started."""
        if self.final_status is not None:
            return self.final_status
        counts = self.counts
        if counts.running or counts.completed or counts.failed or counts.cancelled:
            return BatchStatus.RUNNING
        return BatchStatus.QUEUED


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchQuery:
    """A listing of batches: `user_id` None means every user's."""

    user_id: str | None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPage:
    """One page of a batch's children in batch order, with the filtered total."""

    executions: tuple[Execution, ...]
    total: int
    next_offset: int | None


def input_deadline_error(timeout_seconds: int) -> str:
    """The error of a paused execution whose input never came."""
    return f"input deadline passed: no input arrived within {timeout_seconds} seconds"


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitingInput:
    """A worker's report that attempt `attempt` waits in `input(prompt)`."""

    execution_id: str
    attempt: int
    prompt: str
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumedInput:
    """The answer a continue left for a paused execution's worker."""

    execution_id: str
    input: Any
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatNews:
    """What a heartbeat tells the executor about the executions it holds."""

    cancelled: tuple[str, ...] = ()
    resumed: tuple[ResumedInput, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EndedWaiters:
    """Paused executions a statement ended; their waiting workers must stop."""

    execution_ids: tuple[str, ...]
    batch_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCallbackRow:
    """A finished batch whose summary callback was just claimed, with its final counts."""

    batch: Batch
    user_email: str

"""Domain values the executor works with: claims, function versions, run requests, outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class OutcomeStatus(enum.Enum):
    """The terminal status an executor reports for one attempt."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimItem:
    """One execution to claim, with JetStream's delivery count for its message."""

    execution_id: str
    delivery_attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionVersion:
    """The code and schemas of one version of a function, as the scheduler stored them."""

    function_id: str
    version: int
    namespace: str
    name: str
    code: str
    input_schema: Any
    output_schema: Any
    timeout_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedExecution:
    """An attempt this executor now holds: everything needed to run it."""

    execution_id: str
    attempt: int
    user_id: str
    user_email: str
    function_id: str
    function_version: int
    input_data: Any
    trigger_type: str
    trigger_id: str
    batch_id: str
    chat_id: str
    access_token: str
    depth: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    """What a claim call gave: attempts to run, ids to skip, and the versions they run."""

    claimed: tuple[ClaimedExecution, ...] = ()
    skipped_execution_ids: tuple[str, ...] = ()
    functions: tuple[FunctionVersion, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionOutcome:
    """How one attempt ended. A job's failure is data, never an exception."""

    execution_id: str
    attempt: int
    status: OutcomeStatus
    output: Any = None
    error: str = ""
    traceback: str = ""
    timed_out: bool = False
    completed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerKey:
    """A worker process serves exactly one user's runs of one function version."""

    user_id: str
    function_id: str
    function_version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequest:
    """One call of `handler(input_data, context)` inside the sandbox."""

    key: WorkerKey
    code: str
    filename: str
    input_data: Any
    context: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """The sandbox's answer: an output, or an error ("ExcType: message") with its traceback."""

    output: Any = None
    error: str | None = None
    traceback: str = ""
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        return self.error is None

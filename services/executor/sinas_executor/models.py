"""Domain values the executor works with: claims, function versions, agent runs, outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


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
class HeldAttempt:
    """An attempt this executor claimed: what it names to keep it alive or hand it back."""

    execution_id: str
    attempt: int


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
class ChatMessage:
    """One message of a chat transcript; `tool_calls` are OpenAI-style tool call objects."""

    role: str
    content: str = ""
    tool_calls: tuple[Any, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTool:
    """A function the agent may call, as the model sees it."""

    namespace: str
    name: str
    description: str = ""
    input_schema: Any = None
    requires_approval: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedAgentRun:
    """An agent attempt this executor now holds: provider, transcript so far and tools."""

    execution_id: str
    attempt: int
    user_id: str
    chat_id: str
    access_token: str
    provider_base_url: str
    provider_api_key: str
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    max_turns: int
    timeout_seconds: int
    messages: tuple[ChatMessage, ...] = ()
    tools: tuple[AgentTool, ...] = ()
    user_email: str = ""
    depth: int = 0
    trigger_id: str = ""
    batch_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    """What a claim call gave: attempts to run, ids to skip, and the versions they run."""

    claimed: tuple[ClaimedExecution, ...] = ()
    skipped_execution_ids: tuple[str, ...] = ()
    functions: tuple[FunctionVersion, ...] = ()
    agent_runs: tuple[ClaimedAgentRun, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallRequest:
    """A model's call of a tool, to become a child function execution."""

    tool_call_id: str
    namespace: str
    name: str
    arguments: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallSubmission:
    """The scheduler's answer to one tool call: a child execution, a refusal, or approval."""

    tool_call_id: str
    execution_id: str = ""
    error: str = ""
    requires_approval: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildResult:
    """A child execution as a wait left it; `finished` is False when it is still going."""

    execution_id: str
    status: str
    finished: bool
    output: Any = None
    error: str = ""


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
    # Agent runs: the messages this attempt added to the chat, and the tokens it used.
    new_messages: tuple[ChatMessage, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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
    # Answers the function's `input(prompt)` calls; None: `input()` fails the run.
    inputs: InputChannel | None = None


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


class InputEnded(Exception):
    """The execution waiting in `input()` was cancelled or its input deadline passed."""


class HandedBack(Exception):
    """The executor is stopping: the run waiting in `input()` is ended without an outcome and
    its attempt released, so that another executor starts it again."""


class InputChannel(Protocol):
    """Where a paused run's answers come from."""

    async def ask(self, prompt: str) -> Any:
        """The input for `prompt`; raises InputEnded when none will ever come, HandedBack
        when the executor stops meanwhile."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AwaitingInput:
    """An attempt paused in its `round`-th `input(prompt)` call."""

    execution_id: str
    attempt: int
    prompt: str
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumedInput:
    """The answer to a paused execution's `round`-th `input()` call."""

    execution_id: str
    input: Any
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatNews:
    """Held executions that ended (end their waiting workers) or were continued."""

    cancelled: tuple[str, ...] = ()
    resumed: tuple[ResumedInput, ...] = ()

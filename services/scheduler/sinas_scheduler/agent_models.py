"""Pure domain of agents: LLM providers, agent definitions, chats, messages and agent runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

KIND_AGENT = "agent"
TRIGGER_TYPE_AGENT = "AGENT"
DEFAULT_AGENT_MAX_TURNS = 10
MAX_AGENT_TURNS = 1000
APPROVAL_REQUIRED_ERROR = "approval required; agent invoked async cannot pause"
ROLE_SYSTEM = "system"
ROLE_USER = "user"
ROLE_ASSISTANT = "assistant"
ROLE_TOOL = "tool"
MESSAGE_ROLES = frozenset({ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL})
# Roles an agent's `initial_messages` may use (tool messages need a preceding tool call).
INITIAL_MESSAGE_ROLES = frozenset({ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT})


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmProvider:
    id: str
    name: str
    base_url: str
    default_model: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewLlmProvider:
    id: str
    name: str
    base_url: str
    api_key_encrypted: str
    default_model: str
    created_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """What defines one version of an agent."""

    description: str
    llm_provider: str
    model: str
    system_prompt: str
    initial_messages: list[dict[str, Any]]
    input_schema: Any
    temperature: float | None
    max_tokens: int | None
    enabled_functions: tuple[str, ...]
    max_turns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentChanges:
    """An update: a field left None keeps its current value."""

    description: str | None = None
    llm_provider: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    initial_messages: Any = None
    input_schema: Any = None
    temperature: float | None = None
    max_tokens: int | None = None
    enabled_functions: tuple[str, ...] | None = None
    max_turns: int | None = None

    def apply(self, spec: AgentSpec) -> AgentSpec:
        def pick(new: Any, old: Any) -> Any:
            return old if new is None else new

        return AgentSpec(
            description=pick(self.description, spec.description),
            llm_provider=pick(self.llm_provider, spec.llm_provider),
            model=pick(self.model, spec.model),
            system_prompt=pick(self.system_prompt, spec.system_prompt),
            initial_messages=pick(self.initial_messages, spec.initial_messages),
            input_schema=pick(self.input_schema, spec.input_schema),
            temperature=pick(self.temperature, spec.temperature),
            max_tokens=pick(self.max_tokens, spec.max_tokens),
            enabled_functions=pick(self.enabled_functions, spec.enabled_functions),
            max_turns=pick(self.max_turns, spec.max_turns),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    id: str
    namespace: str
    name: str
    owner_user_id: str
    spec: AgentSpec
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    role: str
    content: str | None
    tool_calls: Any = None
    tool_call_id: str | None = None
    id: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Chat:
    id: str
    user_id: str
    agent_namespace: str
    agent_name: str
    title: str
    input_variables: Any
    created_at: datetime
    updated_at: datetime
    messages: tuple[ChatMessage, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NewAgentRun:
    """One queued agent execution and the chat it starts, with its rendered transcript."""

    execution_id: str
    chat_id: str
    input_variables: Any
    message: str
    transcript: tuple[ChatMessage, ...]
    trigger_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRunBatch:
    """Fields every run of one submit shares; `batch_id` set for an agent batch."""

    user_id: str
    agent: Agent
    provider_id: str
    model: str
    depth: int
    delay_seconds: int
    parent_execution_id: str | None
    callback_url: str | None
    batch_id: str | None = None
    batch_callback_url: str | None = None
    trigger_id_prefix: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTool:
    namespace: str
    name: str
    description: str
    input_schema: Any
    requires_approval: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRunContext:
    """What a claimed agent run needs, as stored (the API key still encrypted)."""

    chat_id: str
    provider_base_url: str
    provider_api_key_encrypted: str
    model: str
    temperature: float | None
    max_tokens: int | None
    max_turns: int
    enabled_functions: tuple[str, ...]
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedAgentRun:
    execution_id: str
    attempt: int
    user_id: str
    user_email: str
    chat_id: str
    access_token: str
    depth: int
    provider_base_url: str
    provider_api_key: str
    model: str
    temperature: float | None
    max_tokens: int | None
    max_turns: int
    timeout_seconds: int
    messages: tuple[ChatMessage, ...]
    tools: tuple[AgentTool, ...]
    trigger_id: str
    batch_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    tool_call_id: str
    namespace: str
    name: str
    arguments: Any
    # Set when the arguments did not parse.
    arguments_error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallSubmission:
    tool_call_id: str
    execution_id: str = ""
    error: str = ""
    requires_approval: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningAgentExecution:
    """The agent run making tool calls, as stored, with its agent's enabled functions."""

    execution_id: str
    user_id: str
    chat_id: str
    depth: int
    enabled_functions: tuple[str, ...]


def tool_name(namespace: str, name: str) -> str:
    """How a tool's function is named in `enabled_functions` and in tool-call documents."""
    return f"{namespace}/{name}"

"""REST documents for agents: LLM providers, agent definitions, agent runs and chats."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from sinas_gateway.schemas import MAX_DELAY_SECONDS

AgentMessageRole = Literal["system", "user", "assistant"]

# --- management --------------------------------------------------------------------------


class LlmProviderCreate(BaseModel):
    """Body of `POST /api/v1/llm-providers`."""

    name: str = Field(min_length=1, max_length=255, strict=True)
    base_url: str = Field(
        min_length=1,
        strict=True,
        description="An OpenAI-compatible API root, e.g. `https://api.openai.com/v1`.",
    )
    api_key: str = Field(
        strict=True, description="Stored encrypted at rest and never returned by any endpoint."
    )
    default_model: str = Field(
        min_length=1, strict=True, description="Used by agents that name no model."
    )


class LlmProviderDocument(BaseModel):
    """A provider as stored, without its API key."""

    id: str
    name: str
    base_url: str
    default_model: str
    created_at: datetime | None = None


class AgentMessage(BaseModel):
    """One of an agent's initial messages; `content` is a Jinja2 template."""

    role: AgentMessageRole
    content: str = Field(strict=True)


class AgentCreate(BaseModel):
    """Body of `POST /api/v1/agents`."""

    namespace: str = Field(default="default", min_length=1, max_length=255, strict=True)
    name: str = Field(min_length=1, max_length=255, strict=True)
    description: str = Field(default="", strict=True)
    llm_provider: str | None = Field(
        default=None, strict=True, description="A provider name; null means the default one."
    )
    model: str | None = Field(
        default=None, strict=True, description="Null means the provider's default model."
    )
    system_prompt: str = Field(
        default="",
        strict=True,
        description="Jinja2 over the chat's input variables; rendered without HTML escaping.",
    )
    initial_messages: list[AgentMessage] = Field(
        default_factory=list,
        description="Sent after the system prompt and before the user message; rendered too.",
    )
    input_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON Schema of the chat's input variables."
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, strict=True)
    enabled_functions: list[str] = Field(
        default_factory=list, description='Functions the model may call, as "namespace/name".'
    )
    max_turns: int | None = Field(
        default=None,
        gt=0,
        strict=True,
        description="Model calls per run before it fails; null means the instance default.",
    )


class AgentUpdate(BaseModel):
    """Body of `PUT /api/v1/agents/{namespace}/{name}`: fields left out or null stay as they are.

    `namespace` and `name` are accepted for symmetry with create but must match the path.
    """

    namespace: str | None = Field(default=None, strict=True)
    name: str | None = Field(default=None, strict=True)
    description: str | None = Field(default=None, strict=True)
    llm_provider: str | None = Field(default=None, strict=True)
    model: str | None = Field(default=None, strict=True)
    system_prompt: str | None = Field(default=None, strict=True)
    initial_messages: list[AgentMessage] | None = None
    input_schema: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, strict=True)
    enabled_functions: list[str] | None = None
    max_turns: int | None = Field(default=None, gt=0, strict=True)


class AgentDocument(BaseModel):
    """One agent at its current version."""

    id: str
    namespace: str
    name: str
    description: str
    llm_provider: str | None
    model: str | None
    system_prompt: str
    initial_messages: list[AgentMessage]
    input_schema: dict[str, Any]
    temperature: float | None
    max_tokens: int | None
    enabled_functions: list[str]
    max_turns: int
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- runtime -----------------------------------------------------------------------------


class AgentRunRequest(BaseModel):
    """Body of `POST /agents/{namespace}/{name}/execute/async`: one run in a fresh chat."""

    message: str = Field(strict=True, description="The user message.")
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="The chat's input variables; checked against the agent's input schema.",
    )
    trigger_id: str | None = Field(default=None, max_length=255, strict=True)
    delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS, strict=True)
    callback_url: str | None = Field(
        default=None,
        strict=True,
        description="HTTPS URL that receives the outcome; `result` is the agent result.",
    )


class AgentQueuedResponse(BaseModel):
    """The answer to an accepted agent run."""

    execution_id: str
    chat_id: str
    status: Literal["queued"] = "queued"


class AgentInvokeRequest(BaseModel):
    """Body of `POST /agents/{namespace}/{name}/invoke`."""

    message: str = Field(strict=True, description="The user message.")
    input: dict[str, Any] = Field(default_factory=dict, description="The chat's input variables.")
    timeout: int | None = Field(
        default=None,
        gt=0,
        strict=True,
        description="Seconds to wait for the reply (else 504); null means the gateway default.",
    )


class TokenUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class AgentInvokeResponse(BaseModel):
    """The agent's final answer, and where its transcript lives."""

    reply: str | None
    chat_id: str
    execution_id: str
    usage: TokenUsage


class AgentBatchItem(BaseModel):
    """One child of an agent batch: a fresh chat with these variables and this message."""

    input_variables: dict[str, Any] = Field(default_factory=dict)
    message: str = Field(strict=True)


class AgentBatchRequest(BaseModel):
    """Body of `POST /agents/{namespace}/{name}/chats/batch`."""

    inputs: list[AgentBatchItem] = Field(
        min_length=1,
        description=(
            "One chat per item, 1 to MAX_BATCH_SIZE (413 above it); every item's templates"
            " and variables are checked before anything is stored."
        ),
    )
    trigger_id_prefix: str | None = Field(default=None, max_length=255, strict=True)
    delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS, strict=True)
    callback_url: str | None = Field(
        default=None, strict=True, description="HTTPS URL that receives each child's outcome."
    )
    batch_callback_url: str | None = Field(
        default=None,
        strict=True,
        description="HTTPS URL that receives one summary when the last child ends.",
    )


class AgentBatchQueuedResponse(BaseModel):
    """The answer to an accepted agent batch: children and their chats in input order."""

    batch_id: str
    execution_ids: list[str]
    chat_ids: list[str]
    total: int
    status: Literal["queued"] = "queued"


# --- chats -------------------------------------------------------------------------------


class ChatMessageDocument(BaseModel):
    """One transcript message, in the order the model saw or said it."""

    id: str
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="OpenAI-style tool calls of an assistant message."
    )
    tool_call_id: str | None = Field(
        default=None, description="On a tool message: the call it answers."
    )
    created_at: datetime | None = None


class ChatSummary(BaseModel):
    """A chat without its messages, as `GET /chats` lists it."""

    id: str
    chat_id: str
    user_id: str
    agent_namespace: str
    agent_name: str
    title: str | None = None
    input_variables: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ChatDocument(ChatSummary):
    """A chat with its ordered transcript, as `GET /chats/{chat_id}` returns it."""

    messages: list[ChatMessageDocument]

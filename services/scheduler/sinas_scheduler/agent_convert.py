"""Protobuf ⇄ domain conversions of agents, chats, agent runs and tool calls."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.timeconv import to_timestamp
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.agent_models import (
    Agent,
    AgentChanges,
    AgentSpec,
    Chat,
    ChatMessage,
    ClaimedAgentRun,
    LlmProvider,
    ToolCall,
    ToolCallSubmission,
)
from sinas_scheduler.validation import parse_json_field


def _set_time(message: Any, field: str, value: datetime | None) -> None:
    stamp = to_timestamp(value)
    if stamp is not None:
        getattr(message, field).CopyFrom(stamp)


def provider_to_proto(provider: LlmProvider) -> pb.LlmProvider:
    message = pb.LlmProvider(
        id=provider.id,
        name=provider.name,
        base_url=provider.base_url,
        default_model=provider.default_model,
    )
    _set_time(message, "created_at", provider.created_at)
    return message


def agent_to_proto(agent: Agent) -> pb.Agent:
    spec = agent.spec
    message = pb.Agent(
        id=agent.id,
        namespace=agent.namespace,
        name=agent.name,
        description=spec.description,
        llm_provider=spec.llm_provider,
        model=spec.model,
        system_prompt=spec.system_prompt,
        initial_messages_json=dump_json(spec.initial_messages),
        input_schema_json=dump_json(spec.input_schema),
        enabled_functions=list(spec.enabled_functions),
        max_turns=spec.max_turns,
        version=agent.version,
    )
    if spec.temperature is not None:
        message.temperature = spec.temperature
    if spec.max_tokens is not None:
        message.max_tokens = spec.max_tokens
    _set_time(message, "created_at", agent.created_at)
    _set_time(message, "updated_at", agent.updated_at)
    return message


def spec_from_create(request: pb.CreateAgentRequest, default_max_turns: int) -> AgentSpec:
    return AgentSpec(
        description=request.description,
        llm_provider=request.llm_provider,
        model=request.model,
        system_prompt=request.system_prompt,
        initial_messages=parse_json_field(
            "initial_messages", request.initial_messages_json, empty=[]
        ),
        input_schema=parse_json_field("input_schema", request.input_schema_json, empty={}),
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        enabled_functions=tuple(request.enabled_functions),
        max_turns=request.max_turns if request.HasField("max_turns") else default_max_turns,
    )


def changes_from_update(request: pb.UpdateAgentRequest) -> AgentChanges:
    def present(field: str) -> bool:
        return request.HasField(field)  # type: ignore[arg-type]

    return AgentChanges(
        description=request.description if present("description") else None,
        llm_provider=request.llm_provider if present("llm_provider") else None,
        model=request.model if present("model") else None,
        system_prompt=request.system_prompt if present("system_prompt") else None,
        initial_messages=(
            parse_json_field("initial_messages", request.initial_messages_json, empty=[])
            if present("initial_messages_json")
            else None
        ),
        input_schema=(
            parse_json_field("input_schema", request.input_schema_json, empty={})
            if present("input_schema_json")
            else None
        ),
        temperature=request.temperature if present("temperature") else None,
        max_tokens=request.max_tokens if present("max_tokens") else None,
        enabled_functions=(
            tuple(request.enabled_functions.values) if present("enabled_functions") else None
        ),
        max_turns=request.max_turns if present("max_turns") else None,
    )


def message_to_proto(message: ChatMessage) -> pb.ChatMessage:
    converted = pb.ChatMessage(
        id=message.id,
        role=message.role,
        content=message.content or "",
        tool_calls_json=b"" if message.tool_calls is None else dump_json(message.tool_calls),
        tool_call_id=message.tool_call_id or "",
    )
    _set_time(converted, "created_at", message.created_at)
    return converted


def messages_from_proto(items: Sequence[pb.ChatMessage], field: str) -> tuple[ChatMessage, ...]:
    return tuple(
        ChatMessage(
            role=item.role,
            content=item.content,
            tool_calls=parse_json_field(
                f"{field}[{index}].tool_calls_json", item.tool_calls_json, empty=None
            ),
            tool_call_id=item.tool_call_id or None,
        )
        for index, item in enumerate(items)
    )


def chat_to_proto(chat: Chat) -> pb.Chat:
    message = pb.Chat(
        chat_id=chat.id,
        user_id=chat.user_id,
        agent_namespace=chat.agent_namespace,
        agent_name=chat.agent_name,
        title=chat.title,
        input_variables_json=dump_json(chat.input_variables),
        messages=[message_to_proto(m) for m in chat.messages],
    )
    _set_time(message, "created_at", chat.created_at)
    _set_time(message, "updated_at", chat.updated_at)
    return message


def agent_run_to_proto(run: ClaimedAgentRun) -> pb.ClaimedAgentRun:
    message = pb.ClaimedAgentRun(
        execution_id=run.execution_id,
        attempt=run.attempt,
        user_id=run.user_id,
        user_email=run.user_email,
        chat_id=run.chat_id,
        access_token=run.access_token,
        depth=run.depth,
        provider_base_url=run.provider_base_url,
        provider_api_key=run.provider_api_key,
        model=run.model,
        max_turns=run.max_turns,
        timeout_seconds=run.timeout_seconds,
        messages=[message_to_proto(m) for m in run.messages],
        tools=[
            pb.AgentTool(
                namespace=tool.namespace,
                name=tool.name,
                description=tool.description,
                input_schema_json=dump_json(tool.input_schema),
                requires_approval=tool.requires_approval,
            )
            for tool in run.tools
        ],
        trigger_id=run.trigger_id,
        batch_id=run.batch_id or "",
    )
    if run.temperature is not None:
        message.temperature = run.temperature
    if run.max_tokens is not None:
        message.max_tokens = run.max_tokens
    return message


def tool_calls_from_proto(request: pb.SubmitToolCallsRequest) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for call in request.calls:
        try:
            arguments = load_json(call.arguments_json, empty={})
            problem = ""
        except (ValueError, RecursionError) as exc:
            # The model wrote the arguments: a bad one is refused alone, not the whole turn.
            arguments, problem = None, f"arguments are not valid JSON: {exc}"
        calls.append(
            ToolCall(
                tool_call_id=call.tool_call_id,
                namespace=call.namespace,
                name=call.name,
                arguments=arguments,
                arguments_error=problem,
            )
        )
    return calls


def submissions_to_proto(submissions: Sequence[ToolCallSubmission]) -> pb.SubmitToolCallsResponse:
    return pb.SubmitToolCallsResponse(
        submissions=[
            pb.ToolCallSubmission(
                tool_call_id=s.tool_call_id,
                execution_id=s.execution_id,
                error=s.error,
                requires_approval=s.requires_approval,
            )
            for s in submissions
        ]
    )

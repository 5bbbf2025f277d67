"""Protobuf ⇄ REST documents for agents, LLM providers, agent runs and chats."""

from __future__ import annotations

from typing import Any

from sinas_common.errors import DeadlineExceeded, FieldViolation, InvalidArgument, SinasError
from sinas_common.jsoncodec import load_json
from sinas_gateway.agent_schemas import (
    AgentBatchRequest,
    AgentCreate,
    AgentDocument,
    AgentInvokeResponse,
    AgentMessage,
    AgentRunRequest,
    AgentUpdate,
    ChatDocument,
    ChatMessageDocument,
    ChatSummary,
    LlmProviderCreate,
    LlmProviderDocument,
    TokenUsage,
)
from sinas_gateway.convert import (
    encode_json,
    optional_int,
    optional_text,
    optional_time,
    status_name,
)
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

AGENT_TIMED_OUT = "Agent execution timed out"


class AgentRunFailed(SinasError):
    """The agent run ended without a reply."""

    reason = "agent_run_failed"
    http_status = 502


# --- management --------------------------------------------------------------------------


def create_llm_provider_request(body: LlmProviderCreate) -> pb.CreateLlmProviderRequest:
    return pb.CreateLlmProviderRequest(
        name=body.name,
        base_url=body.base_url,
        api_key=body.api_key,
        default_model=body.default_model,
    )


def llm_provider_document(provider: pb.LlmProvider) -> LlmProviderDocument:
    return LlmProviderDocument(
        id=provider.id,
        name=provider.name,
        base_url=provider.base_url,
        default_model=provider.default_model,
        created_at=optional_time(provider, "created_at"),
    )


def _messages_json(messages: list[AgentMessage]) -> bytes:
    return encode_json("initial_messages", [message.model_dump() for message in messages])


def create_agent_request(body: AgentCreate) -> pb.CreateAgentRequest:
    request = pb.CreateAgentRequest(
        namespace=body.namespace,
        name=body.name,
        description=body.description,
        llm_provider=body.llm_provider or "",
        model=body.model or "",
        system_prompt=body.system_prompt,
        initial_messages_json=_messages_json(body.initial_messages),
        input_schema_json=encode_json("input_schema", body.input_schema),
        enabled_functions=body.enabled_functions,
    )
    if body.temperature is not None:
        request.temperature = body.temperature
    if body.max_tokens is not None:
        request.max_tokens = body.max_tokens
    if body.max_turns is not None:
        request.max_turns = body.max_turns
    return request


def update_agent_request(namespace: str, name: str, body: AgentUpdate) -> pb.UpdateAgentRequest:
    """An update that sets only the fields the body gives; a rename is refused."""
    renamed = [
        FieldViolation(field=field, description="An agent can't be renamed; omit this field")
        for field, given, current in (
            ("namespace", body.namespace, namespace),
            ("name", body.name, name),
        )
        if given is not None and given != current
    ]
    if renamed:
        raise InvalidArgument("An agent can't be renamed", violations=renamed)
    request = pb.UpdateAgentRequest(namespace=namespace, name=name)
    for field in ("description", "llm_provider", "model", "system_prompt"):
        value = getattr(body, field)
        if value is not None:
            setattr(request, field, value)
    if body.initial_messages is not None:
        request.initial_messages_json = _messages_json(body.initial_messages)
    if body.input_schema is not None:
        request.input_schema_json = encode_json("input_schema", body.input_schema)
    if body.temperature is not None:
        request.temperature = body.temperature
    if body.max_tokens is not None:
        request.max_tokens = body.max_tokens
    if body.enabled_functions is not None:
        request.enabled_functions.values.extend(body.enabled_functions)
        # An empty list must still count as given: it disables every tool.
        request.enabled_functions.SetInParent()
    if body.max_turns is not None:
        request.max_turns = body.max_turns
    return request


def get_agent_request(namespace: str, name: str) -> pb.GetAgentRequest:
    return pb.GetAgentRequest(namespace=namespace, name=name)


def delete_agent_request(namespace: str, name: str) -> pb.DeleteAgentRequest:
    return pb.DeleteAgentRequest(namespace=namespace, name=name)


def agent_document(agent: pb.Agent) -> AgentDocument:
    return AgentDocument(
        id=agent.id,
        namespace=agent.namespace,
        name=agent.name,
        description=agent.description,
        llm_provider=optional_text(agent.llm_provider),
        model=optional_text(agent.model),
        system_prompt=agent.system_prompt,
        initial_messages=[
            AgentMessage.model_validate(item)
            for item in load_json(agent.initial_messages_json, empty=[])
        ],
        input_schema=load_json(agent.input_schema_json, empty={}),
        temperature=agent.temperature if agent.HasField("temperature") else None,
        max_tokens=optional_int(agent, "max_tokens"),
        enabled_functions=list(agent.enabled_functions),
        max_turns=agent.max_turns,
        version=agent.version,
        created_at=optional_time(agent, "created_at"),
        updated_at=optional_time(agent, "updated_at"),
    )


# --- runtime -----------------------------------------------------------------------------


def submit_agent_run_request(
    namespace: str, name: str, body: AgentRunRequest, *, idempotency_key: str = ""
) -> pb.SubmitAgentRunRequest:
    request = pb.SubmitAgentRunRequest(
        namespace=namespace,
        name=name,
        message=body.message,
        input_variables_json=encode_json("input", body.input),
        trigger_id=body.trigger_id or "",
        callback_url=body.callback_url or "",
        idempotency_key=idempotency_key,
    )
    if body.delay_seconds:
        request.delay_seconds = body.delay_seconds
    return request


def invoke_response(
    submitted: pb.SubmitAgentRunResponse, waited: pb.WaitExecutionResponse
) -> AgentInvokeResponse:
    """The reply of a finished run; a run still going is a 504, a failed one a 502."""
    if not waited.finished:
        raise DeadlineExceeded(AGENT_TIMED_OUT)
    execution = waited.execution
    if execution.status != pb.EXECUTION_STATUS_COMPLETED:
        status = status_name(execution.status).value
        raise AgentRunFailed(
            f"Agent execution {submitted.execution_id} ended {status}: "
            f"{execution.error or 'no reply'}"
        )
    output: Any = load_json(execution.output_json, empty={})
    reply = output.get("final_message") if isinstance(output, dict) else None
    return AgentInvokeResponse(
        reply=reply if isinstance(reply, str) else None,
        chat_id=submitted.chat_id,
        execution_id=submitted.execution_id,
        usage=TokenUsage(
            prompt_tokens=optional_int(execution, "prompt_tokens"),
            completion_tokens=optional_int(execution, "completion_tokens"),
        ),
    )


def submit_agent_batch_request(
    namespace: str, name: str, body: AgentBatchRequest, *, idempotency_key: str = ""
) -> pb.SubmitAgentBatchRequest:
    request = pb.SubmitAgentBatchRequest(
        namespace=namespace,
        name=name,
        inputs=[
            pb.AgentBatchInput(
                input_variables_json=encode_json(
                    f"inputs[{index}].input_variables", item.input_variables
                ),
                message=item.message,
            )
            for index, item in enumerate(body.inputs)
        ],
        trigger_id_prefix=body.trigger_id_prefix or "",
        callback_url=body.callback_url or "",
        batch_callback_url=body.batch_callback_url or "",
        idempotency_key=idempotency_key,
    )
    if body.delay_seconds:
        request.delay_seconds = body.delay_seconds
    return request


# --- chats -------------------------------------------------------------------------------


def get_chat_request(chat_id: str) -> pb.GetChatRequest:
    return pb.GetChatRequest(chat_id=chat_id)


def list_chats_request(*, limit: int, offset: int) -> pb.ListChatsRequest:
    return pb.ListChatsRequest(limit=limit, offset=offset)


def _chat_fields(chat: pb.Chat) -> dict[str, Any]:
    return {
        "id": chat.chat_id,
        "chat_id": chat.chat_id,
        "user_id": chat.user_id,
        "agent_namespace": chat.agent_namespace,
        "agent_name": chat.agent_name,
        "title": optional_text(chat.title),
        "input_variables": load_json(chat.input_variables_json, empty=None),
        "created_at": optional_time(chat, "created_at"),
        "updated_at": optional_time(chat, "updated_at"),
    }


def chat_summary(chat: pb.Chat) -> ChatSummary:
    return ChatSummary(**_chat_fields(chat))


def chat_message_document(message: pb.ChatMessage) -> ChatMessageDocument:
    return ChatMessageDocument.model_validate(
        {
            "id": message.id,
            "role": message.role,
            # An assistant turn that only calls tools has no text.
            "content": optional_text(message.content),
            "tool_calls": load_json(message.tool_calls_json, empty=None),
            "tool_call_id": optional_text(message.tool_call_id),
            "created_at": optional_time(message, "created_at"),
        }
    )


def chat_document(chat: pb.Chat) -> ChatDocument:
    return ChatDocument(
        **_chat_fields(chat),
        messages=[chat_message_document(message) for message in chat.messages],
    )

"""Agent routes: management, runs, invoke, batches and chats, over a recording scheduler."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from sinas_common.errors import FieldViolation, NotFound, PermissionDenied, SchemaViolation
from sinas_common.jsoncodec import load_json
from sinas_common.timeconv import to_timestamp
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

CREATED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
AGENT_PATH = "/agents/support/helper"


def _agent(**overrides: object) -> pb.Agent:
    fields: dict[str, object] = {
        "id": "agent-1",
        "namespace": "support",
        "name": "helper",
        "description": "Answers",
        "system_prompt": "You help {{ customer }}",
        "initial_messages_json": b'[{"role":"user","content":"Hi {{ customer }}"}]',
        "input_schema_json": b'{"type":"object","required":["customer"]}',
        "enabled_functions": ["tools/lookup"],
        "max_turns": 10,
        "version": 1,
        "created_at": to_timestamp(CREATED),
        "updated_at": to_timestamp(CREATED),
    }
    fields.update(overrides)
    return pb.Agent(**fields)  # type: ignore[arg-type]


async def test_create_llm_provider_forwards_the_key_and_never_returns_it(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    provider = pb.LlmProvider(
        id="p1",
        name="local",
        base_url="http://127.0.0.1:9/v1",
        default_model="stub-model",
        created_at=to_timestamp(CREATED),
    )
    scheduler.script("create_llm_provider", pb.CreateLlmProviderResponse(provider=provider))

    response = await client.post(
        "/api/v1/llm-providers",
        json={
            "name": "local",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "sk-secret",
            "default_model": "stub-model",
        },
    )

    assert response.status_code == 201
    assert response.json() == {
        "id": "p1",
        "name": "local",
        "base_url": "http://127.0.0.1:9/v1",
        "default_model": "stub-model",
        "created_at": "2025-03-01T12:00:00Z",
    }
    assert "sk-secret" not in response.text
    (call,) = scheduler.calls_to("create_llm_provider")
    assert call.request == pb.CreateLlmProviderRequest(
        name="local",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-secret",
        default_model="stub-model",
    )
    assert call.caller.authorization == "Bearer test-token"


async def test_create_agent_forwards_every_field_and_renders_the_document(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "create_agent",
        pb.CreateAgentResponse(agent=_agent(temperature=0.25, max_tokens=300, model="m1")),
    )

    response = await client.post(
        "/api/v1/agents",
        json={
            "namespace": "support",
            "name": "helper",
            "description": "Answers",
            "llm_provider": "local",
            "model": "m1",
            "system_prompt": "You help {{ customer }}",
            "initial_messages": [{"role": "user", "content": "Hi {{ customer }}"}],
            "input_schema": {"type": "object", "required": ["customer"]},
            "temperature": 0.25,
            "max_tokens": 300,
            "enabled_functions": ["tools/lookup"],
            "max_turns": 4,
        },
    )

    assert response.status_code == 201
    document = response.json()
    assert document["initial_messages"] == [{"role": "user", "content": "Hi {{ customer }}"}]
    assert document["input_schema"] == {"type": "object", "required": ["customer"]}
    assert (document["temperature"], document["max_tokens"]) == (0.25, 300)
    assert (document["llm_provider"], document["model"]) == (None, "m1")
    assert document["enabled_functions"] == ["tools/lookup"]
    assert (document["version"], document["max_turns"]) == (1, 10)
    (call,) = scheduler.calls_to("create_agent")
    request = call.request
    assert isinstance(request, pb.CreateAgentRequest)
    assert (request.namespace, request.name, request.llm_provider) == ("support", "helper", "local")
    assert load_json(request.initial_messages_json) == [
        {"role": "user", "content": "Hi {{ customer }}"}
    ]
    assert load_json(request.input_schema_json) == {"type": "object", "required": ["customer"]}
    assert (request.temperature, request.max_tokens, request.max_turns) == (0.25, 300, 4)
    assert list(request.enabled_functions) == ["tools/lookup"]


async def test_create_agent_defaults_leave_optional_fields_unset(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("create_agent", pb.CreateAgentResponse(agent=_agent()))

    response = await client.post("/api/v1/agents", json={"name": "helper"})

    assert response.status_code == 201
    request = scheduler.calls_to("create_agent")[0].request
    assert isinstance(request, pb.CreateAgentRequest)
    assert request.namespace == "default"
    assert not request.HasField("max_turns")
    assert not request.HasField("temperature")
    assert load_json(request.initial_messages_json) == []


async def test_create_agent_rejects_a_bad_message_role_before_the_scheduler(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    response = await client.post(
        "/api/v1/agents",
        json={"name": "helper", "initial_messages": [{"role": "tool", "content": "x"}]},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:4] == ["body", "initial_messages", 0, "role"]
    assert scheduler.calls_to("create_agent") == []


async def test_update_agent_sends_only_given_fields_and_refuses_renames(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("update_agent", pb.UpdateAgentResponse(agent=_agent(version=2)))

    updated = await client.put(
        f"/api/v1{AGENT_PATH}", json={"system_prompt": "New", "enabled_functions": []}
    )
    renamed = await client.put(f"/api/v1{AGENT_PATH}", json={"name": "other"})

    assert updated.status_code == 200
    assert updated.json()["version"] == 2
    (call,) = scheduler.calls_to("update_agent")
    request = call.request
    assert isinstance(request, pb.UpdateAgentRequest)
    assert request.system_prompt == "New"
    assert request.HasField("enabled_functions")
    assert list(request.enabled_functions.values) == []
    for field in ("description", "model", "initial_messages_json", "max_turns", "temperature"):
        assert not request.HasField(field), field
    assert renamed.status_code == 400
    assert renamed.json()["detail"][0]["loc"] == ["body", "name"]


async def test_get_and_delete_agent(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("get_agent", pb.GetAgentResponse(agent=_agent()))

    found = await client.get(f"/api/v1{AGENT_PATH}")
    deleted = await client.delete(f"/api/v1{AGENT_PATH}")

    assert found.status_code == 200
    assert found.json()["system_prompt"] == "You help {{ customer }}"
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert scheduler.calls_to("get_agent")[0].request == pb.GetAgentRequest(
        namespace="support", name="helper"
    )
    assert scheduler.calls_to("delete_agent")[0].request == pb.DeleteAgentRequest(
        namespace="support", name="helper"
    )


async def test_execute_async_answers_the_run_and_its_chat(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_agent_run", pb.SubmitAgentRunResponse(execution_id="e1", chat_id="c1"))

    response = await client.post(
        f"{AGENT_PATH}/execute/async",
        json={
            "message": "Where is my order?",
            "input": {"customer": "Ada & Co", "n": 2**60},
            "trigger_id": "t-1",
            "delay_seconds": 30,
            "callback_url": "https://app.example/hook",
        },
        headers={"Idempotency-Key": "key-1"},
    )

    assert response.status_code == 202
    assert response.json() == {"execution_id": "e1", "chat_id": "c1", "status": "queued"}
    (call,) = scheduler.calls_to("submit_agent_run")
    request = call.request
    assert isinstance(request, pb.SubmitAgentRunRequest)
    assert (request.namespace, request.name, request.message) == (
        "support",
        "helper",
        "Where is my order?",
    )
    assert load_json(request.input_variables_json) == {"customer": "Ada & Co", "n": 2**60}
    assert (request.trigger_id, request.delay_seconds) == ("t-1", 30)
    assert (request.callback_url, request.idempotency_key) == ("https://app.example/hook", "key-1")


async def test_execute_async_maps_template_errors_to_field_paths(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_agent_run",
        SchemaViolation(
            violations=[
                FieldViolation(field="input_variables.customer", description="is undefined")
            ]
        ),
    )

    response = await client.post(f"{AGENT_PATH}/execute/async", json={"message": "hi"})
    missing_message = await client.post(f"{AGENT_PATH}/execute/async", json={"input": {}})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "input_variables", "customer"],
            "msg": "is undefined",
            "type": "schema_violation",
        }
    ]
    assert missing_message.status_code == 422
    assert len(scheduler.calls_to("submit_agent_run")) == 1


def _finished(status: pb.ExecutionStatus.ValueType, **fields: object) -> pb.WaitExecutionResponse:
    execution = pb.Execution(execution_id="e1", status=status, **fields)  # type: ignore[arg-type]
    return pb.WaitExecutionResponse(finished=True, execution=execution)


async def test_invoke_waits_and_answers_the_final_message(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_agent_run", pb.SubmitAgentRunResponse(execution_id="e1", chat_id="c1"))
    scheduler.script(
        "wait_execution",
        _finished(
            pb.EXECUTION_STATUS_COMPLETED,
            output_json=b'{"chat_id":"c1","final_message":"Echo: hi","tool_calls":[]}',
            prompt_tokens=12,
            completion_tokens=3,
        ),
    )

    response = await client.post(
        f"{AGENT_PATH}/invoke", json={"message": "hi", "input": {"customer": "x"}, "timeout": 9}
    )

    assert response.status_code == 200
    assert response.json() == {
        "reply": "Echo: hi",
        "chat_id": "c1",
        "execution_id": "e1",
        "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    }
    submit = scheduler.calls_to("submit_agent_run")[0].request
    assert isinstance(submit, pb.SubmitAgentRunRequest)
    assert load_json(submit.input_variables_json) == {"customer": "x"}
    assert scheduler.calls_to("wait_execution")[0].request == pb.WaitExecutionRequest(
        execution_id="e1", timeout_seconds=9
    )


async def test_invoke_uses_the_default_wait(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_agent_run", pb.SubmitAgentRunResponse(execution_id="e1", chat_id="c1"))
    scheduler.script(
        "wait_execution",
        _finished(pb.EXECUTION_STATUS_COMPLETED, output_json=b'{"final_message":"ok"}'),
    )

    await client.post(f"{AGENT_PATH}/invoke", json={"message": "hi"})

    request = scheduler.calls_to("wait_execution")[0].request
    assert isinstance(request, pb.WaitExecutionRequest)
    assert request.timeout_seconds == 7


async def test_invoke_past_its_timeout_is_504(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_agent_run", pb.SubmitAgentRunResponse(execution_id="e1", chat_id="c1"))
    scheduler.script(
        "wait_execution",
        pb.WaitExecutionResponse(
            finished=False,
            execution=pb.Execution(execution_id="e1", status=pb.EXECUTION_STATUS_RUNNING),
        ),
    )

    response = await client.post(f"{AGENT_PATH}/invoke", json={"message": "hi", "timeout": 1})

    assert response.status_code == 504
    assert response.json() == {
        "detail": "Agent execution timed out",
        "reason": "deadline_exceeded",
    }


async def test_invoke_of_a_failed_run_is_an_error_with_its_message(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_agent_run", pb.SubmitAgentRunResponse(execution_id="e1", chat_id="c1"))
    scheduler.script(
        "wait_execution",
        _finished(pb.EXECUTION_STATUS_FAILED, error="LLM provider answered HTTP 500"),
    )

    response = await client.post(f"{AGENT_PATH}/invoke", json={"message": "hi"})

    assert response.status_code == 502
    body = response.json()
    assert body["reason"] == "agent_run_failed"
    assert "e1" in body["detail"]
    assert "FAILED" in body["detail"]
    assert "LLM provider answered HTTP 500" in body["detail"]


async def test_invoke_without_permission_is_403_and_waits_for_nothing(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("submit_agent_run", PermissionDenied("Not authorized to chat"))

    response = await client.post(f"{AGENT_PATH}/invoke", json={"message": "hi"})

    assert response.status_code == 403
    assert scheduler.calls_to("wait_execution") == []


async def test_agent_batch_forwards_items_in_order(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script(
        "submit_agent_batch",
        pb.SubmitAgentBatchResponse(
            batch_id="b1", execution_ids=["e0", "e1"], chat_ids=["c0", "c1"], total=2
        ),
    )

    response = await client.post(
        f"{AGENT_PATH}/chats/batch",
        json={
            "inputs": [
                {"input_variables": {"customer": "A"}, "message": "one"},
                {"message": "two"},
            ],
            "trigger_id_prefix": "nightly",
            "callback_url": "https://app.example/child",
            "batch_callback_url": "https://app.example/batch",
        },
        headers={"Idempotency-Key": "b-key"},
    )

    assert response.status_code == 202
    assert response.json() == {
        "batch_id": "b1",
        "execution_ids": ["e0", "e1"],
        "chat_ids": ["c0", "c1"],
        "total": 2,
        "status": "queued",
    }
    (call,) = scheduler.calls_to("submit_agent_batch")
    request = call.request
    assert isinstance(request, pb.SubmitAgentBatchRequest)
    assert [(load_json(item.input_variables_json), item.message) for item in request.inputs] == [
        ({"customer": "A"}, "one"),
        ({}, "two"),
    ]
    assert (request.trigger_id_prefix, request.idempotency_key) == ("nightly", "b-key")
    assert request.batch_callback_url == "https://app.example/batch"
    assert not request.HasField("delay_seconds")


async def test_agent_batch_needs_inputs_with_messages(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    empty = await client.post(f"{AGENT_PATH}/chats/batch", json={"inputs": []})
    no_message = await client.post(
        f"{AGENT_PATH}/chats/batch", json={"inputs": [{"input_variables": {}}]}
    )

    assert empty.status_code == 422
    assert no_message.status_code == 422
    assert no_message.json()["detail"][0]["loc"] == ["body", "inputs", 0, "message"]
    assert scheduler.calls_to("submit_agent_batch") == []


def _chat() -> pb.Chat:
    return pb.Chat(
        chat_id="c1",
        user_id="u1",
        agent_namespace="support",
        agent_name="helper",
        title="helper",
        input_variables_json=b'{"customer":"Ada & Co"}',
        created_at=to_timestamp(CREATED),
        updated_at=to_timestamp(CREATED),
        messages=[
            pb.ChatMessage(
                id="m1",
                role="system",
                content="You help Ada & Co",
                created_at=to_timestamp(CREATED),
            ),
            pb.ChatMessage(id="m2", role="user", content="CALL_TOOL tools/lookup {}"),
            pb.ChatMessage(
                id="m3",
                role="assistant",
                tool_calls_json=(
                    b'[{"id":"call_1","type":"function",'
                    b'"function":{"name":"tools__lookup","arguments":"{}"}}]'
                ),
            ),
            pb.ChatMessage(id="m4", role="tool", content='{"ok":true}', tool_call_id="call_1"),
        ],
    )


async def test_get_chat_returns_the_ordered_transcript(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("get_chat", pb.GetChatResponse(chat=_chat()))

    response = await client.get("/chats/c1")

    assert response.status_code == 200
    chat = response.json()
    assert (chat["id"], chat["chat_id"], chat["user_id"]) == ("c1", "c1", "u1")
    assert chat["input_variables"] == {"customer": "Ada & Co"}
    assert [message["role"] for message in chat["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert chat["messages"][0] == {
        "id": "m1",
        "role": "system",
        "content": "You help Ada & Co",
        "tool_calls": None,
        "tool_call_id": None,
        "created_at": "2025-03-01T12:00:00Z",
    }
    assert chat["messages"][2]["content"] is None
    assert chat["messages"][2]["tool_calls"][0]["function"]["name"] == "tools__lookup"
    assert chat["messages"][3]["tool_call_id"] == "call_1"
    assert scheduler.calls_to("get_chat")[0].request == pb.GetChatRequest(chat_id="c1")


async def test_someone_elses_chat_is_404(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("get_chat", NotFound("Chat not found"))

    response = await client.get("/chats/c9")

    assert response.status_code == 404
    assert response.json() == {"detail": "Chat not found", "reason": "not_found"}


async def test_list_chats_without_messages(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    scheduler.script("list_chats", pb.ListChatsResponse(chats=[_chat()]))

    response = await client.get("/chats", params={"limit": 5, "offset": 10})
    bad = await client.get("/chats", params={"limit": 0})

    assert response.status_code == 200
    (chat,) = response.json()
    assert chat["chat_id"] == "c1"
    assert "messages" not in chat
    assert scheduler.calls_to("list_chats")[0].request == pb.ListChatsRequest(limit=5, offset=10)
    assert bad.status_code == 422


async def test_agent_execution_and_batch_documents_carry_token_usage(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient
) -> None:
    execution = pb.Execution(
        execution_id="e2",
        kind="function",
        namespace="tools",
        function_name="lookup",
        status=pb.EXECUTION_STATUS_COMPLETED,
        trigger_type="AGENT",
        trigger_id="c1",
        chat_id="c1",
        parent_execution_id="e1",
    )
    agent_run = pb.Execution(
        execution_id="e1",
        kind="agent",
        namespace="support",
        function_name="helper",
        status=pb.EXECUTION_STATUS_COMPLETED,
        prompt_tokens=0,
        completion_tokens=7,
    )
    scheduler.script("get_execution", pb.GetExecutionResponse(execution=execution))
    scheduler.script("get_execution", pb.GetExecutionResponse(execution=agent_run))
    scheduler.script(
        "get_batch",
        pb.GetBatchResponse(
            batch=pb.Batch(
                batch_id="b1",
                kind="agent",
                status="completed",
                prompt_tokens=50,
                completion_tokens=9,
            )
        ),
    )

    child = (await client.get("/executions/e2")).json()
    run = (await client.get("/executions/e1")).json()
    batch = (await client.get("/batches/b1")).json()

    assert (child["parent_execution_id"], child["prompt_tokens"]) == ("e1", None)
    assert (run["kind"], run["prompt_tokens"], run["completion_tokens"]) == ("agent", 0, 7)
    assert run["parent_execution_id"] is None
    assert (batch["prompt_tokens"], batch["completion_tokens"]) == (50, 9)

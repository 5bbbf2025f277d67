"""Agents over gRPC: providers (keys encrypted at rest), agent definitions, queued runs with
rendered transcripts, claims of agent runs, tool calls, outcomes with messages and tokens,
agent batches and chats."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import (
    AlreadyExists,
    Conflict,
    ExecutionDepthExceeded,
    ExecutionTokenNotAllowed,
    NotFound,
    PermissionDenied,
    SchemaViolation,
    from_status_bytes,
)
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json, load_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.agent_models import APPROVAL_REQUIRED_ERROR
from sinas_scheduler.postgres_retention import PostgresRetentionStore
from sinas_scheduler.retention import Retention, RetentionPolicy
from sinas_scheduler.testing import RunningScheduler, bearer

from .test_worker import claim, complete, done

API_KEY = "sk-provider-secret"


async def create_provider(scheduler: RunningScheduler, name: str = "stub") -> pb.LlmProvider:
    response = await invoke(
        scheduler.agents.CreateLlmProvider,
        pb.CreateLlmProviderRequest(
            name=name, base_url="http://127.0.0.1:9/v1", api_key=API_KEY, default_model="m1"
        ),
        metadata=scheduler.admin,
    )
    provider: pb.LlmProvider = response.provider
    return provider


async def create_agent(
    scheduler: RunningScheduler, name: str = "helper", **fields: Any
) -> pb.Agent:
    values: dict[str, Any] = {
        "namespace": "tests",
        "name": name,
        "llm_provider": "stub",
        "system_prompt": "You help {{ who }} & friends.",
        "initial_messages_json": dump_json(
            [{"role": "assistant", "content": "Ready for {{ who }}."}]
        ),
        "input_schema_json": dump_json(
            {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}
        ),
        "enabled_functions": ["tests/echo"],
        **fields,
    }
    response = await invoke(
        scheduler.agents.CreateAgent, pb.CreateAgentRequest(**values), metadata=scheduler.admin
    )
    agent: pb.Agent = response.agent
    return agent


async def submit_run(
    scheduler: RunningScheduler, metadata: list[tuple[str, str]], variables: Any, **fields: Any
) -> pb.SubmitAgentRunResponse:
    request = pb.SubmitAgentRunRequest(
        namespace="tests",
        name=fields.pop("name", "helper"),
        message=fields.pop("message", "Hello"),
        input_variables_json=dump_json(variables),
        **fields,
    )
    response: pb.SubmitAgentRunResponse = await invoke(
        scheduler.agents.SubmitAgentRun, request, metadata=metadata
    )
    return response


async def get_chat(
    scheduler: RunningScheduler, metadata: list[tuple[str, str]], chat_id: str
) -> pb.Chat:
    response = await invoke(
        scheduler.agents.GetChat, pb.GetChatRequest(chat_id=chat_id), metadata=metadata
    )
    chat: pb.Chat = response.chat
    return chat


async def ready(scheduler: RunningScheduler, **agent_fields: Any) -> tuple[pb.User, str]:
    await scheduler.create_function(input_schema={"type": "object", "required": ["text"]})
    await create_provider(scheduler)
    await create_agent(scheduler, **agent_fields)
    return await scheduler.create_user(["Users"])


async def test_provider_key_is_encrypted_at_rest_and_never_returned(
    scheduler: RunningScheduler, db: AsyncEngine, encryption_key: str
) -> None:
    provider = await create_provider(scheduler)
    assert (provider.name, provider.base_url, provider.default_model) == (
        "stub",
        "http://127.0.0.1:9/v1",
        "m1",
    )
    assert API_KEY not in str(provider)
    async with db.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT api_key_encrypted FROM llm_providers"))).one()[
            0
        ]
    assert API_KEY not in stored
    assert Fernet(encryption_key.encode()).decrypt(stored.encode()).decode() == API_KEY
    with pytest.raises(AlreadyExists):
        await create_provider(scheduler)
    _, key = await scheduler.create_user(["Users"])
    with pytest.raises(PermissionDenied):
        await invoke(
            scheduler.agents.CreateLlmProvider,
            pb.CreateLlmProviderRequest(
                name="x", base_url="http://h/v1", api_key="k", default_model="m"
            ),
            metadata=bearer(key),
        )


async def test_a_scheduler_without_an_encryption_key_refuses_to_start(
    start_scheduler: Any,
) -> None:
    # It stores the token-signing keys encrypted, so there is nothing it could serve without.
    with pytest.raises(ValueError, match="SINAS_ENCRYPTION_KEY is not set"):
        await start_scheduler(SINAS_ENCRYPTION_KEY="")


async def test_agent_crud_writes_versions(scheduler: RunningScheduler) -> None:
    await scheduler.create_function()
    await create_provider(scheduler)
    created = await create_agent(scheduler, temperature=0.5, max_tokens=100)
    assert (created.version, created.max_turns, created.temperature, created.max_tokens) == (
        1,
        10,
        0.5,
        100,
    )
    got = (
        await invoke(
            scheduler.agents.GetAgent,
            pb.GetAgentRequest(namespace="tests", name="helper"),
            metadata=scheduler.admin,
        )
    ).agent
    assert got.system_prompt == "You help {{ who }} & friends."
    assert load_json(got.initial_messages_json) == [
        {"role": "assistant", "content": "Ready for {{ who }}."}
    ]
    update = pb.UpdateAgentRequest(namespace="tests", name="helper", max_turns=3)
    update.enabled_functions.values[:] = []
    updated = (await invoke(scheduler.agents.UpdateAgent, update, metadata=scheduler.admin)).agent
    assert (updated.version, updated.max_turns, list(updated.enabled_functions)) == (2, 3, [])
    assert updated.system_prompt == created.system_prompt
    _, key = await scheduler.create_user(["Users"])
    with pytest.raises(PermissionDenied):
        await invoke(scheduler.agents.UpdateAgent, update, metadata=bearer(key))
    await invoke(
        scheduler.agents.DeleteAgent,
        pb.DeleteAgentRequest(namespace="tests", name="helper"),
        metadata=scheduler.admin,
    )
    with pytest.raises(NotFound):
        await invoke(
            scheduler.agents.GetAgent,
            pb.GetAgentRequest(namespace="tests", name="helper"),
            metadata=scheduler.admin,
        )


async def test_agent_definitions_are_validated(scheduler: RunningScheduler) -> None:
    await create_provider(scheduler)
    with pytest.raises(SchemaViolation) as caught:
        await create_agent(
            scheduler,
            name="bad-name",
            llm_provider="nope",
            system_prompt="{% if %}",
            initial_messages_json=dump_json([{"role": "tool", "content": "{{"}]),
            input_schema_json=dump_json({"type": 5}),
            enabled_functions=["tests/missing", "not a name"],
            max_turns=0,
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "name",
        "llm_provider",
        "system_prompt",
        "initial_messages[0].role",
        "initial_messages[0].content",
        "input_schema",
        "enabled_functions[0]",
        "enabled_functions[1]",
        "max_turns",
    }


async def test_submit_renders_the_transcript_and_a_claim_carries_the_run(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    user, key = await ready(scheduler)
    submitted = await submit_run(scheduler, bearer(key), {"who": "Ann & Bob <x>"})

    chat = await get_chat(scheduler, bearer(key), submitted.chat_id)
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "You help Ann & Bob <x> & friends."),
        ("assistant", "Ready for Ann & Bob <x>."),
        ("user", "Hello"),
    ]
    assert (chat.user_id, chat.agent_namespace, chat.agent_name) == (user.id, "tests", "helper")
    execution = await scheduler.get(bearer(key), submitted.execution_id)
    assert (execution.kind, execution.chat_id, execution.status) == (
        "agent",
        submitted.chat_id,
        pb.EXECUTION_STATUS_PENDING,
    )

    response = await claim(scheduler, (submitted.execution_id, 1))
    assert list(response.claimed) == []
    [run] = response.agent_runs
    assert (run.execution_id, run.attempt, run.user_id, run.chat_id) == (
        submitted.execution_id,
        1,
        user.id,
        submitted.chat_id,
    )
    assert (run.provider_base_url, run.provider_api_key, run.model) == (
        "http://127.0.0.1:9/v1",
        API_KEY,
        "m1",
    )
    assert (run.max_turns, run.timeout_seconds, run.trigger_id) == (10, 600, "runtime-api")
    assert [m.content for m in run.messages] == [m.content for m in chat.messages]
    [tool] = run.tools
    assert (tool.namespace, tool.name, tool.requires_approval) == ("tests", "echo", False)
    assert load_json(tool.input_schema_json) == {"type": "object", "required": ["text"]}
    assert run.access_token

    final = {"chat_id": submitted.chat_id, "final_message": "Hi", "final_message_role": "assistant"}
    outcome = done(
        run.execution_id,
        1,
        {**final, "tool_calls": []},
        prompt_tokens=12,
        completion_tokens=5,
        new_messages=[
            pb.ChatMessage(
                role="assistant",
                content="",
                tool_calls_json=dump_json([{"id": "c1", "type": "function"}]),
            ),
            pb.ChatMessage(role="tool", content='{"ok":true}', tool_call_id="c1"),
            pb.ChatMessage(role="assistant", content="Hi"),
        ],
    )
    assert await complete(scheduler, outcome) == [run.execution_id]
    # A stale repeat of the same outcome changes nothing and appends nothing.
    assert await complete(scheduler, outcome) == []

    chat = await get_chat(scheduler, bearer(key), submitted.chat_id)
    assert [(m.role, m.content, m.tool_call_id) for m in chat.messages][3:] == [
        ("assistant", "", ""),
        ("tool", '{"ok":true}', "c1"),
        ("assistant", "Hi", ""),
    ]
    assert load_json(chat.messages[3].tool_calls_json) == [{"id": "c1", "type": "function"}]
    execution = await scheduler.get(bearer(key), submitted.execution_id)
    assert (execution.prompt_tokens, execution.completion_tokens) == (12, 5)
    assert execution.status == pb.EXECUTION_STATUS_COMPLETED


async def test_input_variables_and_templates_are_checked_at_submit(
    scheduler: RunningScheduler,
) -> None:
    _, key = await ready(scheduler, system_prompt="For {{ who }} in {{ city }}")
    with pytest.raises(SchemaViolation) as caught:
        await submit_run(scheduler, bearer(key), {})
    assert [v.field for v in caught.value.violations] == ["input_variables.who"]
    with pytest.raises(SchemaViolation) as caught:
        await submit_run(scheduler, bearer(key), {"who": "a"})
    assert [v.field for v in caught.value.violations] == ["input_variables.city"]
    with pytest.raises(SchemaViolation) as caught:
        await invoke(
            scheduler.agents.SubmitAgentBatch,
            pb.SubmitAgentBatchRequest(
                namespace="tests",
                name="helper",
                inputs=[
                    pb.AgentBatchInput(
                        input_variables_json=dump_json({"who": "a", "city": "b"}), message="m"
                    ),
                    pb.AgentBatchInput(input_variables_json=dump_json({"who": 3}), message="m"),
                ],
            ),
            metadata=bearer(key),
        )
    assert [v.field for v in caught.value.violations] == ["inputs[1].input_variables.who"]


async def test_chat_permission_and_chat_visibility(scheduler: RunningScheduler) -> None:
    _, key = await ready(scheduler)
    submitted = await submit_run(scheduler, bearer(key), {"who": "a"})
    _, other = await scheduler.create_user(["Users"])
    with pytest.raises(NotFound):
        await get_chat(scheduler, bearer(other), submitted.chat_id)
    assert (await get_chat(scheduler, scheduler.admin, submitted.chat_id)).chat_id
    mine = await invoke(scheduler.agents.ListChats, pb.ListChatsRequest(), metadata=bearer(key))
    assert [c.chat_id for c in mine.chats] == [submitted.chat_id]
    assert list(mine.chats[0].messages) == []
    theirs = await invoke(scheduler.agents.ListChats, pb.ListChatsRequest(), metadata=bearer(other))
    assert list(theirs.chats) == []

    role = f"nochat-{secrets.token_hex(3)}"
    await invoke(
        scheduler.identity.CreateRole,
        pb.CreateRoleRequest(name=role, permissions=["sinas.agents/*/*.read:own"]),
        metadata=scheduler.admin,
    )
    _, guest = await scheduler.create_user([role])
    with pytest.raises(PermissionDenied):
        await submit_run(scheduler, bearer(guest), {"who": "a"})


async def test_tool_calls_become_checked_child_executions(scheduler: RunningScheduler) -> None:
    gated = pb.CreateFunctionRequest(
        namespace="tests",
        name="gated",
        code="def handler(input_data, context):\n    return 1\n",
        input_schema_json=dump_json({}),
        output_schema_json=dump_json({}),
        requires_approval=True,
    )
    await invoke(scheduler.functions.CreateFunction, gated, metadata=scheduler.admin)
    user, key = await ready(scheduler, enabled_functions=["tests/echo", "tests/gated"])
    submitted = await submit_run(scheduler, bearer(key), {"who": "a"})
    [run] = (await claim(scheduler, (submitted.execution_id, 1))).agent_runs

    def call(call_id: str, name: str, arguments: bytes) -> pb.ToolCall:
        return pb.ToolCall(
            tool_call_id=call_id, namespace="tests", name=name, arguments_json=arguments
        )

    response = await invoke(
        scheduler.worker.SubmitToolCalls,
        pb.SubmitToolCallsRequest(
            worker_id="w1",
            execution_id=run.execution_id,
            attempt=1,
            calls=[
                call("c1", "echo", dump_json({"text": "hi"})),
                call("c2", "echo", dump_json({})),
                call("c3", "other", b"{}"),
                call("c4", "echo", b"{not json"),
            ],
        ),
    )
    ok, invalid, not_enabled, garbled = response.submissions
    assert ok.execution_id and not ok.error
    assert "arguments.text" in invalid.error and not invalid.execution_id
    assert "not enabled" in not_enabled.error
    assert "not valid JSON" in garbled.error
    child = await scheduler.get(bearer(key), ok.execution_id)
    assert (child.kind, child.trigger_type, child.trigger_id, child.chat_id) == (
        "function",
        "AGENT",
        submitted.chat_id,
        submitted.chat_id,
    )
    assert (child.parent_execution_id, child.depth, child.user_id) == (
        run.execution_id,
        1,
        user.id,
    )
    assert load_json(child.input_json) == {"text": "hi"}

    approval = await invoke(
        scheduler.worker.SubmitToolCalls,
        pb.SubmitToolCallsRequest(
            worker_id="w1",
            execution_id=run.execution_id,
            attempt=1,
            calls=[call("c5", "echo", dump_json({"text": "x"})), call("c6", "gated", b"{}")],
        ),
    )
    other, flagged = approval.submissions
    assert (flagged.requires_approval, flagged.error, flagged.execution_id) == (
        True,
        APPROVAL_REQUIRED_ERROR,
        "",
    )
    assert not other.execution_id
    listed = await invoke(
        scheduler.executions.ListExecutions, pb.ListExecutionsRequest(), metadata=bearer(key)
    )
    assert len(listed.executions) == 2  # the run and its one accepted child

    # Only the worker holding the run, naming its attempt, may submit its calls.
    for worker_id, attempt in (("w1", 2), ("w2", 1), ("", 1)):
        with pytest.raises(Conflict, match="not an agent run held by attempt"):
            await invoke(
                scheduler.worker.SubmitToolCalls,
                pb.SubmitToolCallsRequest(
                    worker_id=worker_id,
                    execution_id=run.execution_id,
                    attempt=attempt,
                    calls=[call("c7", "echo", dump_json({"text": "forged"}))],
                ),
            )
    listed = await invoke(
        scheduler.executions.ListExecutions, pb.ListExecutionsRequest(), metadata=bearer(key)
    )
    assert len(listed.executions) == 2


async def test_agent_batch_sums_tokens_and_replays_its_idempotency_key(
    scheduler: RunningScheduler,
) -> None:
    _, key = await ready(scheduler)
    request = pb.SubmitAgentBatchRequest(
        namespace="tests",
        name="helper",
        inputs=[
            pb.AgentBatchInput(input_variables_json=dump_json({"who": f"w{i}"}), message=f"m{i}")
            for i in range(3)
        ],
        trigger_id_prefix="run",
        idempotency_key="batch-1",
    )
    submitted = await invoke(scheduler.agents.SubmitAgentBatch, request, metadata=bearer(key))
    assert submitted.total == 3 and len(set(submitted.chat_ids)) == 3
    again = await invoke(scheduler.agents.SubmitAgentBatch, request, metadata=bearer(key))
    assert (again.batch_id, list(again.execution_ids), list(again.chat_ids)) == (
        submitted.batch_id,
        list(submitted.execution_ids),
        list(submitted.chat_ids),
    )
    for index, chat_id in enumerate(submitted.chat_ids):
        chat = await get_chat(scheduler, bearer(key), chat_id)
        assert chat.messages[-1].content == f"m{index}"
        assert chat.messages[0].content == f"You help w{index} & friends."

    response = await claim(scheduler, *[(i, 1) for i in submitted.execution_ids])
    assert sorted(r.trigger_id for r in response.agent_runs) == ["run:0", "run:1", "run:2"]
    await complete(
        scheduler,
        *[
            done(r.execution_id, 1, {"ok": True}, prompt_tokens=10, completion_tokens=2)
            for r in response.agent_runs
        ],
    )
    batch = (
        await invoke(
            scheduler.batches.GetBatch,
            pb.GetBatchRequest(batch_id=submitted.batch_id),
            metadata=bearer(key),
        )
    ).batch
    assert (batch.kind, batch.status, batch.completed) == ("agent", "completed", 3)
    assert (batch.prompt_tokens, batch.completion_tokens) == (30, 6)


async def test_retention_deletes_idle_chats_once_their_executions_are_gone(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    _, key = await ready(scheduler)
    old = await submit_run(scheduler, bearer(key), {"who": "a"})
    kept = await submit_run(scheduler, bearer(key), {"who": "b"})
    response = await claim(scheduler, (old.execution_id, 1), (kept.execution_id, 1))
    await complete(scheduler, *[done(r.execution_id, 1, {}) for r in response.agent_runs])
    async with db.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE executions SET completed_at = now() - interval '40 days' WHERE id = :id"
            ),
            {"id": old.execution_id},
        )
        await conn.execute(sa.text("UPDATE chats SET updated_at = now() - interval '40 days'"))

    counts = await Retention(
        PostgresRetentionStore(db),
        RetentionPolicy(retention_seconds=30 * 86400, idempotency_ttl_seconds=86400, chunk_size=1),
    ).sweep()

    assert (counts.executions, counts.chats) == (1, 1)
    async with db.connect() as conn:
        chats = {row[0] for row in await conn.execute(sa.text("SELECT id FROM chats"))}
        orphans = (
            await conn.execute(
                sa.text("SELECT count(*) FROM messages WHERE chat_id = :id"), {"id": old.chat_id}
            )
        ).scalar_one()
    assert chats == {kept.chat_id}
    assert orphans == 0


async def _token_at(scheduler: RunningScheduler, key: str, depth: int) -> str:
    """A real per-execution token at `depth`: each level submitted with the one above's token
    and claimed as a worker would."""
    credential = key
    for level in range(depth + 1):
        execution_id = await scheduler.submit(bearer(credential), {"text": str(level)})
        [claimed] = (await claim(scheduler, (execution_id, 1))).claimed
        assert claimed.depth == level
        credential = claimed.access_token
    return credential


async def test_a_run_tokens_depth_carries_into_every_kind_of_submit(
    scheduler: RunningScheduler,
) -> None:
    _, key = await ready(scheduler, enabled_functions=["tests/echo"])
    limit = 4  # MAX_EXECUTION_DEPTH's default
    deepest = bearer(await _token_at(scheduler, key, limit))
    one_above = bearer(await _token_at(scheduler, key, limit - 1))
    variables = dump_json({"who": "a"})

    # At the limit, nothing more can be submitted, whatever the way.
    with pytest.raises(ExecutionDepthExceeded):
        await scheduler.submit(deepest, {"text": "x"})
    many = await invoke(
        scheduler.executions.SubmitExecutions,
        pb.SubmitExecutionsRequest(
            requests=[
                pb.SubmitExecutionRequest(
                    namespace="tests", name="echo", input_json=dump_json({"text": "x"})
                )
            ]
        ),
        metadata=deepest,
    )
    [refused] = many.results
    assert isinstance(from_status_bytes(refused.error_status), ExecutionDepthExceeded)
    batch = pb.SubmitBatchRequest(
        namespace="tests", name="echo", inputs_json=[dump_json({"text": "x"})]
    )
    agent_batch = pb.SubmitAgentBatchRequest(
        namespace="tests",
        name="helper",
        inputs=[pb.AgentBatchInput(input_variables_json=variables, message="m")],
    )
    with pytest.raises(ExecutionDepthExceeded):
        await invoke(scheduler.batches.SubmitBatch, batch, metadata=deepest)
    with pytest.raises(ExecutionDepthExceeded):
        await submit_run(scheduler, deepest, {"who": "a"})
    with pytest.raises(ExecutionDepthExceeded):
        await invoke(scheduler.agents.SubmitAgentBatch, agent_batch, metadata=deepest)
    # Nor can the token make itself a credential without a depth.
    with pytest.raises(ExecutionTokenNotAllowed):
        await invoke(
            scheduler.identity.CreateApiKey, pb.CreateApiKeyRequest(name="x"), metadata=deepest
        )

    # One above the limit, each way records the next level, and its runs' tokens carry it.
    children = [
        (await invoke(scheduler.batches.SubmitBatch, batch, metadata=one_above)).execution_ids[0],
        (await submit_run(scheduler, one_above, {"who": "a"})).execution_id,
        (
            await invoke(scheduler.agents.SubmitAgentBatch, agent_batch, metadata=one_above)
        ).execution_ids[0],
    ]
    assert [(await scheduler.get(bearer(key), c)).depth for c in children] == [limit] * 3
    response = await claim(scheduler, *[(c, 1) for c in children])
    assert [c.depth for c in response.claimed] == [limit]
    assert sorted(r.depth for r in response.agent_runs) == [limit, limit]
    # A tool call is a submit too: an agent run at the limit gets none.
    run = response.agent_runs[0]
    tools = await invoke(
        scheduler.worker.SubmitToolCalls,
        pb.SubmitToolCallsRequest(
            worker_id="w1",
            execution_id=run.execution_id,
            attempt=run.attempt,
            calls=[
                pb.ToolCall(
                    tool_call_id="c1",
                    namespace="tests",
                    name="echo",
                    arguments_json=dump_json({"text": "x"}),
                )
            ],
        ),
    )
    [call] = tools.submissions
    assert not call.execution_id and "depth" in call.error

"""Agents end to end against a scripted OpenAI-compatible server: rendered prompts, tool calls
as child executions, provider failures, agent batches with callbacks, invoke, chat visibility
and token usage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.llm_stub import COMPLETION_TOKENS, PROMPT_TOKENS, LlmStub
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import UserFactory, make_user_factory, wait_for_status
from .test_batches import children, finished, posts_to
from .test_callbacks import callback_env, verify_signature

APPROVAL_ERROR = "approval required; agent invoked async cannot pause"
PROVIDER_KEY = "sk-stub-provider-key"

LOOKUP_CODE = """
def handler(input_data, context):
    return {"order": input_data["id"], "state": "shipped"}
"""
LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer"}},
    "required": ["id"],
}


@pytest.fixture(scope="module")
def llm() -> Iterator[LlmStub]:
    with LlmStub() as running:
        yield running


@pytest.fixture(scope="module")
def agent_stack(
    stack_factory: StackFactory, certificates: ReceiverCertificates, receiver: CallbackReceiver
) -> Stack:
    built = stack_factory(**callback_env(certificates, receiver.port))
    built.start_all()
    return built


@pytest.fixture
async def admin(agent_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(agent_stack) as client:
        yield client


@pytest.fixture
async def create_user(admin: httpx.AsyncClient, agent_stack: Stack) -> AsyncIterator[UserFactory]:
    opened: list[httpx.AsyncClient] = []
    yield make_user_factory(admin, agent_stack.gateway_url, opened)
    for client in opened:
        await client.aclose()


@pytest.fixture
async def provider(admin: httpx.AsyncClient, llm: LlmStub) -> str:
    name = f"stub_{uuid.uuid4().hex[:8]}"
    reply = await admin.post(
        "/api/v1/llm-providers",
        json={
            "name": name,
            "base_url": llm.base_url,
            "api_key": PROVIDER_KEY,
            "default_model": "stub-model",
        },
    )
    assert reply.status_code == 201, reply.text
    assert PROVIDER_KEY not in reply.text
    assert reply.json()["name"] == name
    return name


async def create_agent_reply(
    admin: httpx.AsyncClient, provider: str, **fields: Any
) -> httpx.Response:
    body = {"namespace": f"ag_{uuid.uuid4().hex[:8]}", "name": "helper", "llm_provider": provider}
    return await admin.post("/api/v1/agents", json={**body, **fields})


async def create_agent(admin: httpx.AsyncClient, provider: str, **fields: Any) -> dict[str, Any]:
    reply = await create_agent_reply(admin, provider, **fields)
    assert reply.status_code == 201, reply.text
    document: dict[str, Any] = reply.json()
    return document


def agent_path(agent: dict[str, Any], action: str) -> str:
    return f"/agents/{agent['namespace']}/{agent['name']}/{action}"


async def run_agent(
    client: httpx.AsyncClient, agent: dict[str, Any], **body: Any
) -> dict[str, Any]:
    reply = await client.post(agent_path(agent, "execute/async"), json=body)
    assert reply.status_code == 202, reply.text
    queued: dict[str, Any] = reply.json()
    assert queued["status"] == "queued"
    return queued


def requests_with(llm: LlmStub, marker: str) -> list[dict[str, Any]]:
    """The recorded model calls whose messages mention `marker`, in arrival order."""
    return [
        body
        for body in llm.requests()
        if any(marker in str(message.get("content") or "") for message in body["messages"])
    ]


async def create_tool(
    admin: httpx.AsyncClient, *, requires_approval: bool = False
) -> tuple[str, str]:
    namespace, name = f"tools_{uuid.uuid4().hex[:8]}", "lookup"
    reply = await admin.post(
        "/api/v1/functions",
        json={
            "namespace": namespace,
            "name": name,
            "description": "Looks an order up by id.",
            "code": LOOKUP_CODE,
            "input_schema": LOOKUP_SCHEMA,
            "output_schema": {"type": "object"},
            "requires_approval": requires_approval,
        },
    )
    assert reply.status_code == 201, reply.text
    return namespace, name


async def test_management_round_trip(admin: httpx.AsyncClient, provider: str) -> None:
    agent = await create_agent(admin, provider, system_prompt="v1", max_turns=3)
    path = f"/api/v1/agents/{agent['namespace']}/{agent['name']}"

    assert agent["version"] == 1
    assert (agent["llm_provider"], agent["max_turns"]) == (provider, 3)
    updated = await admin.put(path, json={"system_prompt": "v2 {{ x }}"})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["version"], updated.json()["system_prompt"]) == (2, "v2 {{ x }}")
    assert (await admin.get(path)).json()["system_prompt"] == "v2 {{ x }}"
    bad_template = await admin.put(path, json={"system_prompt": "{% if %}"})
    assert bad_template.status_code in (400, 422), bad_template.text
    missing_tool = await create_agent_reply(admin, provider, enabled_functions=["nope/none"])
    assert missing_tool.status_code in (400, 404, 422), missing_tool.text
    assert (await admin.delete(path)).status_code == 204
    assert (await admin.get(path)).status_code == 404


async def test_templated_prompts_reach_the_model_exactly_as_rendered(
    admin: httpx.AsyncClient, provider: str, llm: LlmStub
) -> None:
    agent = await create_agent(
        admin,
        provider,
        system_prompt="You serve {{ customer }} on the {{ tier }} plan.",
        initial_messages=[
            {"role": "user", "content": 'Context: {{ customer }} <vip> & "friends"'},
            {"role": "assistant", "content": "Noted, {{ tier }}."},
        ],
        input_schema={
            "type": "object",
            "properties": {"customer": {"type": "string"}, "tier": {"type": "string"}},
            "required": ["customer", "tier"],
        },
    )
    marker = uuid.uuid4().hex
    message = f"Where is my order? {marker} & 'more'"
    queued = await run_agent(
        admin, agent, message=message, input={"customer": "Ada & Co", "tier": "gold"}
    )

    done = await wait_for_status(admin, queued["execution_id"])
    assert done["status"] == "COMPLETED", (done["error"], done)
    (sent,) = requests_with(llm, marker)
    assert sent["model"] == "stub-model"
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "You serve Ada & Co on the gold plan."),
        ("user", 'Context: Ada & Co <vip> & "friends"'),
        ("assistant", "Noted, gold."),
        ("user", message),
    ]
    assert not sent.get("tools")
    assert done["output_data"] == {
        "chat_id": queued["chat_id"],
        "final_message": f"Echo: {message}",
        "final_message_role": "assistant",
        "tool_calls": [],
    }
    assert (done["prompt_tokens"], done["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert done["chat_id"] == queued["chat_id"]
    assert done["kind"] == "agent"

    chat = (await admin.get(f"/chats/{queued['chat_id']}")).json()
    assert [(m["role"], m["content"]) for m in chat["messages"]] == [
        *[(m["role"], m["content"]) for m in sent["messages"]],
        ("assistant", f"Echo: {message}"),
    ]
    assert all(m["created_at"] for m in chat["messages"])
    assert chat["agent_namespace"] == agent["namespace"]
    listed = (await admin.get("/chats")).json()
    assert queued["chat_id"] in [c["chat_id"] for c in listed]


async def test_bad_variables_are_422_naming_the_field(
    admin: httpx.AsyncClient, provider: str
) -> None:
    schema = {
        "type": "object",
        "properties": {"customer": {"type": "string"}},
        "required": ["customer"],
    }
    agent = await create_agent(
        admin, provider, system_prompt="Hi {{ customer }}", input_schema=schema
    )
    loose = await create_agent(admin, provider, system_prompt="Hi {{ nobody }}")

    for variables in ({}, {"customer": 5}):
        reply = await admin.post(
            agent_path(agent, "execute/async"), json={"message": "x", "input": variables}
        )
        assert reply.status_code == 422, reply.text
        assert any("customer" in str(d["loc"]) for d in reply.json()["detail"]), reply.text
    undefined = await admin.post(agent_path(loose, "execute/async"), json={"message": "x"})
    assert undefined.status_code == 422, undefined.text
    assert any("nobody" in json.dumps(d) for d in undefined.json()["detail"]), undefined.text
    in_batch = await admin.post(
        agent_path(agent, "chats/batch"),
        json={
            "inputs": [
                {"input_variables": {"customer": "a"}, "message": "ok"},
                {"input_variables": {"customer": 7}, "message": "bad"},
            ]
        },
    )
    assert in_batch.status_code == 422, in_batch.text
    assert any(d["loc"][:3] == ["body", "inputs", 1] for d in in_batch.json()["detail"]), (
        in_batch.text
    )


async def test_a_tool_call_runs_the_function_and_the_answer_uses_its_result(
    admin: httpx.AsyncClient, provider: str, llm: LlmStub
) -> None:
    namespace, name = await create_tool(admin)
    agent = await create_agent(admin, provider, enabled_functions=[f"{namespace}/{name}"])
    marker = uuid.uuid4().hex
    queued = await run_agent(
        admin, agent, message=f'CALL_TOOL {namespace}/{name} {{"id": 42}} {marker}'
    )

    done = await wait_for_status(admin, queued["execution_id"], timeout=120)
    assert done["status"] == "COMPLETED", (done["error"], done)
    output = done["output_data"]
    assert output["chat_id"] == queued["chat_id"]
    assert output["final_message"].startswith("Tool said: ")
    assert json.loads(output["final_message"].removeprefix("Tool said: ")) == {
        "order": 42,
        "state": "shipped",
    }
    (call,) = output["tool_calls"]
    assert (call["name"], call["arguments"], call["status"]) == (
        f"{namespace}/{name}",
        {"id": 42},
        "COMPLETED",
    )
    child = (await admin.get(f"/executions/{call['execution_id']}")).json()
    assert child["output_data"] == {"order": 42, "state": "shipped"}
    assert (child["namespace"], child["function_name"]) == (namespace, name)
    assert (child["trigger_type"], child["trigger_id"]) == ("AGENT", queued["chat_id"])
    assert child["parent_execution_id"] == queued["execution_id"]
    assert child["chat_id"] == queued["chat_id"]
    assert (done["prompt_tokens"], done["completion_tokens"]) == (
        2 * PROMPT_TOKENS,
        2 * COMPLETION_TOKENS,
    )

    first, second = requests_with(llm, marker)
    (tool,) = first["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == f"{namespace}__{name}"
    assert tool["function"]["description"] == "Looks an order up by id."
    assert tool["function"]["parameters"] == LOOKUP_SCHEMA
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == call["id"]

    chat = (await admin.get(f"/chats/{queued['chat_id']}")).json()
    roles = [m["role"] for m in chat["messages"]]
    assert roles[-3:] == ["assistant", "tool", "assistant"]
    assistant_call, tool_message, final = chat["messages"][-3:]
    assert assistant_call["tool_calls"][0]["id"] == call["id"]
    assert tool_message["tool_call_id"] == call["id"]
    assert final["content"] == output["final_message"]


async def test_an_approval_requiring_tool_fails_the_run_with_the_exact_error(
    admin: httpx.AsyncClient, provider: str
) -> None:
    namespace, name = await create_tool(admin, requires_approval=True)
    agent = await create_agent(admin, provider, enabled_functions=[f"{namespace}/{name}"])
    queued = await run_agent(admin, agent, message=f'CALL_TOOL {namespace}/{name} {{"id": 1}}')

    done = await wait_for_status(admin, queued["execution_id"], timeout=120)

    assert done["status"] == "FAILED", done
    assert done["error"] == APPROVAL_ERROR
    ran = (await admin.get("/executions", params={"function_name": name, "limit": 1000})).json()
    assert [e for e in ran if e["namespace"] == namespace] == []


@pytest.mark.parametrize(("trigger", "expected"), [("FAIL500", "500"), ("GARBAGE", "")])
async def test_provider_failures_fail_the_run_cleanly(
    admin: httpx.AsyncClient, provider: str, trigger: str, expected: str
) -> None:
    agent = await create_agent(admin, provider)
    queued = await run_agent(admin, agent, message=f"please {trigger}")

    done = await wait_for_status(admin, queued["execution_id"], timeout=120)

    assert done["status"] == "FAILED", done
    assert done["error"], done
    assert expected in done["error"]
    assert (done["output_data"] or {}).get("final_message") is None
    invoked = await admin.post(agent_path(agent, "invoke"), json={"message": trigger})
    assert invoked.status_code == 502, invoked.text
    assert invoked.json()["reason"] == "agent_run_failed"


async def test_invoke_answers_the_reply_or_504(admin: httpx.AsyncClient, provider: str) -> None:
    agent = await create_agent(admin, provider, system_prompt="Be brief.")

    reply = await admin.post(agent_path(agent, "invoke"), json={"message": "hello there"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["reply"] == "Echo: hello there"
    assert body["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
    }
    chat = (await admin.get(f"/chats/{body['chat_id']}")).json()
    assert chat["messages"][-1]["content"] == "Echo: hello there"
    execution = (await admin.get(f"/executions/{body['execution_id']}")).json()
    assert execution["status"] == "COMPLETED"

    slow = await admin.post(agent_path(agent, "invoke"), json={"message": "SLOW4", "timeout": 1})
    assert slow.status_code == 504, slow.text
    assert slow.json()["detail"] == "Agent execution timed out"


async def test_chats_are_their_owners_and_running_needs_the_chat_permission(
    admin: httpx.AsyncClient, provider: str, create_user: UserFactory
) -> None:
    agent = await create_agent(admin, provider)
    chat_permission = f"sinas.agents/{agent['namespace']}/{agent['name']}.chat:own"
    owner = await create_user([chat_permission, "sinas.executions.read:own"])
    other = await create_user([chat_permission, "sinas.executions.read:own"])
    outsider = await create_user(["sinas.executions.read:own"])

    queued = await run_agent(owner.client, agent, message="mine")
    done = await wait_for_status(owner.client, queued["execution_id"])
    assert done["status"] == "COMPLETED", (done["error"], done)

    assert (await owner.client.get(f"/chats/{queued['chat_id']}")).status_code == 200
    hidden = await other.client.get(f"/chats/{queued['chat_id']}")
    assert hidden.status_code == 404, hidden.text
    assert (await other.client.get("/chats")).json() == []
    assert (await admin.get(f"/chats/{queued['chat_id']}")).status_code == 200
    refused = await outsider.client.post(agent_path(agent, "execute/async"), json={"message": "x"})
    assert refused.status_code == 403, refused.text


async def test_a_50_child_agent_batch_completes_with_transcripts_callbacks_and_one_summary(
    admin: httpx.AsyncClient, provider: str, receiver: CallbackReceiver
) -> None:
    agent = await create_agent(
        admin,
        provider,
        system_prompt="Item {{ n }} of the run.",
        input_schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    )
    run = uuid.uuid4().hex
    reply = await admin.post(
        agent_path(agent, "chats/batch"),
        json={
            "inputs": [{"input_variables": {"n": i}, "message": f"item {i}"} for i in range(50)],
            "trigger_id_prefix": "agents",
            "callback_url": receiver.url(f"/agent-child/{run}"),
            "batch_callback_url": receiver.url(f"/agent-batch/{run}"),
        },
    )
    assert reply.status_code == 202, reply.text
    submitted = reply.json()
    assert (submitted["total"], submitted["status"]) == (50, "queued")
    assert len(set(submitted["chat_ids"])) == len(set(submitted["execution_ids"])) == 50
    batch_id = submitted["batch_id"]

    document = await finished(admin, batch_id, timeout=240)
    assert document["status"] == "completed", document
    assert (document["completed"], document["failed"], document["kind"]) == (50, 0, "agent")
    assert document["target"] == {"namespace": agent["namespace"], "name": agent["name"]}
    assert (document["prompt_tokens"], document["completion_tokens"]) == (
        50 * PROMPT_TOKENS,
        50 * COMPLETION_TOKENS,
    )

    listed = await children(admin, batch_id)
    assert [c["execution_id"] for c in listed] == submitted["execution_ids"]
    assert [c["chat_id"] for c in listed] == submitted["chat_ids"]
    assert [c["trigger_id"] for c in listed] == [f"agents:{i}" for i in range(50)]
    for i in (0, 17, 49):
        chat = (await admin.get(f"/chats/{submitted['chat_ids'][i]}")).json()
        assert [(m["role"], m["content"]) for m in chat["messages"]] == [
            ("system", f"Item {i} of the run."),
            ("user", f"item {i}"),
            ("assistant", f"Echo: item {i}"),
        ]

    child_posts = await posts_to(receiver, f"/agent-child/{run}", 50, timeout=180)
    results = {}
    for post in child_posts:
        verify_signature(post)
        payload = json.loads(post.body)
        assert payload["status"] == "success", payload
        results[payload["execution_id"]] = payload["result"]
    assert sorted(results) == sorted(submitted["execution_ids"])
    for i, (execution_id, chat_id) in enumerate(
        zip(submitted["execution_ids"], submitted["chat_ids"], strict=True)
    ):
        assert results[execution_id] == {
            "chat_id": chat_id,
            "final_message": f"Echo: item {i}",
            "final_message_role": "assistant",
            "tool_calls": [],
        }

    (summary,) = await posts_to(receiver, f"/agent-batch/{run}", 1, timeout=180)
    verify_signature(summary)
    body = json.loads(summary.body)
    assert (body["batch_id"], body["status"], body["completed"]) == (batch_id, "completed", 50)
    await asyncio.sleep(1.0)
    assert len(receiver.requests_to(f"/agent-batch/{run}")) == 1, "one summary, never two"

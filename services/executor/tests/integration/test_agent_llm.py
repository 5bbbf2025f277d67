"""Agent runs over real HTTP against the scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sinas_devstack.llm_stub import COMPLETION_TOKENS, PROMPT_TOKENS, LlmStub
from sinas_executor.agent import AgentLimits, ChatAgentRunner
from sinas_executor.llm import HttpxChatModel
from sinas_executor.models import ChatMessage, ChildResult, OutcomeStatus
from sinas_executor.testing import RecordingToolScheduler, make_agent_run


@pytest.fixture(scope="module")
def llm_stub() -> Iterator[LlmStub]:
    with LlmStub() as stub:
        yield stub


@pytest.fixture
async def model() -> AsyncIterator[HttpxChatModel]:
    chat_model = HttpxChatModel()
    yield chat_model
    await chat_model.close()


def _run(stub: LlmStub, user: str, **overrides: Any) -> Any:
    messages = (
        ChatMessage(role="system", content="Answer for Tom & Jerry <b>now</b>"),
        ChatMessage(role="user", content=user),
    )
    return make_agent_run(provider_base_url=stub.base_url, messages=messages, **overrides)


async def test_the_transcript_reaches_the_model_exactly_and_usage_is_counted(
    llm_stub: LlmStub, model: HttpxChatModel
) -> None:
    llm_stub.clear()
    scheduler = RecordingToolScheduler()
    runner = ChatAgentRunner(model=model, scheduler=scheduler, limits=AgentLimits(), worker_id="w1")
    outcome = await runner.run(_run(llm_stub, "hello & goodbye", temperature=0.5))

    assert outcome.status is OutcomeStatus.COMPLETED, outcome.error
    assert outcome.output["final_message"] == "Echo: hello & goodbye"
    [body] = llm_stub.requests()
    assert body["model"] == "stub-model"
    assert body["temperature"] == 0.5
    assert body["messages"] == [
        {"role": "system", "content": "Answer for Tom & Jerry <b>now</b>"},
        {"role": "user", "content": "hello & goodbye"},
    ]
    assert body["tools"][0]["function"]["name"] == "math__add"
    assert llm_stub.authorizations() == ["Bearer sk-provider"]
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


async def test_a_tool_call_round_trip(llm_stub: LlmStub, model: HttpxChatModel) -> None:
    llm_stub.clear()
    scheduler = RecordingToolScheduler(
        results={
            "math/add": ChildResult(
                execution_id="", status="COMPLETED", finished=True, output={"sum": 5}
            )
        }
    )
    runner = ChatAgentRunner(model=model, scheduler=scheduler, limits=AgentLimits(), worker_id="w1")
    outcome = await runner.run(_run(llm_stub, 'CALL_TOOL math/add {"a": 2, "b": 3}'))

    assert outcome.status is OutcomeStatus.COMPLETED, outcome.error
    assert outcome.output["final_message"] == 'Tool said: {"sum":5}'
    [(_, _, [call])] = scheduler.submitted
    assert call.arguments == {"a": 2, "b": 3}
    [record] = outcome.output["tool_calls"]
    assert record["name"] == "math/add"
    assert record["execution_id"] == "child-1"
    assert record["status"] == "COMPLETED"
    _, second = llm_stub.requests()
    assert second["messages"][-1] == {
        "role": "tool",
        "content": '{"sum":5}',
        "tool_call_id": record["id"],
    }
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "math__add"
    assert outcome.prompt_tokens == 2 * PROMPT_TOKENS
    assert outcome.completion_tokens == 2 * COMPLETION_TOKENS
    assert [m.role for m in outcome.new_messages] == ["assistant", "tool", "assistant"]
    assert json.loads(outcome.new_messages[0].tool_calls[0]["function"]["arguments"]) == {
        "a": 2,
        "b": 3,
    }


@pytest.mark.parametrize(
    ("user", "error"),
    [
        ("FAIL500", 'LLM provider answered HTTP 500: {"error":{"message":"scripted failure"}}'),
        ("GARBAGE", "malformed LLM reply: not JSON (HTTP 200)"),
    ],
)
async def test_provider_failures_fail_the_run_cleanly(
    llm_stub: LlmStub, model: HttpxChatModel, user: str, error: str
) -> None:
    runner = ChatAgentRunner(
        model=model, scheduler=RecordingToolScheduler(), limits=AgentLimits(), worker_id="w1"
    )
    outcome = await runner.run(_run(llm_stub, user))
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == error
    assert outcome.output is None
    assert outcome.new_messages == ()


async def test_a_slow_provider_times_out_the_call(llm_stub: LlmStub, model: HttpxChatModel) -> None:
    runner = ChatAgentRunner(
        model=model,
        scheduler=RecordingToolScheduler(),
        limits=AgentLimits(call_timeout_seconds=0.5),
        worker_id="w1",
    )
    outcome = await runner.run(_run(llm_stub, "SLOW20 hi"))
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == "LLM provider timed out after 0.5 s"


async def test_the_run_timeout_bounds_a_slow_provider(
    llm_stub: LlmStub, model: HttpxChatModel
) -> None:
    runner = ChatAgentRunner(
        model=model, scheduler=RecordingToolScheduler(), limits=AgentLimits(), worker_id="w1"
    )
    outcome = await runner.run(_run(llm_stub, "SLOW20 hi", timeout_seconds=1))
    assert outcome.status is OutcomeStatus.FAILED
    # Whichever fires first, the call's timeout (capped by the run's) or the run's own.
    assert outcome.error in {"LLM provider timed out after 1 s", "agent run timed out after 1 s"}


async def test_an_unreachable_provider_fails_the_run(model: HttpxChatModel) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = ChatAgentRunner(
        model=model, scheduler=RecordingToolScheduler(), limits=AgentLimits(), worker_id="w1"
    )
    outcome = await runner.run(make_agent_run(provider_base_url=f"http://127.0.0.1:{port}/v1"))
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error.startswith("LLM provider unreachable: ConnectError")

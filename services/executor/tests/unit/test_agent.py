"""The agent loop over a scripted chat model and a recording fake of the scheduler's tool port."""

from __future__ import annotations

import json
from typing import Any

from sinas_executor.agent import APPROVAL_REQUIRED, AgentLimits, ChatAgentRunner
from sinas_executor.llm import ModelError, ModelReply, ModelRequest
from sinas_executor.models import AgentTool, ChatMessage, ChildResult, OutcomeStatus
from sinas_executor.testing import RecordingToolScheduler, ScriptedChatModel, make_agent_run


def _final(content: str, prompt: int = 10, completion: int = 4) -> ModelReply:
    return ModelReply(content=content, prompt_tokens=prompt, completion_tokens=completion)


def _calls(*calls: tuple[str, str, Any]) -> ModelReply:
    return ModelReply(
        content=None,
        tool_calls=tuple(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for call_id, name, args in calls
        ),
        prompt_tokens=7,
        completion_tokens=2,
    )


def _runner(
    model: ScriptedChatModel, scheduler: RecordingToolScheduler, **limits: float
) -> ChatAgentRunner:
    return ChatAgentRunner(
        model=model, scheduler=scheduler, limits=AgentLimits(**limits), worker_id="w1"
    )


async def test_a_final_answer_completes_with_the_transcript_and_usage() -> None:
    model = ScriptedChatModel(script=[_final("Hi there")])
    scheduler = RecordingToolScheduler()
    outcome = await _runner(model, scheduler).run(make_agent_run(temperature=0.2, max_tokens=50))

    assert outcome.status is OutcomeStatus.COMPLETED
    assert outcome.output == {
        "chat_id": "chat-1",
        "final_message": "Hi there",
        "final_message_role": "assistant",
        "tool_calls": [],
    }
    assert outcome.new_messages == (ChatMessage(role="assistant", content="Hi there"),)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (10, 4)
    [request] = model.requests
    assert request.body() == {
        "model": "stub-model",
        "messages": [
            {"role": "system", "content": "You add & subtract."},
            {"role": "user", "content": "hello"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "math__add",
                    "description": "Adds two numbers",
                    "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
                },
            }
        ],
        "temperature": 0.2,
        "max_tokens": 50,
    }
    assert request.api_key == "sk-provider"
    assert scheduler.submitted == []


async def test_a_tool_call_runs_a_child_and_its_output_goes_back_to_the_model() -> None:
    model = ScriptedChatModel(script=[_calls(("c1", "math__add", {"a": 2})), _final("It is 3")])
    scheduler = RecordingToolScheduler(
        results={
            "math/add": ChildResult(
                execution_id="", status="COMPLETED", finished=True, output={"sum": 3}
            )
        },
        unfinished_waits=2,
    )
    outcome = await _runner(model, scheduler).run(make_agent_run())

    assert outcome.status is OutcomeStatus.COMPLETED
    [(parent, attempt, [call])] = scheduler.submitted
    assert (parent, attempt, scheduler.submitted_by) == ("agent-1", 1, ["w1"])
    assert (call.tool_call_id, call.namespace, call.name, call.arguments) == (
        "c1",
        "math",
        "add",
        {"a": 2},
    )
    # The child is waited for with the run's own token until it finishes.
    assert [w[:2] for w in scheduler.waits] == [("child-1", "run-token")] * 3
    assert outcome.output["tool_calls"] == [
        {
            "id": "c1",
            "name": "math/add",
            "arguments": {"a": 2},
            "execution_id": "child-1",
            "status": "COMPLETED",
        }
    ]
    assert outcome.output["final_message"] == "It is 3"
    second = model.requests[1].messages
    assert second[-2]["role"] == "assistant"
    assert second[-2]["content"] is None
    assert second[-2]["tool_calls"][0]["id"] == "c1"
    assert second[-1] == {"role": "tool", "content": '{"sum":3}', "tool_call_id": "c1"}
    assert [m.role for m in outcome.new_messages] == ["assistant", "tool", "assistant"]
    assert outcome.new_messages[1].tool_call_id == "c1"
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (17, 6)


async def test_a_failed_child_reports_its_error_to_the_model() -> None:
    model = ScriptedChatModel(script=[_calls(("c1", "math__add", {})), _final("Sorry")])
    scheduler = RecordingToolScheduler(
        results={
            "math/add": ChildResult(
                execution_id="", status="FAILED", finished=True, error="ValueError: nope"
            )
        }
    )
    outcome = await _runner(model, scheduler).run(make_agent_run())

    assert outcome.status is OutcomeStatus.COMPLETED
    tool_message = model.requests[1].messages[-1]
    assert json.loads(tool_message["content"]) == {"error": "ValueError: nope", "status": "FAILED"}
    assert outcome.output["tool_calls"][0]["status"] == "FAILED"


async def test_an_approval_requiring_tool_fails_the_run_before_anything_is_submitted() -> None:
    tools = (AgentTool(namespace="ops", name="deploy", requires_approval=True),)
    model = ScriptedChatModel(script=[_calls(("c1", "ops__deploy", {}))])
    scheduler = RecordingToolScheduler()
    outcome = await _runner(model, scheduler).run(make_agent_run(tools=tools))

    assert outcome.status is OutcomeStatus.FAILED
    assert (
        outcome.error == APPROVAL_REQUIRED == "approval required; agent invoked async cannot pause"
    )
    assert scheduler.submitted == []
    assert outcome.new_messages[0].tool_calls[0]["id"] == "c1"


async def test_the_scheduler_flagging_approval_fails_the_run() -> None:
    model = ScriptedChatModel(script=[_calls(("c1", "math__add", {}))])
    scheduler = RecordingToolScheduler(approval={"math/add"})
    outcome = await _runner(model, scheduler).run(make_agent_run())

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == APPROVAL_REQUIRED
    assert scheduler.waits == []


async def test_refused_unknown_and_malformed_calls_are_told_to_the_model() -> None:
    model = ScriptedChatModel(
        script=[
            _calls(
                ("c1", "math__add", {"a": "x"}),
                ("c2", "nope__missing", {}),
                ("c3", "math__add", "{not json"),
                ("c4", "math__add", "[1]"),
            ),
            _final("done"),
        ]
    )
    scheduler = RecordingToolScheduler(refuse={"math/add": "input.a: 'x' is not of type 'number'"})
    outcome = await _runner(model, scheduler).run(make_agent_run())

    assert outcome.status is OutcomeStatus.COMPLETED
    # Only the well-formed call of a known tool reaches the scheduler.
    [(_, _, [call])] = scheduler.submitted
    assert call.tool_call_id == "c1"
    tool_messages = model.requests[1].messages[-4:]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2", "c3", "c4"]
    errors = [json.loads(m["content"])["error"] for m in tool_messages]
    assert errors == [
        "input.a: 'x' is not of type 'number'",
        "unknown tool 'nope__missing'",
        "the tool call's arguments are not valid JSON",
        "the tool call's arguments are not a JSON object",
    ]
    records = outcome.output["tool_calls"]
    assert [r["status"] for r in records] == ["REFUSED"] * 4
    assert [r["name"] for r in records] == ["math/add", "nope__missing", "math/add", "math/add"]
    assert all(r["execution_id"] == "" for r in records)


async def test_max_turns_without_a_final_answer_fails_saying_so() -> None:
    model = ScriptedChatModel(
        script=[_calls((f"c{i}", "math__add", {})) for i in range(3)]  # never a final answer
    )
    scheduler = RecordingToolScheduler()
    outcome = await _runner(model, scheduler).run(make_agent_run(max_turns=3))

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == "agent reached max_turns (3) without a final answer"
    assert len(model.requests) == 3
    assert len(scheduler.submitted) == 3
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (21, 6)
    # The transcript so far is still recorded with the failure.
    assert len(outcome.new_messages) == 6


async def test_a_provider_error_fails_the_run_keeping_earlier_usage() -> None:
    model = ScriptedChatModel(
        script=[
            _calls(("c1", "math__add", {})),
            ModelError("LLM provider answered HTTP 500: boom"),
        ]
    )
    outcome = await _runner(model, RecordingToolScheduler()).run(make_agent_run())

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error == "LLM provider answered HTTP 500: boom"
    assert not outcome.timed_out
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (7, 2)


async def test_the_run_timeout_fails_it_as_timed_out() -> None:
    model = ScriptedChatModel(script=[_final("late")], delay_seconds=30)
    outcome = await _runner(model, RecordingToolScheduler()).run(make_agent_run(timeout_seconds=1))

    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.timed_out
    assert outcome.error == "agent run timed out after 1 s"


async def test_each_call_gets_the_per_call_timeout_within_the_run_deadline() -> None:
    model = ScriptedChatModel(script=[_final("a")])
    await _runner(model, RecordingToolScheduler(), call_timeout_seconds=5).run(make_agent_run())
    assert 0 < model.timeouts[0] <= 5

    model = ScriptedChatModel(script=[_final("b")])
    await _runner(model, RecordingToolScheduler(), call_timeout_seconds=500).run(
        make_agent_run(timeout_seconds=2)
    )
    assert 0 < model.timeouts[0] <= 2


async def test_a_transcript_with_tool_calls_is_sent_back_in_the_request_shape() -> None:
    earlier = (
        ChatMessage(role="user", content="go"),
        ChatMessage(
            role="assistant",
            tool_calls=({"id": "c0", "type": "function", "function": {"name": "math__add"}},),
        ),
        ChatMessage(role="tool", content="{}", tool_call_id="c0"),
    )

    def check(request: ModelRequest) -> ModelReply:
        return _final(json.dumps(request.messages))

    model = ScriptedChatModel(script=[check])
    outcome = await _runner(model, RecordingToolScheduler()).run(
        make_agent_run(messages=earlier, tools=())
    )
    assert json.loads(outcome.output["final_message"]) == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "math__add"}}],
        },
        {"role": "tool", "content": "{}", "tool_call_id": "c0"},
    ]
    assert "tools" not in model.requests[0].body()

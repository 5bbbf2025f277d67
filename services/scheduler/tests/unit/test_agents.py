"""Agent rendering and tool-call checks over recording fakes of the ports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from sinas_common.errors import InvalidTransition
from sinas_scheduler.agent_models import (
    APPROVAL_REQUIRED_ERROR,
    AgentSpec,
    RunningAgentExecution,
    ToolCall,
)
from sinas_scheduler.agent_runs import AgentRunLimits, AgentRunUseCases
from sinas_scheduler.agent_validation import render_transcript
from sinas_scheduler.encryption import FernetCipher, generate_key
from sinas_scheduler.models import Function, FunctionSpec, NewExecution, User
from sinas_scheduler.tokens import TokenService, generate_signing_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(**overrides: Any) -> AgentSpec:
    values: dict[str, Any] = {
        "description": "",
        "llm_provider": "stub",
        "model": "",
        "system_prompt": "Serve {{ who }} & co <b>",
        "initial_messages": [{"role": "user", "content": "{{ who }} asks"}],
        "input_schema": {"type": "object", "required": ["who"]},
        "temperature": None,
        "max_tokens": None,
        "enabled_functions": ("tools/add",),
        "max_turns": 10,
        **overrides,
    }
    return AgentSpec(**values)


def test_templates_render_without_escaping_in_transcript_order() -> None:
    transcript, problems = render_transcript(spec(), {"who": "A&B"}, "hi <there>")
    assert problems == []
    assert [(m.role, m.content) for m in transcript] == [
        ("system", "Serve A&B & co <b>"),
        ("user", "A&B asks"),
        ("user", "hi <there>"),
    ]


def test_an_empty_system_prompt_adds_no_system_message() -> None:
    transcript, _ = render_transcript(
        spec(system_prompt="", initial_messages=[], input_schema={}), {}, "m"
    )
    assert [(m.role, m.content) for m in transcript] == [("user", "m")]


def test_required_variables_fail_even_when_none_are_given() -> None:
    _, problems = render_transcript(spec(), {}, "m", item="inputs[3].")
    assert [p.field for p in problems] == ["inputs[3].input_variables.who"]


def test_an_undefined_variable_names_the_variable_and_the_template_field() -> None:
    _, problems = render_transcript(
        spec(input_schema={}, initial_messages=[{"role": "user", "content": "{{ x.y }}"}]),
        {"who": "a"},
        "m",
    )
    [problem] = problems
    assert problem.field == "input_variables.x"
    assert "initial_messages[0].content" in problem.description


def test_the_sandbox_refuses_unsafe_attribute_access() -> None:
    _, problems = render_transcript(
        spec(system_prompt="{{ who.__class__.__mro__ }}", input_schema={}), {"who": "a"}, "m"
    )
    [problem] = problems
    assert problem.field == "system_prompt"
    assert "unsafe" in problem.description


class RecordingChats:
    def __init__(self, parent: RunningAgentExecution | None) -> None:
        self.parent = parent
        self.inserted: list[NewExecution] = []

    async def running_agent_execution(
        self, execution_id: str, attempt: int, worker_id: str
    ) -> RunningAgentExecution | None:
        held = attempt == 1 and worker_id == WORKER
        return self.parent if self.parent and held else None

    async def insert_tool_calls(
        self, parent: RunningAgentExecution, children: Sequence[NewExecution]
    ) -> None:
        self.inserted.extend(children)


class InMemoryFunctions:
    def __init__(self, *functions: Function) -> None:
        self.functions = functions

    async def live_functions(self, names: Sequence[tuple[str, str]]) -> list[Function]:
        return [f for f in self.functions if (f.namespace, f.name) in set(names)]


class FixedIdentity:
    def __init__(self, permissions: frozenset[str]) -> None:
        self.permissions = permissions

    async def user_with_permissions(self, user_id: str) -> tuple[User, frozenset[str]] | None:
        user = User(id=user_id, email="u@example.com", roles=(), created_at=NOW)
        return user, self.permissions


def function(name: str, *, requires_approval: bool = False) -> Function:
    return Function(
        id=f"f-{name}",
        namespace="tools",
        name=name,
        owner_user_id="admin",
        spec=FunctionSpec(
            description="",
            code="",
            input_schema={"type": "object", "properties": {"a": {"type": "integer"}}},
            output_schema={},
            timeout_seconds=30,
            requires_approval=requires_approval,
        ),
        version=4,
        created_at=NOW,
        updated_at=NOW,
    )


def use_cases(
    chats: RecordingChats, *, permissions: frozenset[str], max_depth: int = 4
) -> AgentRunUseCases:
    return AgentRunUseCases(
        agents=InMemoryFunctions(function("add"), function("gate", requires_approval=True)),  # type: ignore[arg-type]
        chats=chats,  # type: ignore[arg-type]
        identity=FixedIdentity(permissions),  # type: ignore[arg-type]
        cipher=FernetCipher(generate_key()),
        tokens=TokenService(generate_signing_key(), []),
        limits=AgentRunLimits(
            run_timeout_seconds=600,
            max_depth=max_depth,
            token_buffer_seconds=300,
            max_token_seconds=86400,
        ),
    )


PARENT = RunningAgentExecution(
    execution_id="run-1",
    user_id="u1",
    chat_id="chat-1",
    depth=1,
    enabled_functions=("tools/add", "tools/gate", "tools/missing"),
)
EXECUTE_ALL = frozenset({"sinas.functions/*/*.execute:own"})
WORKER = "w1"


def call(call_id: str, name: str, arguments: Any) -> ToolCall:
    return ToolCall(tool_call_id=call_id, namespace="tools", name=name, arguments=arguments)


async def test_accepted_calls_become_children_and_refusals_come_back_per_call() -> None:
    chats = RecordingChats(PARENT)
    submissions = await use_cases(chats, permissions=EXECUTE_ALL).submit_tool_calls(
        "run-1",
        1,
        [
            call("c1", "add", {"a": 1}),
            call("c2", "add", {"a": "x"}),
            call("c3", "missing", {}),
            call("c4", "sub", {}),
        ],
        worker_id=WORKER,
    )
    assert [bool(s.execution_id) for s in submissions] == [True, False, False, False]
    assert "arguments.a" in submissions[1].error
    assert submissions[2].error == "function tools/missing not found"
    assert submissions[3].error == "function tools/sub is not enabled for this agent"
    [child] = chats.inserted
    assert (child.id, child.function_id, child.function_version, child.depth) == (
        submissions[0].execution_id,
        "f-add",
        4,
        2,
    )
    assert (child.trigger_type, child.trigger_id, child.parent_execution_id) == (
        "AGENT",
        "chat-1",
        "run-1",
    )
    assert (child.chat_id, child.tool_call_id, child.input) == ("chat-1", "c1", {"a": 1})


async def test_the_users_permission_and_the_depth_limit_apply_per_call() -> None:
    chats = RecordingChats(PARENT)
    denied = await use_cases(chats, permissions=frozenset()).submit_tool_calls(
        "run-1", 1, [call("c1", "add", {})], worker_id=WORKER
    )
    assert denied[0].error == "not authorized to execute function tools/add"
    deep = await use_cases(chats, permissions=EXECUTE_ALL, max_depth=1).submit_tool_calls(
        "run-1", 1, [call("c1", "add", {})], worker_id=WORKER
    )
    assert deep[0].error == "Maximum execution depth (1) exceeded"
    assert chats.inserted == []


async def test_calls_for_an_attempt_another_worker_holds_are_refused() -> None:
    chats = RecordingChats(PARENT)
    cases = use_cases(chats, permissions=EXECUTE_ALL)
    for attempt, worker_id in ((1, "w2"), (2, WORKER)):
        with pytest.raises(InvalidTransition, match="not an agent run held by attempt"):
            await cases.submit_tool_calls(
                "run-1", attempt, [call("c1", "add", {"a": 1})], worker_id=worker_id
            )
    assert chats.inserted == []


async def test_an_approval_requiring_tool_is_flagged_and_nothing_is_created() -> None:
    chats = RecordingChats(PARENT)
    submissions = await use_cases(chats, permissions=EXECUTE_ALL).submit_tool_calls(
        "run-1", 1, [call("c1", "add", {"a": 1}), call("c2", "gate", {})], worker_id=WORKER
    )
    assert (submissions[1].requires_approval, submissions[1].error) == (
        True,
        APPROVAL_REQUIRED_ERROR,
    )
    assert submissions[0].execution_id == ""
    assert chats.inserted == []

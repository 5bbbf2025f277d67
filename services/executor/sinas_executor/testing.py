"""Recording fakes for agent runs: a scripted chat model and the scheduler's tool call port."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sinas_executor.llm import ModelError, ModelReply, ModelRequest
from sinas_executor.models import (
    AgentTool,
    ChatMessage,
    ChildResult,
    ClaimedAgentRun,
    ToolCallRequest,
    ToolCallSubmission,
)

ScriptStep = ModelReply | ModelError | Callable[[ModelRequest], ModelReply]


@dataclass
class ScriptedChatModel:
    """ChatModel fake: answers each call with the next scripted step, records the requests."""

    script: list[ScriptStep] = field(default_factory=list)
    delay_seconds: float = 0.0
    requests: list[ModelRequest] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    async def complete(self, request: ModelRequest, *, timeout_seconds: float) -> ModelReply:
        self.requests.append(request)
        self.timeouts.append(timeout_seconds)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        step = self.script.pop(0)
        if isinstance(step, ModelError):
            raise step
        if isinstance(step, ModelReply):
            return step
        return step(request)


@dataclass
class RecordingToolScheduler:
    """AgentSchedulerPort fake: each accepted call becomes a child that ends as configured."""

    # By "ns/name": how its children end (default: COMPLETED with output {"ok": True}).
    results: dict[str, ChildResult] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    approval: set[str] = field(default_factory=set)
    # Waits that answer "not finished yet" before the real result, per child.
    unfinished_waits: int = 0
    submitted: list[tuple[str, int, list[ToolCallRequest]]] = field(default_factory=list)
    # The worker id each submit named, in order.
    submitted_by: list[str] = field(default_factory=list)
    waits: list[tuple[str, str, float]] = field(default_factory=list)
    _children: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def submit_tool_calls(
        self,
        execution_id: str,
        attempt: int,
        calls: Sequence[ToolCallRequest],
        *,
        worker_id: str,
    ) -> list[ToolCallSubmission]:
        self.submitted.append((execution_id, attempt, list(calls)))
        self.submitted_by.append(worker_id)
        answers = []
        for call in calls:
            name = f"{call.namespace}/{call.name}"
            if name in self.approval:
                answers.append(
                    ToolCallSubmission(tool_call_id=call.tool_call_id, requires_approval=True)
                )
            elif name in self.refuse:
                answers.append(
                    ToolCallSubmission(tool_call_id=call.tool_call_id, error=self.refuse[name])
                )
            else:
                child = f"child-{next(self._ids)}"
                self._children[child] = name
                answers.append(
                    ToolCallSubmission(tool_call_id=call.tool_call_id, execution_id=child)
                )
        return answers

    async def wait_execution(
        self, execution_id: str, *, access_token: str, timeout_seconds: float
    ) -> ChildResult:
        self.waits.append((execution_id, access_token, timeout_seconds))
        earlier = sum(1 for w in self.waits if w[0] == execution_id)
        if earlier <= self.unfinished_waits:
            return ChildResult(execution_id=execution_id, status="RUNNING", finished=False)
        configured = self.results.get(self._children[execution_id])
        if configured is None:
            return ChildResult(
                execution_id=execution_id, status="COMPLETED", finished=True, output={"ok": True}
            )
        return ChildResult(
            execution_id=execution_id,
            status=configured.status,
            finished=True,
            output=configured.output,
            error=configured.error,
        )


def make_agent_run(**overrides: Any) -> ClaimedAgentRun:
    """A claimed agent run with defaults; override any field by keyword."""
    values: dict[str, Any] = {
        "execution_id": "agent-1",
        "attempt": 1,
        "user_id": "user-1",
        "chat_id": "chat-1",
        "access_token": "run-token",
        "provider_base_url": "http://127.0.0.1:9/v1",
        "provider_api_key": "sk-provider",
        "model": "stub-model",
        "max_turns": 5,
        "timeout_seconds": 60,
        "messages": (
            ChatMessage(role="system", content="You add & subtract."),
            ChatMessage(role="user", content="hello"),
        ),
        "tools": (
            AgentTool(
                namespace="math",
                name="add",
                description="Adds two numbers",
                input_schema={"type": "object", "properties": {"a": {"type": "number"}}},
            ),
        ),
    }
    values.update(overrides)
    return ClaimedAgentRun(**values)

"""One claimed agent run: the Chat Completions loop, tool calls as child executions, outcome."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sinas_common.grpc_client import call_with_retry
from sinas_common.jsoncodec import dump_json
from sinas_common.timeconv import utcnow
from sinas_executor.llm import ChatModel, ModelError, ModelReply, ModelRequest
from sinas_executor.models import (
    AgentTool,
    ChatMessage,
    ChildResult,
    ClaimedAgentRun,
    ExecutionOutcome,
    OutcomeStatus,
    ToolCallRequest,
)
from sinas_executor.scheduler_client import AgentSchedulerPort

logger = logging.getLogger(__name__)

APPROVAL_REQUIRED = "approval required; agent invoked async cannot pause"
# The model sees `ns/name` as the function tool `ns__name` (OpenAI names allow no slash).
TOOL_NAME_SEPARATOR = "__"
DEFAULT_MAX_TURNS = 10
# A wait on a child is a held RPC: long enough to be cheap, short enough to notice the deadline.
WAIT_CHUNK_SECONDS = 20.0
REFUSED = "REFUSED"
SCHEDULER_ATTEMPTS = 3


class AgentRunner(Protocol):
    """Runs one claimed agent attempt to its outcome."""

    async def run(self, run: ClaimedAgentRun) -> ExecutionOutcome: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLimits:
    """Time limits of agent runs."""

    # One Chat Completions call; the run's own deadline still bounds it.
    call_timeout_seconds: float = 120.0
    # When the claim carries no run timeout.
    run_timeout_seconds: float = 600.0


def tool_name(tool: AgentTool) -> str:
    return f"{tool.namespace}{TOOL_NAME_SEPARATOR}{tool.name}"


def tool_definition(tool: AgentTool) -> dict[str, Any]:
    """An OpenAI function tool for one enabled function."""
    schema = tool.input_schema or {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {
            "name": tool_name(tool),
            "description": tool.description,
            "parameters": schema,
        },
    }


def message_for_model(message: ChatMessage) -> dict[str, Any]:
    """A transcript message in the Chat Completions request shape."""
    document: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        document["tool_calls"] = list(message.tool_calls)
        if not message.content:
            document["content"] = None
    if message.role == "tool":
        document["tool_call_id"] = message.tool_call_id
    return document


def tool_result_content(result: ChildResult) -> str:
    """What the model reads back from a child: its output JSON, or its error."""
    if result.status == "COMPLETED":
        return dump_json(result.output).decode()
    error = result.error or f"the tool execution ended {result.status}"
    return json.dumps({"error": error, "status": result.status})


class _Transcript:
    """What one attempt has said and spent so far; builds its outcome."""

    def __init__(self, run: ClaimedAgentRun) -> None:
        self.run = run
        self.for_model = [message_for_model(m) for m in run.messages]
        self.new_messages: list[ChatMessage] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def add(self, message: ChatMessage) -> None:
        self.new_messages.append(message)
        self.for_model.append(message_for_model(message))

    def add_reply(self, reply: ModelReply) -> None:
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.add(
            ChatMessage(role="assistant", content=reply.content or "", tool_calls=reply.tool_calls)
        )

    def outcome(
        self, status: OutcomeStatus, *, output: Any = None, error: str = "", timed_out: bool = False
    ) -> ExecutionOutcome:
        return ExecutionOutcome(
            execution_id=self.run.execution_id,
            attempt=self.run.attempt,
            status=status,
            output=output,
            error=error,
            timed_out=timed_out,
            completed_at=utcnow(),
            new_messages=tuple(self.new_messages),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )

    def completed(self, final_message: str) -> ExecutionOutcome:
        output = {
            "chat_id": self.run.chat_id,
            "final_message": final_message,
            "final_message_role": "assistant",
            "tool_calls": list(self.tool_calls),
        }
        return self.outcome(OutcomeStatus.COMPLETED, output=output)


@dataclass(slots=True)
class _PendingCall:
    call_id: str
    model_name: str
    arguments: Any
    tool: AgentTool | None
    refusal: str = ""
    execution_id: str = ""


def _parse_call(call: dict[str, Any], tools: dict[str, AgentTool]) -> _PendingCall:
    name = str(call["function"]["name"])
    pending = _PendingCall(call_id=str(call["id"]), model_name=name, arguments={}, tool=None)
    pending.tool = tools.get(name)
    if pending.tool is None:
        pending.refusal = f"unknown tool {name!r}"
        return pending
    raw = call["function"].get("arguments") or "{}"
    try:
        arguments = json.loads(raw)
    except json.JSONDecodeError:
        pending.refusal = "the tool call's arguments are not valid JSON"
        return pending
    if not isinstance(arguments, dict):
        pending.refusal = "the tool call's arguments are not a JSON object"
        return pending
    pending.arguments = arguments
    return pending


class ChatAgentRunner:
    """AgentRunner over a chat model and the scheduler's tool call RPCs, for the runs that
    `worker_id` (the consumer's) claimed: the scheduler takes tool calls only from it."""

    def __init__(
        self,
        *,
        model: ChatModel,
        scheduler: AgentSchedulerPort,
        limits: AgentLimits,
        worker_id: str,
    ) -> None:
        self._model = model
        self._scheduler = scheduler
        self._limits = limits
        self._worker_id = worker_id

    async def run(self, run: ClaimedAgentRun) -> ExecutionOutcome:
        """Runs the loop to a final answer; every failure comes back as a FAILED outcome."""
        transcript = _Transcript(run)
        timeout = float(run.timeout_seconds) or self._limits.run_timeout_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        logger.info(
            "agent run started",
            extra={"action": "agent_start", "execution_id": run.execution_id},
        )
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await self._loop(run, transcript, deadline)
        except TimeoutError:
            outcome = transcript.outcome(
                OutcomeStatus.FAILED,
                error=f"agent run timed out after {timeout:g} s",
                timed_out=True,
            )
        logger.info(
            "agent run finished",
            extra={
                "action": "agent_end",
                "execution_id": run.execution_id,
                "status": outcome.status.value,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
            },
        )
        return outcome

    async def _loop(
        self, run: ClaimedAgentRun, transcript: _Transcript, deadline: float
    ) -> ExecutionOutcome:
        loop = asyncio.get_running_loop()
        tools = [tool_definition(t) for t in run.tools]
        max_turns = run.max_turns if run.max_turns > 0 else DEFAULT_MAX_TURNS
        for _ in range(max_turns):
            request = ModelRequest(
                base_url=run.provider_base_url,
                api_key=run.provider_api_key,
                model=run.model,
                messages=list(transcript.for_model),
                tools=tools,
                temperature=run.temperature,
                max_tokens=run.max_tokens,
            )
            call_timeout = min(self._limits.call_timeout_seconds, deadline - loop.time())
            if call_timeout <= 0:
                # The run's own deadline, reached between calls: reported as the run's timeout.
                raise TimeoutError
            try:
                reply = await self._model.complete(request, timeout_seconds=call_timeout)
            except ModelError as exc:
                return transcript.outcome(OutcomeStatus.FAILED, error=str(exc))
            transcript.add_reply(reply)
            if not reply.tool_calls:
                return transcript.completed(reply.content or "")
            failure = await self._call_tools(run, transcript, reply.tool_calls, deadline)
            if failure:
                return transcript.outcome(OutcomeStatus.FAILED, error=failure)
        return transcript.outcome(
            OutcomeStatus.FAILED,
            error=f"agent reached max_turns ({max_turns}) without a final answer",
        )

    async def _call_tools(
        self,
        run: ClaimedAgentRun,
        transcript: _Transcript,
        calls: Sequence[dict[str, Any]],
        deadline: float,
    ) -> str:
        """Runs one reply's tool calls and adds their results; a non-empty return fails the run."""
        tools = {tool_name(t): t for t in run.tools}
        pending = [_parse_call(call, tools) for call in calls]
        if any(p.tool is not None and p.tool.requires_approval for p in pending):
            return APPROVAL_REQUIRED
        requests = [
            ToolCallRequest(
                tool_call_id=p.call_id,
                namespace=p.tool.namespace,
                name=p.tool.name,
                arguments=p.arguments,
            )
            for p in pending
            if p.tool is not None and not p.refusal
        ]
        if requests:
            try:
                submissions = await call_with_retry(
                    lambda: self._scheduler.submit_tool_calls(
                        run.execution_id, run.attempt, requests, worker_id=self._worker_id
                    ),
                    attempts=SCHEDULER_ATTEMPTS,
                )
            except Exception as exc:
                logger.warning(
                    "tool calls not submitted",
                    extra={"action": "tool_calls", "execution_id": run.execution_id},
                    exc_info=True,
                )
                return f"tool calls could not be submitted: {exc}"
            if any(s.requires_approval for s in submissions):
                return APPROVAL_REQUIRED
            by_call = {s.tool_call_id: s for s in submissions}
            for p in pending:
                if p.tool is None or p.refusal:
                    continue
                submission = by_call.get(p.call_id)
                if submission is None:
                    p.refusal = "the scheduler did not answer this tool call"
                elif submission.execution_id:
                    p.execution_id = submission.execution_id
                else:
                    p.refusal = submission.error or "the tool call was refused"
        children = [p.execution_id for p in pending if p.execution_id]
        try:
            results = await asyncio.gather(
                *(self._wait(run, execution_id, deadline) for execution_id in children)
            )
        except Exception as exc:
            return f"tool results could not be read: {exc}"
        by_child = dict(zip(children, results, strict=True))
        for p in pending:
            name = f"{p.tool.namespace}/{p.tool.name}" if p.tool else p.model_name
            if p.execution_id:
                result = by_child[p.execution_id]
                status, content = result.status, tool_result_content(result)
            else:
                status, content = REFUSED, json.dumps({"error": p.refusal, "status": REFUSED})
            transcript.tool_calls.append(
                {
                    "id": p.call_id,
                    "name": name,
                    "arguments": p.arguments,
                    "execution_id": p.execution_id,
                    "status": status,
                }
            )
            transcript.add(ChatMessage(role="tool", content=content, tool_call_id=p.call_id))
        return ""

    async def _wait(self, run: ClaimedAgentRun, execution_id: str, deadline: float) -> ChildResult:
        loop = asyncio.get_running_loop()
        while True:
            chunk = max(0.1, min(WAIT_CHUNK_SECONDS, deadline - loop.time()))

            async def wait_once(seconds: float = chunk) -> ChildResult:
                return await self._scheduler.wait_execution(
                    execution_id, access_token=run.access_token, timeout_seconds=seconds
                )

            # Retryable failures (a restarting scheduler) are retried until the run's deadline.
            result = await call_with_retry(wait_once, attempts=None)
            if result.finished:
                return result

"""What executors ask about agent runs: the claimed run's context (provider, transcript,
tools, token), and tool calls that become child function executions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sinas_common.errors import InvalidTransition
from sinas_common.ids import uuid7
from sinas_scheduler import permissions as perms
from sinas_scheduler.agent_models import (
    APPROVAL_REQUIRED_ERROR,
    TRIGGER_TYPE_AGENT,
    AgentTool,
    ClaimedAgentRun,
    ToolCall,
    ToolCallSubmission,
    tool_name,
)
from sinas_scheduler.agent_validation import split_function_name
from sinas_scheduler.encryption import SecretCipher
from sinas_scheduler.models import KIND_FUNCTION, ClaimedRow, Function, NewExecution
from sinas_scheduler.store import AgentStore, ChatStore, IdentityStore
from sinas_scheduler.tokens import TokenService, execution_token_lifetime
from sinas_scheduler.validation import input_violations

logger = logging.getLogger(__name__)

NOT_RUN_ERROR = "not run: another tool call of this turn requires approval"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRunLimits:
    run_timeout_seconds: int
    max_depth: int
    token_buffer_seconds: int
    max_token_seconds: int


class AgentRunUseCases:
    def __init__(
        self,
        *,
        agents: AgentStore,
        chats: ChatStore,
        identity: IdentityStore,
        cipher: SecretCipher,
        tokens: TokenService,
        limits: AgentRunLimits,
    ) -> None:
        self._agents = agents
        self._chats = chats
        self._identity = identity
        self._cipher = cipher
        self._tokens = tokens
        self._limits = limits

    async def prepare(
        self, rows: Sequence[ClaimedRow], now: datetime
    ) -> tuple[ClaimedAgentRun, ...]:
        """The claimed agent rows with everything a run needs, in three statements in all."""
        if not rows:
            return ()
        contexts = await self._chats.run_contexts([row.chat_id for row in rows if row.chat_id])
        wanted = sorted(
            {
                pair
                for context in contexts.values()
                for pair in map(split_function_name, context.enabled_functions)
                if pair is not None
            }
        )
        tools = {
            tool_name(f.namespace, f.name): _tool(f)
            for f in await self._agents.live_functions(wanted)
        }
        lifetime = execution_token_lifetime(
            function_timeout_seconds=self._limits.run_timeout_seconds,
            buffer_seconds=self._limits.token_buffer_seconds,
            max_seconds=self._limits.max_token_seconds,
        )
        runs: list[ClaimedAgentRun] = []
        for row in rows:
            context = contexts.get(row.chat_id or "")
            if context is None:
                # Retention never removes a chat while its executions remain; log, don't crash.
                logger.error(
                    "agent run without its chat",
                    extra={"action": "claim", "execution_id": row.execution_id},
                )
                continue
            runs.append(
                ClaimedAgentRun(
                    execution_id=row.execution_id,
                    attempt=row.attempt,
                    user_id=row.user_id,
                    user_email=row.user_email,
                    chat_id=context.chat_id,
                    access_token=self._tokens.mint(
                        user_id=row.user_id,
                        email=row.user_email,
                        now=now,
                        lifetime=lifetime,
                        execution_id=row.execution_id,
                        execution_depth=row.depth,
                    ),
                    depth=row.depth,
                    provider_base_url=context.provider_base_url,
                    provider_api_key=self._api_key(context.provider_api_key_encrypted, row),
                    model=context.model,
                    temperature=context.temperature,
                    max_tokens=context.max_tokens,
                    max_turns=context.max_turns,
                    timeout_seconds=self._limits.run_timeout_seconds,
                    messages=context.messages,
                    tools=tuple(
                        tools[name]
                        for name in dict.fromkeys(context.enabled_functions)
                        if name in tools
                    ),
                    trigger_id=row.trigger_id,
                    batch_id=row.batch_id,
                )
            )
        return tuple(runs)

    def _api_key(self, encrypted: str, row: ClaimedRow) -> str:
        try:
            return self._cipher.decrypt(encrypted)
        except ValueError:
            # The provider then refuses the run, which FAILs with the provider's error.
            logger.error(
                "llm provider key can't be decrypted",
                extra={"action": "claim", "execution_id": row.execution_id},
            )
            return ""

    async def submit_tool_calls(
        self, execution_id: str, attempt: int, calls: Sequence[ToolCall], *, worker_id: str
    ) -> list[ToolCallSubmission]:
        """Each call becomes a child function execution of the run's user (trigger AGENT,
        trigger id the chat), checked as any submit; refusals come back per call. A call whose
        function requires approval is flagged and nothing of the turn is created.

        Raises:
            InvalidTransition: the execution is not an agent run `worker_id` holds RUNNING in
                `attempt`.
        """
        parent = await self._chats.running_agent_execution(execution_id, attempt, worker_id)
        if parent is None:
            # One message for a wrong attempt and a wrong worker: neither learns which it was.
            raise InvalidTransition(
                f"Execution {execution_id} is not an agent run held by attempt {attempt}"
                " of this worker"
            )
        found = await self._identity.user_with_permissions(parent.user_id)
        granted = frozenset() if found is None else found[1]
        pairs = sorted(
            {
                (call.namespace, call.name)
                for call in calls
                if split_function_name(tool_name(call.namespace, call.name))
            }
        )
        functions = {(f.namespace, f.name): f for f in await self._agents.live_functions(pairs)}
        enabled = set(parent.enabled_functions)
        depth = parent.depth + 1
        submissions: list[ToolCallSubmission] = []
        children: list[NewExecution] = []
        for call in calls:
            name = tool_name(call.namespace, call.name)
            function = functions.get((call.namespace, call.name))
            error = ""
            if name not in enabled:
                error = f"function {name} is not enabled for this agent"
            elif function is None:
                error = f"function {name} not found"
            elif function.spec.requires_approval:
                submissions.append(
                    ToolCallSubmission(
                        tool_call_id=call.tool_call_id,
                        error=APPROVAL_REQUIRED_ERROR,
                        requires_approval=True,
                    )
                )
                continue
            elif not perms.has_permission(
                granted, perms.function_permission(call.namespace, call.name, "execute")
            ):
                error = f"not authorized to execute function {name}"
            elif self._limits.max_depth > 0 and depth > self._limits.max_depth:
                error = f"Maximum execution depth ({self._limits.max_depth}) exceeded"
            elif call.arguments_error:
                error = call.arguments_error
            else:
                problems = input_violations(
                    function.spec.input_schema, call.arguments, root="arguments"
                )
                if problems:
                    error = "invalid arguments: " + "; ".join(
                        f"{p.field}: {p.description}" for p in problems
                    )
            if error or function is None:
                submissions.append(ToolCallSubmission(tool_call_id=call.tool_call_id, error=error))
                continue
            child = NewExecution(
                id=uuid7(),
                user_id=parent.user_id,
                kind=KIND_FUNCTION,
                namespace=function.namespace,
                name=function.name,
                function_id=function.id,
                function_version=function.version,
                trigger_type=TRIGGER_TYPE_AGENT,
                trigger_id=parent.chat_id,
                input=call.arguments,
                depth=depth,
                delay_seconds=0,
                parent_execution_id=parent.execution_id,
                chat_id=parent.chat_id,
                tool_call_id=call.tool_call_id,
            )
            children.append(child)
            submissions.append(
                ToolCallSubmission(tool_call_id=call.tool_call_id, execution_id=child.id)
            )
        if any(s.requires_approval for s in submissions):
            # The run fails; running the turn's other calls would only leave orphans.
            return [
                s
                if s.requires_approval or not s.execution_id
                else ToolCallSubmission(tool_call_id=s.tool_call_id, error=NOT_RUN_ERROR)
                for s in submissions
            ]
        await self._chats.insert_tool_calls(parent, children)
        logger.info(
            "tool calls submitted",
            extra={
                "action": "submit_tool_calls",
                "execution_id": execution_id,
                "children_created": len(children),
                "refused": len(submissions) - len(children),
            },
        )
        return submissions


def _tool(function: Function) -> AgentTool:
    return AgentTool(
        namespace=function.namespace,
        name=function.name,
        description=function.spec.description,
        input_schema=function.spec.input_schema,
        requires_approval=function.spec.requires_approval,
    )

"""The agent use cases: LLM providers, agent definitions, queued agent runs and agent batches
(one fresh chat each, transcripts rendered at submit), and the owner's chats."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sinas_common.errors import (
    Conflict,
    ExecutionDepthExceeded,
    FieldViolation,
    NotFound,
    PayloadTooLarge,
    SchemaViolation,
)
from sinas_common.ids import uuid7
from sinas_scheduler import permissions as perms
from sinas_scheduler.agent_models import (
    Agent,
    AgentChanges,
    AgentRunBatch,
    AgentSpec,
    Chat,
    LlmProvider,
    NewAgentRun,
    NewLlmProvider,
)
from sinas_scheduler.agent_validation import (
    agent_violations,
    render_transcript,
    split_function_name,
)
from sinas_scheduler.batches import check_page
from sinas_scheduler.encryption import SecretCipher
from sinas_scheduler.idempotency import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    ENDPOINT_AGENT_CHATS_BATCH,
    ENDPOINT_AGENT_EXECUTE_ASYNC,
    IdempotencyReservation,
    check_idempotency_key,
    replay,
    request_fingerprint,
)
from sinas_scheduler.models import DEFAULT_TRIGGER_ID, Principal, batch_trigger_id
from sinas_scheduler.registry import require
from sinas_scheduler.scheduler import CallbackUrlCheck
from sinas_scheduler.store import AgentStore, ChatStore, IdempotencyStore
from sinas_scheduler.validation import check_delay, check_trigger_id, identifier_violations

logger = logging.getLogger(__name__)

AGENT_NOT_FOUND = "Agent not found"
CHAT_NOT_FOUND = "Chat not found"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLimits:
    default_provider: str
    default_max_turns: int
    max_depth: int
    max_batch_size: int
    idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInput:
    input_variables: Any
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitAgentRequest:
    """One run (`batch` False, one input) or an agent batch."""

    namespace: str
    name: str
    inputs: Sequence[AgentInput]
    batch: bool = False
    trigger_id: str = ""
    delay_seconds: int | None = None
    callback_url: str = ""
    batch_callback_url: str = ""
    idempotency_key: str = ""

    def fingerprint(self) -> str:
        """The request as its idempotency key remembers it, defaults applied."""
        fields: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "inputs": [
                {"input_variables": i.input_variables, "message": i.message} for i in self.inputs
            ],
            "delay_seconds": self.delay_seconds or 0,
            "callback_url": self.callback_url,
        }
        if self.batch:
            fields.update(
                trigger_id_prefix=self.trigger_id, batch_callback_url=self.batch_callback_url
            )
            return request_fingerprint(ENDPOINT_AGENT_CHATS_BATCH, fields)
        fields["trigger_id"] = self.trigger_id or DEFAULT_TRIGGER_ID
        return request_fingerprint(ENDPOINT_AGENT_EXECUTE_ASYNC, fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmittedAgentRuns:
    execution_ids: tuple[str, ...]
    chat_ids: tuple[str, ...]
    batch_id: str = ""


class AgentUseCases:
    def __init__(
        self,
        *,
        agents: AgentStore,
        chats: ChatStore,
        cipher: SecretCipher,
        limits: AgentLimits,
        callback_urls: CallbackUrlCheck,
        idempotency: IdempotencyStore,
    ) -> None:
        self._agents = agents
        self._chats = chats
        self._cipher = cipher
        self._limits = limits
        self._callback_urls = callback_urls
        self._idempotency = idempotency

    @property
    def default_max_turns(self) -> int:
        return self._limits.default_max_turns

    async def create_provider(
        self, principal: Principal, *, name: str, base_url: str, api_key: str, default_model: str
    ) -> LlmProvider:
        """Admin only; the key is encrypted before it is stored and never returned."""
        require(principal, perms.LLM_PROVIDERS_CREATE_ALL)
        found: list[FieldViolation] = []
        if not name.strip() or len(name) > 255:
            found.append(FieldViolation(field="name", description="1 to 255 characters"))
        if not base_url.startswith(("http://", "https://")):
            found.append(FieldViolation(field="base_url", description="an http(s) URL"))
        if not api_key:
            found.append(FieldViolation(field="api_key", description="required"))
        if not default_model.strip() or len(default_model) > 255:
            found.append(FieldViolation(field="default_model", description="1 to 255 characters"))
        if found:
            raise SchemaViolation("Invalid LLM provider", violations=found)
        provider = await self._agents.create_provider(
            NewLlmProvider(
                id=uuid7(),
                name=name.strip(),
                base_url=base_url.rstrip("/"),
                api_key_encrypted=self._cipher.encrypt(api_key),
                default_model=default_model.strip(),
                created_by=principal.user.id,
            )
        )
        logger.info("llm provider created", extra={"action": "create_provider", "provider": name})
        return provider

    async def create_agent(
        self, principal: Principal, *, namespace: str, name: str, spec: AgentSpec
    ) -> Agent:
        require(principal, perms.AGENTS_CREATE_ALL)
        await self._check(namespace, name, spec)
        return await self._agents.create_agent(
            namespace=namespace, name=name, owner_user_id=principal.user.id, spec=spec
        )

    async def get_agent(self, principal: Principal, namespace: str, name: str) -> Agent:
        agent = await self._lookup(namespace, name)
        require(principal, perms.agent_permission(namespace, name, "read"))
        return agent

    async def update_agent(
        self, principal: Principal, namespace: str, name: str, changes: AgentChanges
    ) -> Agent:
        """Writes a new version; chats already started keep running the version they began."""
        require(principal, perms.agent_permission(namespace, name, "update", "all"))
        current = await self._lookup(namespace, name)
        spec = changes.apply(current.spec)
        await self._check(namespace, name, spec)
        return await self._agents.update_agent(
            agent_id=current.id,
            expected_version=current.version,
            spec=spec,
            updated_by=principal.user.id,
        )

    async def delete_agent(self, principal: Principal, namespace: str, name: str) -> None:
        require(principal, perms.agent_permission(namespace, name, "delete", "all"))
        if not await self._agents.delete_agent(namespace, name):
            raise NotFound(AGENT_NOT_FOUND)

    async def _lookup(self, namespace: str, name: str) -> Agent:
        agent = (
            None
            if identifier_violations(namespace, name)
            else await self._agents.get_agent(namespace, name)
        )
        if agent is None:
            raise NotFound(AGENT_NOT_FOUND)
        return agent

    async def _check(self, namespace: str, name: str, spec: AgentSpec) -> None:
        """Raises SchemaViolation listing every problem, the lookups included."""
        found = agent_violations(namespace=namespace, name=name, spec=spec)
        provider = spec.llm_provider or self._limits.default_provider
        if not provider:
            found.append(
                FieldViolation(
                    field="llm_provider",
                    description="required: no DEFAULT_LLM_PROVIDER is configured",
                )
            )
        elif await self._agents.get_provider(provider) is None:
            found.append(
                FieldViolation(field="llm_provider", description=f"no LLM provider {provider}")
            )
        names = {f: split_function_name(f) for f in spec.enabled_functions}
        wanted = sorted({pair for pair in names.values() if pair is not None})
        live = {(f.namespace, f.name) for f in await self._agents.live_functions(wanted)}
        for index, function in enumerate(spec.enabled_functions):
            pair = names[function]
            if pair is not None and pair not in live:
                found.append(
                    FieldViolation(
                        field=f"enabled_functions[{index}]",
                        description=f"no function {function}",
                    )
                )
        if found:
            raise SchemaViolation("Invalid agent definition", violations=found)

    async def submit(self, principal: Principal, request: SubmitAgentRequest) -> SubmittedAgentRuns:
        """Checks as a function submit does, renders every input's transcript, then stores
        the chats and queued runs (and the batch) all or nothing.

        Raises:
            SchemaViolation: input variables invalid against the agent's input schema, an
                undefined template variable or a template error (naming the item and field).
            PayloadTooLarge: a batch with more inputs than MAX_BATCH_SIZE.
            AlreadyExists: the idempotency key was used for a different request.
        """
        fingerprint = ""
        if request.idempotency_key:
            check_idempotency_key(request.idempotency_key)
            fingerprint = request.fingerprint()
            held = await self._idempotency.find_response(
                user_id=principal.user.id,
                key=request.idempotency_key,
                ttl_seconds=self._limits.idempotency_ttl_seconds,
            )
            if held is not None:
                return _replayed(replay(held, fingerprint))
        agent = await self._lookup(request.namespace, request.name)
        require(
            principal,
            perms.agent_permission(agent.namespace, agent.name, "chat"),
            "Not authorized to chat with this agent",
        )
        callback_url = await self._checked_url(request.callback_url)
        batch_callback_url = await self._checked_url(request.batch_callback_url)
        depth = 0 if principal.execution_depth is None else principal.execution_depth + 1
        if self._limits.max_depth > 0 and depth > self._limits.max_depth:
            raise ExecutionDepthExceeded(
                f"Maximum execution depth ({self._limits.max_depth}) exceeded"
            )
        size = len(request.inputs)
        if size > self._limits.max_batch_size:
            raise PayloadTooLarge(
                f"batch size {size} exceeds MAX_BATCH_SIZE={self._limits.max_batch_size}"
            )
        if size == 0:
            raise SchemaViolation(
                "inputs must hold at least one item",
                violations=[FieldViolation(field="inputs", description="at least 1 item")],
            )
        prefix = request.trigger_id or None
        trigger_ids = [
            batch_trigger_id(prefix, index) if request.batch else (prefix or DEFAULT_TRIGGER_ID)
            for index in range(size)
        ]
        check_trigger_id(trigger_ids[-1])
        delay = request.delay_seconds or 0
        check_delay(delay)
        runs: list[NewAgentRun] = []
        problems: list[FieldViolation] = []
        for index, item in enumerate(request.inputs):
            transcript, found = render_transcript(
                agent.spec,
                item.input_variables,
                item.message,
                item=f"inputs[{index}]." if request.batch else "",
            )
            problems.extend(found)
            runs.append(
                NewAgentRun(
                    execution_id=uuid7(),
                    chat_id=uuid7(),
                    input_variables=item.input_variables,
                    message=item.message,
                    transcript=transcript,
                    trigger_id=trigger_ids[index],
                )
            )
        if problems:
            raise SchemaViolation("Input validation failed", violations=problems)
        provider = await self._provider(agent)
        shared = AgentRunBatch(
            user_id=principal.user.id,
            agent=agent,
            provider_id=provider.id,
            model=agent.spec.model or provider.default_model,
            depth=depth,
            delay_seconds=delay,
            parent_execution_id=principal.execution_id,
            callback_url=callback_url,
            batch_id=uuid7() if request.batch else None,
            batch_callback_url=batch_callback_url,
            trigger_id_prefix=prefix if request.batch else None,
        )
        submitted = SubmittedAgentRuns(
            execution_ids=tuple(run.execution_id for run in runs),
            chat_ids=tuple(run.chat_id for run in runs),
            batch_id=shared.batch_id or "",
        )
        reservation = (
            IdempotencyReservation(
                user_id=principal.user.id,
                key=request.idempotency_key,
                fingerprint=fingerprint,
                response={
                    "batch_id": submitted.batch_id,
                    "execution_ids": list(submitted.execution_ids),
                    "chat_ids": list(submitted.chat_ids),
                },
                ttl_seconds=self._limits.idempotency_ttl_seconds,
            )
            if request.idempotency_key
            else None
        )
        held = await self._chats.insert_agent_runs(shared, runs, idempotency=reservation)
        if held is not None:
            # A concurrent request with the same key stored first; this one stored nothing.
            return _replayed(replay(held, fingerprint))
        logger.info(
            "agent runs submitted",
            extra={
                "action": "submit_agent",
                "agent": f"{agent.namespace}/{agent.name}",
                "batch_id": submitted.batch_id,
                "total": size,
            },
        )
        return submitted

    async def _provider(self, agent: Agent) -> LlmProvider:
        name = agent.spec.llm_provider or self._limits.default_provider
        provider = await self._agents.get_provider(name) if name else None
        if provider is None:
            raise Conflict(
                f"The agent's LLM provider {name!r} does not exist"
                if name
                else "The agent names no LLM provider and DEFAULT_LLM_PROVIDER is not set"
            )
        return provider

    async def _checked_url(self, url: str) -> str | None:
        # An empty URL means no callback, as upstream.
        return await self._callback_urls.check(url) if url else None

    async def get_chat(self, principal: Principal, chat_id: str) -> Chat:
        """The owner's chat with its ordered messages; anyone else's is not found."""
        chat = await self._chats.get_chat(chat_id)
        if chat is None or not (
            chat.user_id == principal.user.id
            or perms.has_permission(principal.permissions, perms.EXECUTIONS_READ_ALL)
        ):
            raise NotFound(CHAT_NOT_FOUND)
        return chat

    async def list_chats(self, principal: Principal, *, limit: int, offset: int) -> list[Chat]:
        """The caller's own chats, newest first, without messages."""
        check_page(limit, offset)
        return await self._chats.list_chats(user_id=principal.user.id, limit=limit, offset=offset)


def _replayed(response: Any) -> SubmittedAgentRuns:
    logger.info(
        "idempotent agent submit replayed",
        extra={"action": "submit_agent", "batch_id": response["batch_id"], "replayed": True},
    )
    return SubmittedAgentRuns(
        execution_ids=tuple(str(i) for i in response["execution_ids"]),
        chat_ids=tuple(str(i) for i in response["chat_ids"]),
        batch_id=str(response["batch_id"]),
    )

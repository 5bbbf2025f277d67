"""PostgreSQL adapter of chats and agent runs: one-transaction submits (chats, transcripts,
executions, and for agent batches the batch row), chat reads, what claims of agent runs need,
and tool-call children. Every list is one statement, whatever its length."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.jsoncodec import dump_json
from sinas_scheduler.agent_models import (
    KIND_AGENT,
    TRIGGER_TYPE_AGENT,
    AgentRunBatch,
    AgentRunContext,
    Chat,
    ChatMessage,
    NewAgentRun,
    RunningAgentExecution,
)
from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.models import KIND_FUNCTION, TRIGGER_TYPE_API, CallbackStatus, NewExecution
from sinas_scheduler.pg import driver_connection
from sinas_scheduler.postgres_idempotency import reserve_idempotency_key
from sinas_scheduler.postgres_messages import append_messages
from sinas_scheduler.store import DISPATCH_CHANNEL
from sinas_scheduler.tables import JSON_DATA, batches, chats, messages

_NOTIFY_DISPATCH = sa.text("SELECT pg_notify(:channel, '')").bindparams(channel=DISPATCH_CHANNEL)

_INSERT_CHATS = sa.text(
    """
INSERT INTO chats (id, user_id, agent_id, agent_version, agent_namespace, agent_name,
                   llm_provider_id, model, title, input_variables, created_at, updated_at)
SELECT c.id, :user_id, :agent_id, :agent_version, :namespace, :name, :provider_id, :model,
       c.title, CAST(c.variables AS json), now(), now()
FROM unnest(CAST(:ids AS text[]), CAST(:titles AS text[]), CAST(:variables AS text[]))
     AS c(id, title, variables)
"""
)

_INSERT_RUNS = sa.text(
    """
INSERT INTO executions (
    id, user_id, kind, namespace, name, trigger_type, trigger_id, status, input, depth,
    created_at, run_at, parent_execution_id, callback_url, callback_status, batch_id,
    batch_index, chat_id)
SELECT r.id, :user_id, :kind, :namespace, :name, :trigger_type, r.trigger_id, 'PENDING',
       CAST(r.input AS json), :depth, now(), now() + make_interval(secs => :delay_seconds),
       :parent_execution_id, :callback_url, :callback_status, CAST(:batch_id AS text),
       CASE WHEN CAST(:batch_id AS text) IS NULL THEN NULL ELSE (r.ord - 1)::int END, r.chat_id
FROM unnest(CAST(:ids AS text[]), CAST(:chat_ids AS text[]), CAST(:trigger_ids AS text[]),
            CAST(:inputs AS text[])) WITH ORDINALITY AS r(id, chat_id, trigger_id, input, ord)
"""
)

_INSERT_TOOL_CALLS = sa.text(
    """
INSERT INTO executions (
    id, user_id, kind, namespace, name, function_id, function_version, trigger_type,
    trigger_id, status, input, depth, created_at, run_at, parent_execution_id, chat_id,
    tool_call_id)
SELECT t.id, :user_id, :kind, t.namespace, t.name, t.function_id, t.function_version,
       :trigger_type, :trigger_id, 'PENDING', CAST(t.input AS json), :depth, now(), now(),
       :parent_execution_id, :chat_id, t.tool_call_id
FROM unnest(CAST(:ids AS text[]), CAST(:namespaces AS text[]), CAST(:names AS text[]),
            CAST(:function_ids AS text[]), CAST(:function_versions AS int[]),
            CAST(:inputs AS text[]), CAST(:tool_call_ids AS text[]))
     AS t(id, namespace, name, function_id, function_version, input, tool_call_id)
"""
)

_RUN_CONTEXTS = sa.text(
    """
SELECT c.id, p.base_url, p.api_key_encrypted, c.model, v.temperature, v.max_tokens,
       v.max_turns, v.enabled_functions
FROM chats AS c
JOIN agent_versions AS v ON v.agent_id = c.agent_id AND v.version = c.agent_version
JOIN llm_providers AS p ON p.id = c.llm_provider_id
WHERE c.id = ANY(CAST(:ids AS text[]))
"""
).columns(enabled_functions=JSON_DATA)

_RUNNING_AGENT = sa.text(
    """
SELECT e.id, e.user_id, e.chat_id, e.depth, v.enabled_functions
FROM executions AS e
JOIN chats AS c ON c.id = e.chat_id
JOIN agent_versions AS v ON v.agent_id = c.agent_id AND v.version = c.agent_version
WHERE e.id = :id AND e.kind = :kind AND e.status = 'RUNNING' AND e.attempts = :attempt
  AND e.worker_id = :worker_id
"""
).columns(enabled_functions=JSON_DATA)


class PostgresChatStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_agent_runs(
        self,
        shared: AgentRunBatch,
        runs: Sequence[NewAgentRun],
        *,
        idempotency: IdempotencyReservation | None = None,
    ) -> StoredResponse | None:
        """The chats, their transcripts, the PENDING executions (and the batch row for a
        batch) in one transaction that first reserves the idempotency key; when the key is
        held, stores nothing and returns what the request holding it stored."""
        agent = shared.agent
        async with self._engine.begin() as conn:
            if idempotency is not None:
                held = await reserve_idempotency_key(conn, idempotency)
                if held is not None:
                    return held
            if shared.batch_id is not None:
                await conn.execute(
                    batches.insert().values(
                        id=shared.batch_id,
                        user_id=shared.user_id,
                        kind=KIND_AGENT,
                        namespace=agent.namespace,
                        name=agent.name,
                        total=len(runs),
                        trigger_id_prefix=shared.trigger_id_prefix,
                        delay_seconds=shared.delay_seconds,
                        callback_url=shared.callback_url,
                        batch_callback_url=shared.batch_callback_url,
                        created_at=sa.func.now(),
                    )
                )
            await conn.execute(
                _INSERT_CHATS,
                {
                    "ids": [run.chat_id for run in runs],
                    "titles": [_title(run.message) for run in runs],
                    "variables": [dump_json(run.input_variables).decode() for run in runs],
                    "user_id": shared.user_id,
                    "agent_id": agent.id,
                    "agent_version": agent.version,
                    "namespace": agent.namespace,
                    "name": agent.name,
                    "provider_id": shared.provider_id,
                    "model": shared.model,
                },
            )
            await append_messages(
                await driver_connection(conn), [(run.chat_id, run.transcript) for run in runs]
            )
            await conn.execute(
                _INSERT_RUNS,
                {
                    "ids": [run.execution_id for run in runs],
                    "chat_ids": [run.chat_id for run in runs],
                    "trigger_ids": [run.trigger_id for run in runs],
                    "inputs": [
                        dump_json(
                            {"message": run.message, "input_variables": run.input_variables}
                        ).decode()
                        for run in runs
                    ],
                    "user_id": shared.user_id,
                    "kind": KIND_AGENT,
                    "namespace": agent.namespace,
                    "name": agent.name,
                    "trigger_type": TRIGGER_TYPE_API,
                    "depth": shared.depth,
                    "delay_seconds": shared.delay_seconds,
                    "parent_execution_id": shared.parent_execution_id,
                    "callback_url": shared.callback_url,
                    "callback_status": (
                        None if shared.callback_url is None else CallbackStatus.PENDING.value
                    ),
                    "batch_id": shared.batch_id,
                },
            )
            await conn.execute(_NOTIFY_DISPATCH)
        return None

    async def get_chat(self, chat_id: str) -> Chat | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(chats).where(chats.c.id == chat_id)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                return None
            found = (
                (
                    await conn.execute(
                        sa.select(messages)
                        .where(messages.c.chat_id == chat_id)
                        .order_by(messages.c.position)
                    )
                )
                .mappings()
                .all()
            )
        return _chat(row, tuple(_message(m) for m in found))

    async def list_chats(self, *, user_id: str, limit: int, offset: int) -> list[Chat]:
        query = (
            sa.select(chats)
            .where(chats.c.user_id == user_id)
            .order_by(chats.c.created_at.desc(), chats.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_chat(row, ()) for row in rows]

    async def run_contexts(self, chat_ids: Sequence[str]) -> dict[str, AgentRunContext]:
        """Per chat: its resolved provider and model, agent settings and transcript."""
        if not chat_ids:
            return {}
        transcripts: dict[str, list[ChatMessage]] = defaultdict(list)
        query = (
            sa.select(messages)
            .where(messages.c.chat_id.in_(list(chat_ids)))
            .order_by(messages.c.chat_id, messages.c.position)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_RUN_CONTEXTS, {"ids": list(chat_ids)})).mappings().all()
            for found in (await conn.execute(query)).mappings():
                transcripts[found["chat_id"]].append(_message(found))
        return {
            row["id"]: AgentRunContext(
                chat_id=row["id"],
                provider_base_url=row["base_url"],
                provider_api_key_encrypted=row["api_key_encrypted"],
                model=row["model"],
                temperature=row["temperature"],
                max_tokens=row["max_tokens"],
                max_turns=row["max_turns"],
                enabled_functions=tuple(row["enabled_functions"]),
                messages=tuple(transcripts[row["id"]]),
            )
            for row in rows
        }

    async def running_agent_execution(
        self, execution_id: str, attempt: int, worker_id: str
    ) -> RunningAgentExecution | None:
        """The agent execution while `worker_id` holds it RUNNING in `attempt`, else None."""
        params = {
            "id": execution_id,
            "attempt": attempt,
            "worker_id": worker_id,
            "kind": KIND_AGENT,
        }
        async with self._engine.connect() as conn:
            row = (await conn.execute(_RUNNING_AGENT, params)).mappings().one_or_none()
        if row is None:
            return None
        return RunningAgentExecution(
            execution_id=row["id"],
            user_id=row["user_id"],
            chat_id=row["chat_id"],
            depth=row["depth"],
            enabled_functions=tuple(row["enabled_functions"]),
        )

    async def insert_tool_calls(
        self, parent: RunningAgentExecution, children: Sequence[NewExecution]
    ) -> None:
        """The tool calls' PENDING function executions, in one statement and transaction."""
        if not children:
            return
        params = {
            "ids": [c.id for c in children],
            "namespaces": [c.namespace for c in children],
            "names": [c.name for c in children],
            "function_ids": [c.function_id for c in children],
            "function_versions": [c.function_version for c in children],
            "inputs": [dump_json(c.input).decode() for c in children],
            "tool_call_ids": [c.tool_call_id for c in children],
            "user_id": parent.user_id,
            "kind": KIND_FUNCTION,
            "trigger_type": TRIGGER_TYPE_AGENT,
            "trigger_id": parent.chat_id,
            "depth": parent.depth + 1,
            "parent_execution_id": parent.execution_id,
            "chat_id": parent.chat_id,
        }
        async with self._engine.begin() as conn:
            await conn.execute(_INSERT_TOOL_CALLS, params)
            await conn.execute(_NOTIFY_DISPATCH)


def _title(message: str) -> str:
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    return first_line[:80]


def _message(row: Any) -> ChatMessage:
    return ChatMessage(
        id=row["id"],
        role=row["role"],
        content=row["content"],
        tool_calls=row["tool_calls"],
        tool_call_id=row["tool_call_id"],
        created_at=row["created_at"],
    )


def _chat(row: Any, found: tuple[ChatMessage, ...]) -> Chat:
    return Chat(
        id=row["id"],
        user_id=row["user_id"],
        agent_namespace=row["agent_namespace"],
        agent_name=row["agent_name"],
        title=row["title"],
        input_variables=row["input_variables"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        messages=found,
    )

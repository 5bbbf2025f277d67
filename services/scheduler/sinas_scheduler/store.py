"""The storage ports the use cases depend on, and the async engine their PostgreSQL adapters use."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sinas_common.jsoncodec import dump_json
from sinas_scheduler.agent_models import (
    Agent,
    AgentRunBatch,
    AgentRunContext,
    AgentSpec,
    Chat,
    LlmProvider,
    NewAgentRun,
    NewLlmProvider,
    RunningAgentExecution,
)
from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.models import (
    ApiKeyRecord,
    Batch,
    BatchCallbackRow,
    BatchPage,
    BatchQuery,
    CallbackOutcome,
    CallbackRow,
    ClaimItem,
    ClaimOutcome,
    DispatchRound,
    DueExecution,
    Execution,
    ExecutionQuery,
    ExecutionStatus,
    Function,
    FunctionChanges,
    FunctionSpec,
    FunctionVersion,
    KeyHolder,
    NewBatch,
    NewExecution,
    Outcome,
    ReapOutcome,
    ReleasedAttempt,
    Role,
    SigningKey,
    User,
)

# NOTIFY channels: new work for the dispatchers, ended executions for the waiters, ended
# executions with a callback for the event publishers.
DISPATCH_CHANNEL = "sinas_dispatch"
COMPLETION_CHANNEL = "sinas_execution_done"
EVENTS_CHANNEL = "sinas_events"

Publish = Callable[[Sequence[DueExecution]], Awaitable[None]]
PublishTerminated = Callable[[Sequence[str]], Awaitable[None]]


class IdentityStore(Protocol):
    async def user_with_permissions(self, user_id: str) -> tuple[User, frozenset[str]] | None: ...

    async def key_holder(self, key_hash: str) -> KeyHolder | None: ...

    async def create_role(self, name: str, permissions: Sequence[str]) -> Role: ...

    async def create_user(self, email: str, role_names: Sequence[str]) -> User: ...

    async def create_api_key(
        self,
        *,
        user_id: str,
        name: str,
        key_hash: str,
        key_prefix: str,
        expires_at: datetime | None = None,
    ) -> ApiKeyRecord: ...

    async def list_api_keys(self, user_id: str) -> list[ApiKeyRecord]:
        """The user's keys, revoked and expired ones too, newest first."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Sets `revoked_at` unless already set (a second revoke changes nothing); None for an
        unknown key."""
        ...

    async def record_key_use(self, last_used: Mapping[str, datetime]) -> None:
        """Moves each key's `last_used_at` (by key hash) forward to the given time, never back."""
        ...

    async def ensure_roles(self, roles: Mapping[str, Sequence[str]]) -> None: ...

    async def ensure_admin(
        self, *, email: str, role_name: str, key_hash: str, key_prefix: str
    ) -> None: ...

    async def ensure_signing_key(self, candidate: SigningKey) -> list[SigningKey]:
        """Stores `candidate` unless a live key exists; returns the live keys, newest first,
        their private keys as stored (encrypted)."""
        ...

    async def signing_keys(self) -> list[SigningKey]: ...

    async def reseal_signing_keys(self, reseal: Callable[[str], str | None]) -> int:
        """Replaces every stored private key (retired ones too) for which `reseal` returns a
        new value; returns how many changed."""
        ...


class IdempotencyStore(Protocol):
    async def find_response(
        self, *, user_id: str, key: str, ttl_seconds: int
    ) -> StoredResponse | None:
        """What a live key's request stored, or None (unknown or expired key)."""
        ...


class FunctionStore(Protocol):
    async def create_function(
        self, *, namespace: str, name: str, owner_user_id: str, spec: FunctionSpec
    ) -> Function: ...

    async def get_function(self, namespace: str, name: str) -> Function | None: ...

    async def update_function(
        self,
        *,
        namespace: str,
        name: str,
        changes: FunctionChanges,
        check: Callable[[FunctionSpec], None],
        updated_by: str,
    ) -> Function: ...

    async def delete_function(self, namespace: str, name: str) -> bool: ...

    async def function_versions(self, keys: Sequence[tuple[str, int]]) -> list[FunctionVersion]: ...


class ExecutionStore(Protocol):
    async def insert_execution(
        self,
        new: NewExecution,
        *,
        idempotency: IdempotencyReservation | None = None,
        wake: bool = True,
    ) -> StoredResponse | None:
        """None when stored; when the key is held, nothing is stored and the holder's answer
        comes back. `wake`: the commit wakes every replica's dispatch loop (without it, the
        caller publishes the row itself)."""
        ...

    async def insert_if_current(self, new: NewExecution, *, wake: bool = True) -> bool:
        """Stores the row only if its function version is still the live one; False when
        the function changed or went, and nothing was stored."""
        ...

    async def insert_executions(self, news: Sequence[NewExecution], *, wake: bool = True) -> None:
        """Stores every row, in one transaction."""
        ...

    async def mark_dispatched(self, execution_ids: Sequence[str], published_at: datetime) -> None:
        """Records a publish made outside the dispatch loop, on rows not yet marked."""
        ...

    async def get_execution(self, execution_id: str) -> Execution | None: ...

    async def list_executions(self, query: ExecutionQuery) -> list[Execution]: ...

    async def claim(self, *, worker_id: str, items: Sequence[ClaimItem]) -> ClaimOutcome:
        """PENDING → RUNNING for the rows already due; the rest are skipped."""
        ...

    async def release(self, *, worker_id: str, attempts: Sequence[ReleasedAttempt]) -> list[str]:
        """Back to PENDING: attempts the worker still holds that it hands back unfinished."""
        ...

    async def complete(self, *, worker_id: str, outcomes: Sequence[Outcome]) -> list[str]:
        """Ends the attempts `worker_id` holds; an outcome for any other is ignored."""
        ...

    async def reap_stale(
        self, *, lease_seconds: float, max_attempts: int, limit: int
    ) -> ReapOutcome: ...

    async def dispatch_due(self, *, limit: int, publish: Publish) -> DispatchRound: ...


class CallbackStore(Protocol):
    async def claim_callbacks(self, execution_ids: Sequence[str]) -> list[CallbackRow]: ...

    async def record_callback_outcomes(self, outcomes: Sequence[CallbackOutcome]) -> list[str]: ...

    async def fail_stale_claims(self, *, claim_timeout_seconds: float, error: str) -> list[str]: ...

    async def publish_terminated(self, *, limit: int, publish: PublishTerminated) -> int: ...


def create_engine(database_url: str, *, pool_size: int) -> AsyncEngine:
    """An async psycopg 3 engine whose JSON keeps numbers exactly as given."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout; dead connections are recycled.
        pool_recycle=1800,
        json_serializer=lambda value: dump_json(value).decode(),
        json_deserializer=json.loads,
    )


class BatchStore(Protocol):
    async def insert_batch(
        self, new: NewBatch, *, idempotency: IdempotencyReservation | None = None
    ) -> StoredResponse | None:
        """None when stored; when the key is held, nothing is stored and the holder's answer
        comes back."""
        ...

    async def get_batch(self, batch_id: str) -> Batch | None: ...

    async def list_batches(self, query: BatchQuery) -> list[Batch]: ...

    async def list_batch_executions(
        self, batch_id: str, *, status: ExecutionStatus | None, limit: int, offset: int
    ) -> BatchPage: ...


class BatchCallbackStore(Protocol):
    async def publish_batches_terminated(
        self, *, limit: int, publish: PublishTerminated
    ) -> int: ...

    async def claim_batch_callbacks(self, batch_ids: Sequence[str]) -> list[BatchCallbackRow]: ...

    async def record_batch_callback_outcomes(
        self, outcomes: Sequence[CallbackOutcome]
    ) -> list[str]: ...

    async def fail_stale_batch_claims(
        self, *, claim_timeout_seconds: float, error: str
    ) -> list[str]: ...


class AgentStore(Protocol):
    async def create_provider(self, new: NewLlmProvider) -> LlmProvider: ...

    async def get_provider(self, name: str) -> LlmProvider | None: ...

    async def reseal_provider_keys(self, reseal: Callable[[str], str | None]) -> int:
        """Replaces every stored provider API key for which `reseal` returns a new value;
        returns how many changed."""
        ...

    async def create_agent(
        self, *, namespace: str, name: str, owner_user_id: str, spec: AgentSpec
    ) -> Agent: ...

    async def get_agent(self, namespace: str, name: str) -> Agent | None: ...

    async def update_agent(
        self, *, agent_id: str, expected_version: int, spec: AgentSpec, updated_by: str
    ) -> Agent: ...

    async def delete_agent(self, namespace: str, name: str) -> bool: ...

    async def live_functions(self, names: Sequence[tuple[str, str]]) -> list[Function]: ...


class ChatStore(Protocol):
    async def insert_agent_runs(
        self,
        shared: AgentRunBatch,
        runs: Sequence[NewAgentRun],
        *,
        idempotency: IdempotencyReservation | None = None,
    ) -> StoredResponse | None:
        """None when stored; when the key is held, nothing is stored and the holder's answer
        comes back."""
        ...

    async def get_chat(self, chat_id: str) -> Chat | None: ...

    async def list_chats(self, *, user_id: str, limit: int, offset: int) -> list[Chat]: ...

    async def run_contexts(self, chat_ids: Sequence[str]) -> dict[str, AgentRunContext]: ...

    async def running_agent_execution(
        self, execution_id: str, attempt: int, worker_id: str
    ) -> RunningAgentExecution | None:
        """The agent run while `worker_id` holds it RUNNING in `attempt`, else None."""
        ...

    async def insert_tool_calls(
        self, parent: RunningAgentExecution, children: Sequence[NewExecution]
    ) -> None: ...

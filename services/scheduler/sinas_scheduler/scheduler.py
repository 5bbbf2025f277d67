"""The execution use cases: submit, read, wait, and what workers claim, report and keep alive."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sinas_common.errors import (
    ExecutionDepthExceeded,
    ExecutionNotFound,
    FieldViolation,
    InvalidArgument,
    SchemaViolation,
    SinasError,
)
from sinas_common.ids import uuid7
from sinas_common.timeconv import utcnow
from sinas_scheduler import permissions as perms
from sinas_scheduler.agent_models import KIND_AGENT, ClaimedAgentRun
from sinas_scheduler.idempotency import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    ENDPOINT_EXECUTE_ASYNC,
    IdempotencyReservation,
    StoredResponse,
    check_idempotency_key,
    replay,
    request_fingerprint,
)
from sinas_scheduler.metrics import (
    ATTEMPTS_RETRIED,
    DISPATCH_LAG,
    EXECUTIONS_FINISHED,
    REDELIVERIES,
)
from sinas_scheduler.models import (
    DEFAULT_TRIGGER_ID,
    KIND_FUNCTION,
    TRIGGER_TYPE_API,
    ClaimedExecution,
    ClaimedRow,
    ClaimItem,
    ClaimResult,
    DueExecution,
    Execution,
    ExecutionQuery,
    ExecutionStatus,
    Function,
    NewExecution,
    Outcome,
    Principal,
    ReleasedAttempt,
)
from sinas_scheduler.registry import FunctionUseCases, require
from sinas_scheduler.store import ExecutionStore, FunctionStore, IdempotencyStore
from sinas_scheduler.tokens import TokenService, execution_token_lifetime
from sinas_scheduler.validation import check_delay, check_trigger_id, input_violations

logger = logging.getLogger(__name__)


def _log_submitted(new: NewExecution) -> None:
    logger.info(
        "execution submitted",
        extra={"action": "submit", "execution_id": new.id, "delay_seconds": new.delay_seconds},
    )


MAX_LIST_LIMIT = 1000
MAX_WAIT_SECONDS = 3600.0
# A lost notification must not hang a waiter: re-read the row at least this often.
WAIT_RECHECK_SECONDS = 1.0


class CompletionSignals(Protocol):
    """Wakes waiters when an execution ends (on any replica)."""

    def watch(self, execution_id: str) -> AbstractContextManager[asyncio.Event]: ...


class PromptDispatcher(Protocol):
    """Publishes stored, due executions at once (see `prompt_dispatch`)."""

    @property
    def active(self) -> bool: ...

    def dispatch(self, due: Sequence[DueExecution]) -> None: ...


class AgentRunPreparer(Protocol):
    """Completes claimed agent rows with what a run needs (provider, transcript, tools)."""

    async def prepare(
        self, rows: Sequence[ClaimedRow], now: datetime
    ) -> tuple[ClaimedAgentRun, ...]: ...


class CallbackUrlCheck(Protocol):
    """The callback policy and address rule at submit time."""

    async def check(self, url: str) -> str:
        """The URL to store; raises CallbackUrlRejected naming the reason."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionLimits:
    max_depth: int
    max_attempts: int
    lease_seconds: float
    token_buffer_seconds: int
    max_token_seconds: int
    idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRequest:
    namespace: str
    name: str
    input: Any
    trigger_id: str = ""
    delay_seconds: int | None = None
    callback_url: str = ""
    idempotency_key: str = ""

    def fingerprint(self) -> str:
        """The request as its idempotency key remembers it, defaults applied."""
        return request_fingerprint(
            ENDPOINT_EXECUTE_ASYNC,
            {
                "namespace": self.namespace,
                "name": self.name,
                "input": self.input,
                "trigger_id": self.trigger_id or DEFAULT_TRIGGER_ID,
                "delay_seconds": self.delay_seconds or 0,
                "callback_url": self.callback_url,
            },
        )


class ExecutionUseCases:
    def __init__(
        self,
        *,
        executions: ExecutionStore,
        functions: FunctionUseCases,
        signals: CompletionSignals,
        limits: ExecutionLimits,
        callback_urls: CallbackUrlCheck,
        idempotency: IdempotencyStore,
        prompt: PromptDispatcher | None = None,
    ) -> None:
        self._executions = executions
        self._idempotency = idempotency
        self._functions = functions
        self._signals = signals
        self._limits = limits
        self._callback_urls = callback_urls
        self._prompt = prompt

    async def submit(self, principal: Principal, request: SubmitRequest) -> str:
        """Checks in upstream's order, then stores one PENDING row; returns its id.

        With an idempotency key, a retry of the same request answers the original id without
        any check or lookup again, and the same key on a different request is AlreadyExists.
        """
        reservation: IdempotencyReservation | None = None
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
                return _replayed_execution_id(held, fingerprint)
        else:
            stored = await self._submit_against_recent(principal, request)
            if stored is not None:
                return stored
        function = await self._functions.lookup(request.namespace, request.name)
        new = await self._new_execution(principal, request, function)
        if request.idempotency_key:
            reservation = IdempotencyReservation(
                user_id=principal.user.id,
                key=request.idempotency_key,
                fingerprint=fingerprint,
                response={"execution_id": new.id},
                ttl_seconds=self._limits.idempotency_ttl_seconds,
            )
        due_now = self._due_now([new])
        held = await self._executions.insert_execution(
            new, idempotency=reservation, wake=not due_now
        )
        if held is not None:
            # A concurrent request with the same key stored first; this one stored nothing.
            return _replayed_execution_id(held, fingerprint)
        self._stored([new], due_now)
        return new.id

    async def _submit_against_recent(
        self, principal: Principal, request: SubmitRequest
    ) -> str | None:
        """The common submit in one statement: checked against the function as last read and
        stored only if that is still its live version. None when there is none to go by, it
        changed, or a check failed (against what may be an old version): the caller then
        checks against the function as stored now."""
        function = self._functions.recent(request.namespace, request.name)
        if function is None:
            return None
        try:
            new = await self._new_execution(principal, request, function)
        except SinasError:
            return None
        due_now = self._due_now([new])
        if not await self._executions.insert_if_current(new, wake=not due_now):
            self._functions.forget(request.namespace, request.name)
            return None
        self._stored([new], due_now)
        return new.id

    async def submit_many(
        self, principal: Principal, requests: Sequence[SubmitRequest]
    ) -> list[str | SinasError]:
        """Several independent submits of one caller, answered in order: each is checked as
        `submit` checks it and the valid ones are stored together, in one transaction; one
        failing fails no other. A request with an idempotency key goes alone, as `submit`."""
        outcomes: list[str | SinasError] = [SinasError()] * len(requests)
        functions: dict[tuple[str, str], Function] = {}
        checked: list[tuple[int, NewExecution]] = []
        for index, request in enumerate(requests):
            try:
                if request.idempotency_key:
                    outcomes[index] = await self.submit(principal, request)
                    continue
                key = (request.namespace, request.name)
                if key not in functions:
                    functions[key] = await self._functions.lookup(*key)
                checked.append(
                    (index, await self._new_execution(principal, request, functions[key]))
                )
            except SinasError as exc:
                outcomes[index] = exc
        news = [new for _, new in checked]
        due_now = self._due_now(news)
        await self._executions.insert_executions(news, wake=len(due_now) < len(news))
        self._stored(news, due_now)
        for index, new in checked:
            outcomes[index] = new.id
        return outcomes

    def _due_now(self, news: Sequence[NewExecution]) -> list[NewExecution]:
        """Those of `news` this replica publishes itself once they are stored (due at once,
        NATS at hand); storing any other wakes the dispatch loops."""
        if self._prompt is None or not self._prompt.active:
            return []
        return [new for new in news if new.delay_seconds == 0]

    def _stored(self, news: Sequence[NewExecution], due_now: Sequence[NewExecution]) -> None:
        if due_now and self._prompt is not None:
            self._prompt.dispatch([DueExecution(id=new.id, kind=new.kind) for new in due_now])
        for new in news:
            _log_submitted(new)

    async def _new_execution(
        self, principal: Principal, request: SubmitRequest, function: Function
    ) -> NewExecution:
        """The row `request` stores, after the checks upstream makes, in its order."""
        require(
            principal,
            perms.function_permission(function.namespace, function.name, "execute"),
            "Not authorized to execute this function",
        )
        # An empty URL means no callback, as upstream.
        callback_url = (
            await self._callback_urls.check(request.callback_url) if request.callback_url else None
        )
        depth = 0 if principal.execution_depth is None else principal.execution_depth + 1
        if self._limits.max_depth > 0 and depth > self._limits.max_depth:
            raise ExecutionDepthExceeded(
                f"Maximum execution depth ({self._limits.max_depth}) exceeded"
            )
        trigger_id = request.trigger_id or DEFAULT_TRIGGER_ID
        check_trigger_id(trigger_id)
        delay = request.delay_seconds or 0
        check_delay(delay)
        violations = input_violations(function.spec.input_schema, request.input)
        if violations:
            raise SchemaViolation("Input validation failed", violations=violations)
        return NewExecution(
            id=uuid7(),
            user_id=principal.user.id,
            kind=KIND_FUNCTION,
            namespace=function.namespace,
            name=function.name,
            function_id=function.id,
            function_version=function.version,
            trigger_type=TRIGGER_TYPE_API,
            trigger_id=trigger_id,
            input=request.input,
            depth=depth,
            delay_seconds=delay,
            parent_execution_id=principal.execution_id,
            callback_url=callback_url,
        )

    async def get(self, principal: Principal, execution_id: str) -> Execution:
        """Someone else's execution is not found, never forbidden, so ids can't be probed."""
        execution = await self._executions.get_execution(execution_id)
        if execution is None or not _visible(principal, execution):
            raise ExecutionNotFound()
        return execution

    async def list(self, principal: Principal, query: ExecutionQuery) -> list[Execution]:
        if not 1 <= query.limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(
                f"limit must be between 1 and {MAX_LIST_LIMIT}",
                violations=[FieldViolation(field="limit", description="1 to 1000")],
            )
        if query.offset < 0:
            raise InvalidArgument(
                "offset must not be negative",
                violations=[FieldViolation(field="offset", description="0 or more")],
            )
        reads_all = perms.has_permission(principal.permissions, perms.EXECUTIONS_READ_ALL)
        scoped = ExecutionQuery(
            user_id=None if reads_all else principal.user.id,
            function_name=query.function_name,
            status=query.status,
            trigger_id=query.trigger_id,
            batch_id=query.batch_id,
            limit=query.limit,
            offset=query.offset,
        )
        return await self._executions.list_executions(scoped)

    async def wait(
        self, principal: Principal, execution_id: str, timeout_seconds: float
    ) -> tuple[Execution, bool]:
        """The execution once it ends, or as it is when the timeout passes."""
        deadline = time.monotonic() + min(max(timeout_seconds, 0.0), MAX_WAIT_SECONDS)
        # Watch before the first read, so a completion between the two can't be missed.
        with self._signals.watch(execution_id) as ended:
            execution = await self.get(principal, execution_id)
            while not execution.status.is_terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return execution, False
                ended.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(
                        ended.wait(), timeout=min(remaining, WAIT_RECHECK_SECONDS)
                    )
                execution = await self.get(principal, execution_id)
        return execution, True


def _replayed_execution_id(held: StoredResponse, fingerprint: str) -> str:
    execution_id = str(replay(held, fingerprint)["execution_id"])
    logger.info(
        "idempotent submit replayed",
        extra={"action": "submit", "execution_id": execution_id, "replayed": True},
    )
    return execution_id


def _visible(principal: Principal, execution: Execution) -> bool:
    return execution.user_id == principal.user.id or perms.has_permission(
        principal.permissions, perms.EXECUTIONS_READ_ALL
    )


# Stale attempts handled per reaper pass; the rest wait for the next pass.
REAP_LIMIT = 1000

_OUTCOME_STATUSES = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED})


class WorkerUseCases:
    """What executors ask: one storage statement per list, whatever its length."""

    def __init__(
        self,
        *,
        executions: ExecutionStore,
        functions: FunctionStore,
        tokens: TokenService,
        limits: ExecutionLimits,
        agent_runs: AgentRunPreparer | None = None,
    ) -> None:
        self._executions = executions
        self._functions = functions
        self._tokens = tokens
        self._limits = limits
        self._agent_runs = agent_runs

    async def claim(self, worker_id: str, items: Sequence[ClaimItem]) -> ClaimResult:
        outcome = await self._executions.claim(worker_id=worker_id, items=items)
        REDELIVERIES.inc(sum(1 for item in items if item.delivery_attempt > 1))
        now = utcnow()
        claimed = tuple(
            ClaimedExecution(
                row=row,
                access_token=self._tokens.mint(
                    user_id=row.user_id,
                    email=row.user_email,
                    now=now,
                    lifetime=execution_token_lifetime(
                        function_timeout_seconds=row.timeout_seconds or 0,
                        buffer_seconds=self._limits.token_buffer_seconds,
                        max_seconds=self._limits.max_token_seconds,
                    ),
                    execution_id=row.execution_id,
                    execution_depth=row.depth,
                ),
            )
            for row in outcome.claimed
            if row.kind != KIND_AGENT
        )
        agent_rows = [row for row in outcome.claimed if row.kind == KIND_AGENT]
        agent_runs = (
            await self._agent_runs.prepare(agent_rows, now)
            if agent_rows and self._agent_runs is not None
            else ()
        )
        keys = sorted(
            {
                (c.row.function_id, c.row.function_version)
                for c in claimed
                if c.row.function_id is not None and c.row.function_version is not None
            }
        )
        functions = await self._functions.function_versions(keys)
        for row in outcome.claimed:
            if row.attempt == 1 and row.dispatch_lag_seconds is not None:
                DISPATCH_LAG.observe(max(row.dispatch_lag_seconds, 0.0))
        if claimed or agent_runs or outcome.skipped:
            logger.info(
                "executions claimed",
                extra={
                    "action": "claim",
                    "worker_id": worker_id,
                    "claimed": len(claimed),
                    "agent_runs": len(agent_runs),
                    "skipped": len(outcome.skipped),
                },
            )
        return ClaimResult(
            claimed=claimed,
            skipped=outcome.skipped,
            functions=tuple(functions),
            agent_runs=agent_runs,
        )

    async def complete(self, worker_id: str, outcomes: Sequence[Outcome]) -> list[str]:
        """Records the outcomes of attempts `worker_id` holds; returns the ids that ended.
        An outcome for an attempt it does not hold (another worker's, an older attempt's, or
        one already ended) changes nothing."""
        for index, outcome in enumerate(outcomes):
            if outcome.status not in _OUTCOME_STATUSES:
                raise InvalidArgument(
                    "An outcome's status must be COMPLETED or FAILED",
                    violations=[
                        FieldViolation(
                            field=f"outcomes[{index}].status", description="COMPLETED or FAILED"
                        )
                    ],
                )
        applied = await self._executions.complete(worker_id=worker_id, outcomes=outcomes)
        by_id = {o.execution_id: o for o in outcomes}
        finished: Counter[str] = Counter()
        for execution_id in applied:
            ended = by_id[execution_id]
            label = "TIMED_OUT" if ended.timed_out else ended.status.value
            finished[label] += 1
            logger.info(
                "execution finished",
                extra={"action": "complete", "execution_id": execution_id, "outcome": label},
            )
        for label, count in finished.items():
            EXECUTIONS_FINISHED.labels(outcome=label).inc(count)
        return applied

    async def release(self, worker_id: str, attempts: Sequence[ReleasedAttempt]) -> list[str]:
        released = await self._executions.release(worker_id=worker_id, attempts=attempts)
        ATTEMPTS_RETRIED.labels(reason="handed_back").inc(len(released))
        for execution_id in released:
            logger.info(
                "execution handed back",
                extra={"action": "release", "execution_id": execution_id, "worker_id": worker_id},
            )
        return released

    async def reap(self) -> list[str]:
        """Ends the attempts whose worker stopped heartbeating for a lease: dispatches them
        again, or fails them "worker lost" after the last allowed attempt. Returns the failed."""
        reaped = await self._executions.reap_stale(
            lease_seconds=self._limits.lease_seconds,
            max_attempts=self._limits.max_attempts,
            limit=REAP_LIMIT,
        )
        for execution_id in reaped.lost:
            EXECUTIONS_FINISHED.labels(outcome="WORKER_LOST").inc()
            logger.warning(
                "execution failed: worker lost",
                extra={"action": "reap", "execution_id": execution_id},
            )
        ATTEMPTS_RETRIED.labels(reason="worker_lost").inc(len(reaped.retried))
        for execution_id in reaped.retried:
            logger.warning(
                "execution dispatched again: its worker went quiet",
                extra={"action": "reap", "execution_id": execution_id},
            )
        return list(reaped.lost)

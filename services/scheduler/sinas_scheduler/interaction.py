"""Interactive input and cancellation: pause in `input()`, continue, cancel, input deadlines.

State changes commit first; executors hear about them afterwards through their heartbeats,
which only the worker holding an attempt is answered for. A control message published after
the commit only hints that they ask at once; it carries no input and is never obeyed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sinas_common.control import ControlAction, ControlMessage
from sinas_common.errors import ExecutionNotFound, InvalidTransition, NotFound
from sinas_scheduler import permissions as perms
from sinas_scheduler.batches import BATCH_NOT_FOUND
from sinas_scheduler.models import (
    AwaitingInput,
    Batch,
    EndedWaiters,
    Execution,
    ExecutionStatus,
    HeartbeatNews,
    HeldAttempt,
    Principal,
    ResumedInput,
    input_deadline_error,
)
from sinas_scheduler.registry import require
from sinas_scheduler.store import ExecutionStore

logger = logging.getLogger(__name__)

# Paused executions failed per statement by the deadline sweep; it loops until none are left.
EXPIRE_CHUNK = 500


class InteractionStore(Protocol):
    async def report_awaiting_input(
        self, items: Sequence[AwaitingInput], *, worker_id: str, timeout_seconds: float
    ) -> list[str]: ...

    async def continue_execution(self, execution_id: str, value: Any) -> ResumedInput | None: ...

    async def cancel_execution(self, execution_id: str) -> ExecutionStatus | None: ...

    async def cancel_batch(self, batch_id: str) -> tuple[int, EndedWaiters]: ...

    async def expire_inputs(self, *, error: str, limit: int) -> EndedWaiters: ...

    async def heartbeat(
        self, *, worker_id: str, attempts: Sequence[HeldAttempt]
    ) -> HeartbeatNews: ...


class BatchReader(Protocol):
    async def get_batch(self, batch_id: str) -> Batch | None: ...


class Control(Protocol):
    async def publish(self, messages: Sequence[ControlMessage]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCancellation:
    batch_id: str
    status: str
    cancelled_children: int


class InteractionUseCases:
    def __init__(
        self,
        *,
        store: InteractionStore,
        executions: ExecutionStore,
        batches: BatchReader,
        control: Control,
        input_timeout_seconds: int,
    ) -> None:
        self._store = store
        self._executions = executions
        self._batches = batches
        self._control = control
        self._input_timeout_seconds = input_timeout_seconds

    async def continue_execution(
        self, principal: Principal, execution_id: str, value: Any
    ) -> Execution:
        """AWAITING_INPUT → RUNNING; the waiting worker gets `value` from its `input()` call.

        Raises:
            ExecutionNotFound: unknown, or someone else's without read:all.
            PermissionDenied: no sinas.executions.update for this execution.
            InvalidTransition: the execution is not awaiting input.
        """
        execution = await self._updatable(principal, execution_id)
        resumed = await self._store.continue_execution(execution.id, value)
        if resumed is None:
            current = await self._executions.get_execution(execution.id)
            status = (current or execution).status.value
            raise InvalidTransition(f"Execution is not awaiting input (status {status})")
        logger.info(
            "execution continued",
            extra={"action": "continue", "execution_id": execution.id, "round": resumed.round},
        )
        # The input stays in the row: the holding worker's heartbeat, which this hints at,
        # is what hands it over.
        await self._control.publish(
            [ControlMessage(execution_id=execution.id, action=ControlAction.CONTINUE)]
        )
        return await self._reread(execution)

    async def cancel_execution(
        self, principal: Principal, execution_id: str
    ) -> tuple[Execution, bool]:
        """PENDING or AWAITING_INPUT → CANCELLED; running or finished ones stay as they are."""
        execution = await self._updatable(principal, execution_id)
        previous = await self._store.cancel_execution(execution.id)
        if previous is not None:
            logger.info(
                "execution cancelled",
                extra={"action": "cancel", "execution_id": execution.id, "from": previous.value},
            )
            if previous is ExecutionStatus.AWAITING_INPUT:
                await self._control.publish(_cancels([execution.id]))
        return await self._reread(execution), previous is not None

    async def cancel_batch(self, principal: Principal, batch_id: str) -> BatchCancellation:
        """Every PENDING and AWAITING_INPUT child → CANCELLED; running children finish."""
        batch = await self._batches.get_batch(batch_id)
        if batch is None or not _visible(principal, batch.user_id):
            raise NotFound(BATCH_NOT_FOUND)
        _require_update(principal, batch.user_id)
        if batch.finished_at is not None:
            return BatchCancellation(
                batch_id=batch.id, status=batch.status.value, cancelled_children=0
            )
        cancelled, ended = await self._store.cancel_batch(batch.id)
        logger.info(
            "batch cancelled",
            extra={"action": "cancel_batch", "batch_id": batch.id, "cancelled": cancelled},
        )
        await self._control.publish(_cancels(ended.execution_ids))
        after = await self._batches.get_batch(batch.id)
        return BatchCancellation(
            batch_id=batch.id,
            status=(after or batch).status.value,
            cancelled_children=cancelled,
        )

    async def report_awaiting_input(
        self, worker_id: str, items: Sequence[AwaitingInput]
    ) -> list[str]:
        """RUNNING → AWAITING_INPUT for the attempts `worker_id` holds; returns those paused."""
        paused = await self._store.report_awaiting_input(
            items, worker_id=worker_id, timeout_seconds=float(self._input_timeout_seconds)
        )
        for execution_id in paused:
            logger.info(
                "execution awaiting input",
                extra={"action": "awaiting_input", "execution_id": execution_id},
            )
        return paused

    async def heartbeat(self, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews:
        """Keeps the attempts `worker_id` holds alive; the news of them is the truth an
        executor acts on (a control message only tells it to ask)."""
        return await self._store.heartbeat(worker_id=worker_id, attempts=attempts)

    async def expire_inputs(self) -> list[str]:
        """Fails every paused execution whose input deadline passed, and ends its worker."""
        error = input_deadline_error(self._input_timeout_seconds)
        expired: list[str] = []
        while True:
            ended = await self._store.expire_inputs(error=error, limit=EXPIRE_CHUNK)
            if ended.execution_ids:
                await self._control.publish(_cancels(ended.execution_ids))
                expired.extend(ended.execution_ids)
            if len(ended.execution_ids) < EXPIRE_CHUNK:
                break
        for execution_id in expired:
            logger.warning(
                "execution failed: input deadline passed",
                extra={"action": "input_deadline", "execution_id": execution_id},
            )
        return expired

    async def _updatable(self, principal: Principal, execution_id: str) -> Execution:
        execution = await self._executions.get_execution(execution_id)
        if execution is None or not _visible(principal, execution.user_id):
            raise ExecutionNotFound()
        _require_update(principal, execution.user_id)
        return execution

    async def _reread(self, execution: Execution) -> Execution:
        return await self._executions.get_execution(execution.id) or execution


def _visible(principal: Principal, owner_id: str) -> bool:
    """Someone else's execution or batch is not found, never forbidden, so ids can't be probed."""
    return owner_id == principal.user.id or perms.has_permission(
        principal.permissions, perms.EXECUTIONS_READ_ALL
    )


def _require_update(principal: Principal, owner_id: str) -> None:
    required = (
        perms.EXECUTIONS_UPDATE_OWN
        if owner_id == principal.user.id
        else perms.EXECUTIONS_UPDATE_ALL
    )
    require(principal, required, "Not authorized to update this execution")


def _cancels(execution_ids: Sequence[str]) -> list[ControlMessage]:
    return [
        ControlMessage(execution_id=execution_id, action=ControlAction.CANCEL)
        for execution_id in execution_ids
    ]

"""PostgreSQL adapter of the interaction port: pause in `input()`, continue, cancel, deadlines.

Every statement that ends executions wakes waiters and the event publishers in its own
transaction, and hands the batches it touched to the batch bookkeeping before commit, so a
batch's terminal status is derived in the same transaction that ends its last child.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.jsoncodec import dump_json
from sinas_scheduler.models import (
    AwaitingInput,
    EndedWaiters,
    ExecutionStatus,
    HeartbeatNews,
    HeldAttempt,
    ResumedInput,
)
from sinas_scheduler.pg import driver_connection
from sinas_scheduler.postgres_batch_finish import finish_batches_if_done
from sinas_scheduler.store import COMPLETION_CHANNEL, EVENTS_CHANNEL
from sinas_scheduler.tables import JSON_DATA

_WAKE = f"""
CROSS JOIN LATERAL (SELECT pg_notify('{COMPLETION_CHANNEL}', d.id)) AS notified
CROSS JOIN LATERAL (
    SELECT CASE WHEN d.callback_status IS NOT NULL THEN pg_notify('{EVENTS_CHANNEL}', '') END
) AS evented
"""

_ENDED_AT = """
    completed_at = now(),
    duration_ms = CASE WHEN e.started_at IS NULL THEN NULL
        ELSE (EXTRACT(EPOCH FROM now() - e.started_at) * 1000)::bigint END,
    heartbeat_at = NULL,
    input_prompt = NULL
"""

# A retried report of the round already paused answers "paused" again; a report of a round
# that was continued meanwhile (input_round not below it), of an older attempt, or from a
# worker that does not hold the attempt does nothing.
_REPORT = sa.text(
    """
WITH r AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:attempts AS int[]), CAST(:prompts AS text[]),
        CAST(:rounds AS int[])
    ) AS r(id, attempt, prompt, round)
),
paused AS (
    UPDATE executions AS e
    SET status = 'AWAITING_INPUT',
        input_prompt = r.prompt,
        input_round = r.round,
        input_deadline_at = now() + make_interval(secs => :timeout_seconds),
        resumed_input = NULL,
        resumed_at = NULL
    FROM r
    WHERE e.id = ANY(CAST(:ids AS text[])) AND e.id = r.id AND e.attempts = r.attempt
      AND e.worker_id = :worker_id
      AND e.status = 'RUNNING'
      AND e.input_round < r.round
    RETURNING e.id
)
SELECT id FROM paused
UNION
SELECT e.id FROM executions AS e JOIN r ON e.id = r.id
WHERE e.attempts = r.attempt AND e.worker_id = :worker_id AND e.status = 'AWAITING_INPUT'
  AND e.input_round = r.round
"""
)

# heartbeat_at restarts: the pause was no lost worker, the reaper must not take it for one.
_CONTINUE = sa.text(
    """
UPDATE executions
SET status = 'RUNNING',
    resumed_input = CAST(:input AS json),
    resumed_at = now(),
    input_prompt = NULL,
    input_deadline_at = NULL,
    heartbeat_at = now()
WHERE id = :id AND status = 'AWAITING_INPUT'
RETURNING input_round
"""
)

# The row lock makes cancel and claim take turns: whichever comes second sees the other's
# status, so a cancelled execution is never claimed and a claimed one is never cancelled.
_CANCEL_ONE = sa.text(
    f"""
WITH old AS (
    SELECT id, status FROM executions
    WHERE id = :id AND status IN ('PENDING', 'AWAITING_INPUT')
    FOR UPDATE
),
d AS (
    UPDATE executions AS e
    SET status = 'CANCELLED', {_ENDED_AT}
    FROM old
    WHERE e.id = old.id
    RETURNING e.id, e.batch_id, e.callback_status, old.status AS previous
)
SELECT d.id, d.batch_id, d.previous FROM d {_WAKE}
"""
)

_CANCEL_CHILDREN = sa.text(
    f"""
WITH old AS (
    SELECT id, status FROM executions
    WHERE batch_id = :batch_id AND status IN ('PENDING', 'AWAITING_INPUT')
    FOR UPDATE
),
d AS (
    UPDATE executions AS e
    SET status = 'CANCELLED', {_ENDED_AT}
    FROM old
    WHERE e.id = old.id
    RETURNING e.id, e.batch_id, e.callback_status, old.status AS previous
)
SELECT d.id, d.batch_id, d.previous FROM d {_WAKE}
"""
)

_MARK_BATCH_CANCELLED = sa.text(
    "UPDATE batches SET cancelled_at = COALESCE(cancelled_at, now()) WHERE id = :batch_id"
)

_EXPIRE = sa.text(
    f"""
WITH old AS (
    SELECT id FROM executions
    WHERE status = 'AWAITING_INPUT' AND input_deadline_at <= now()
    ORDER BY input_deadline_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
),
d AS (
    UPDATE executions AS e
    SET status = 'FAILED', error = :error, {_ENDED_AT}
    FROM old
    WHERE e.id = old.id
    RETURNING e.id, e.batch_id, e.callback_status
)
SELECT d.id, d.batch_id FROM d {_WAKE}
"""
)

# Both statements of a heartbeat see only the attempts the calling worker holds: its news
# (a continue's input above all) is for the claim holder alone.
_HELD = "unnest(CAST(:ids AS text[]), CAST(:attempts AS int[])) AS h(id, attempt)"

_TOUCH = sa.text(
    f"""
UPDATE executions AS e SET heartbeat_at = now()
FROM {_HELD}
WHERE e.id = ANY(CAST(:ids AS text[])) AND e.id = h.id AND e.attempts = h.attempt
  AND e.status IN ('RUNNING', 'AWAITING_INPUT') AND e.worker_id = :worker_id
"""
)

_NEWS = sa.text(
    f"""
SELECT e.id, e.status, e.resumed_input, e.resumed_at, e.input_round
FROM executions AS e JOIN {_HELD} ON e.id = h.id AND e.attempts = h.attempt
WHERE e.id = ANY(CAST(:ids AS text[])) AND e.worker_id = :worker_id
  AND (e.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
       OR (e.status = 'RUNNING' AND e.resumed_at IS NOT NULL))
"""
).columns(resumed_input=JSON_DATA)


class PostgresInteractionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def report_awaiting_input(
        self, items: Sequence[AwaitingInput], *, worker_id: str, timeout_seconds: float
    ) -> list[str]:
        """Pauses the reported attempts `worker_id` holds; returns the ids now paused."""
        if not items:
            return []
        params = {
            "worker_id": worker_id,
            "ids": [item.execution_id for item in items],
            "attempts": [item.attempt for item in items],
            "prompts": [item.prompt for item in items],
            "rounds": [item.round for item in items],
            "timeout_seconds": timeout_seconds,
        }
        async with self._engine.begin() as conn:
            paused = (await conn.execute(_REPORT, params)).scalars().all()
        return [str(execution_id) for execution_id in paused]

    async def continue_execution(self, execution_id: str, value: Any) -> ResumedInput | None:
        """AWAITING_INPUT → RUNNING with the answer stored; None when it was not paused."""
        params = {"id": execution_id, "input": dump_json(value).decode()}
        async with self._engine.begin() as conn:
            round_ = (await conn.execute(_CONTINUE, params)).scalar_one_or_none()
        if round_ is None:
            return None
        return ResumedInput(execution_id=execution_id, input=value, round=int(round_))

    async def cancel_execution(self, execution_id: str) -> ExecutionStatus | None:
        """PENDING or AWAITING_INPUT → CANCELLED; the status it left, or None when it could
        not be cancelled (running or finished)."""
        async with self._engine.begin() as conn:
            row = (await conn.execute(_CANCEL_ONE, {"id": execution_id})).one_or_none()
            if row is None:
                return None
            if row.batch_id is not None:
                await finish_batches_if_done(await driver_connection(conn), [row.batch_id])
        return ExecutionStatus(row.previous)

    async def cancel_batch(self, batch_id: str) -> tuple[int, EndedWaiters]:
        """Cancels every PENDING and AWAITING_INPUT child in one statement and records the
        request on the batch; returns how many were cancelled and which of them were paused."""
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CANCEL_CHILDREN, {"batch_id": batch_id})).all()
            await conn.execute(_MARK_BATCH_CANCELLED, {"batch_id": batch_id})
            await finish_batches_if_done(await driver_connection(conn), [batch_id])
        paused = tuple(
            row.id for row in rows if row.previous == ExecutionStatus.AWAITING_INPUT.value
        )
        return len(rows), EndedWaiters(execution_ids=paused, batch_ids=(batch_id,))

    async def expire_inputs(self, *, error: str, limit: int) -> EndedWaiters:
        """Fails paused executions whose input deadline passed, oldest first."""
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_EXPIRE, {"error": error, "limit": limit})).all()
            batch_ids = sorted({row.batch_id for row in rows if row.batch_id is not None})
            if batch_ids:
                await finish_batches_if_done(await driver_connection(conn), batch_ids)
        return EndedWaiters(execution_ids=tuple(row.id for row in rows), batch_ids=tuple(batch_ids))

    async def heartbeat(self, *, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews:
        """Keeps alive the attempts `worker_id` holds and reports those that ended or were
        continued; attempts it does not hold are neither touched nor reported."""
        if not attempts:
            return HeartbeatNews()
        params = {
            "ids": [a.execution_id for a in attempts],
            "attempts": [a.attempt for a in attempts],
            "worker_id": worker_id,
        }
        async with self._engine.begin() as conn:
            await conn.execute(_TOUCH, params)
            rows = (await conn.execute(_NEWS, params)).mappings().all()
        return HeartbeatNews(
            cancelled=tuple(
                row["id"] for row in rows if ExecutionStatus(row["status"]).is_terminal
            ),
            resumed=tuple(
                ResumedInput(
                    execution_id=row["id"], input=row["resumed_input"], round=row["input_round"]
                )
                for row in rows
                if row["status"] == ExecutionStatus.RUNNING.value
            ),
        )

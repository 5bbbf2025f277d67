"""PostgreSQL adapter of the callback port: the terminal-event outbox, claims and outcomes.

Each call is one statement for its whole list. Claims and outcomes are conditional on
`callback_status`, so a callback is claimed once and only an in-flight claim records.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_scheduler.models import (
    BatchCallbackRow,
    BatchCounts,
    CallbackOutcome,
    CallbackRow,
    ExecutionStatus,
)
from sinas_scheduler.pg import driver_connection
from sinas_scheduler.postgres_batches import batch_counts, batch_from_row
from sinas_scheduler.store import PublishTerminated
from sinas_scheduler.tables import JSON_DATA

# The predicate matches ix_executions_event_outbox exactly, so the sweep reads that index.
_EVENTS_DUE = sa.text(
    """
SELECT id FROM executions
WHERE event_published_at IS NULL AND callback_status IS NOT NULL
  AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
ORDER BY completed_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""
)

_MARK_PUBLISHED = sa.text(
    "UPDATE executions SET event_published_at = now() WHERE id = ANY(CAST(:ids AS text[]))"
)

_CLAIM = sa.text(
    """
WITH claimed AS (
    UPDATE executions AS e
    SET callback_status = 'in_flight', callback_claimed_at = now()
    WHERE e.id = ANY(CAST(:ids AS text[]))
      AND e.callback_status = 'pending'
      AND e.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
    RETURNING e.id, e.callback_url, e.user_id, e.namespace, e.name, e.trigger_id, e.status,
              e.timed_out, e.output, e.error, e.started_at, e.completed_at, e.duration_ms
)
SELECT c.*, u.email FROM claimed AS c JOIN users AS u ON u.id = c.user_id
"""
).columns(output=JSON_DATA)

_RECORD = sa.text(
    """
WITH o AS (
    SELECT DISTINCT ON (o.id) o.* FROM unnest(
        CAST(:ids AS text[]), CAST(:sent AS boolean[]), CAST(:codes AS int[]),
        CAST(:errors AS text[]), CAST(:attempted AS timestamptz[])
    ) AS o(id, sent, code, error, attempted_at)
    ORDER BY o.id
)
UPDATE executions AS e
SET callback_status = CASE WHEN o.sent THEN 'sent' ELSE 'failed' END,
    callback_response_code = o.code,
    callback_error = CASE WHEN o.sent THEN NULL ELSE o.error END,
    callback_attempted_at = COALESCE(o.attempted_at, now())
FROM o
WHERE e.id = ANY(CAST(:ids AS text[])) AND e.id = o.id AND e.callback_status = 'in_flight'
RETURNING e.id
"""
)

# The notifier may or may not have sent it; failing the claim (never re-offering it) keeps
# delivery at most once.
_FAIL_STALE = sa.text(
    """
UPDATE executions SET callback_status = 'failed', callback_error = :error
WHERE callback_status = 'in_flight'
  AND callback_claimed_at < now() - make_interval(secs => :timeout)
RETURNING id
"""
)


class PostgresCallbackStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def publish_terminated(self, *, limit: int, publish: PublishTerminated) -> int:
        """Publishes owed events and marks them; a failed publish rolls back the mark."""
        async with self._engine.begin() as conn:
            ids = [str(row[0]) for row in (await conn.execute(_EVENTS_DUE, {"limit": limit}))]
            if not ids:
                return 0
            await publish(ids)
            await conn.execute(_MARK_PUBLISHED, {"ids": ids})
        return len(ids)

    async def claim_callbacks(self, execution_ids: Sequence[str]) -> list[CallbackRow]:
        if not execution_ids:
            return []
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM, {"ids": list(execution_ids)})).mappings().all()
        return [
            CallbackRow(
                execution_id=row["id"],
                callback_url=row["callback_url"],
                user_id=row["user_id"],
                user_email=row["email"],
                namespace=row["namespace"],
                name=row["name"],
                trigger_id=row["trigger_id"],
                status=ExecutionStatus(row["status"]),
                timed_out=row["timed_out"],
                output=row["output"],
                error=row["error"],
                started_at=row["started_at"],
                completed_at=row["completed_at"],
                duration_ms=row["duration_ms"],
            )
            for row in rows
        ]

    async def record_callback_outcomes(self, outcomes: Sequence[CallbackOutcome]) -> list[str]:
        if not outcomes:
            return []
        params = {
            "ids": [o.execution_id for o in outcomes],
            "sent": [o.sent for o in outcomes],
            "codes": [o.response_code for o in outcomes],
            "errors": [o.error for o in outcomes],
            "attempted": [o.attempted_at for o in outcomes],
        }
        async with self._engine.begin() as conn:
            applied = (await conn.execute(_RECORD, params)).scalars().all()
        return [str(execution_id) for execution_id in applied]

    async def fail_stale_claims(self, *, claim_timeout_seconds: float, error: str) -> list[str]:
        async with self._engine.begin() as conn:
            failed = (
                (
                    await conn.execute(
                        _FAIL_STALE, {"timeout": claim_timeout_seconds, "error": error}
                    )
                )
                .scalars()
                .all()
            )
        return [str(execution_id) for execution_id in failed]


# -- batch-summary callbacks ----------------------------------------------------------------

# The predicate matches ix_batches_event_outbox exactly, so the sweep reads that index.
_BATCH_EVENTS_DUE = sa.text(
    """
SELECT id FROM batches
WHERE event_published_at IS NULL AND batch_callback_status IS NOT NULL
ORDER BY finished_at
LIMIT :limit
FOR UPDATE SKIP LOCKED
"""
)

_MARK_BATCHES_PUBLISHED = sa.text(
    "UPDATE batches SET event_published_at = now() WHERE id = ANY(CAST(:ids AS text[]))"
)

_CLAIM_BATCHES = sa.text(
    """
WITH claimed AS (
    UPDATE batches AS b
    SET batch_callback_status = 'in_flight', batch_callback_claimed_at = now()
    WHERE b.id = ANY(CAST(:ids AS text[]))
      AND b.batch_callback_status = 'pending'
      AND b.finished_at IS NOT NULL
    RETURNING b.*
)
SELECT c.*, u.email FROM claimed AS c JOIN users AS u ON u.id = c.user_id
"""
)

_RECORD_BATCHES = sa.text(
    """
WITH o AS (
    SELECT DISTINCT ON (o.id) o.* FROM unnest(
        CAST(:ids AS text[]), CAST(:sent AS boolean[]), CAST(:codes AS int[]),
        CAST(:errors AS text[]), CAST(:attempted AS timestamptz[])
    ) AS o(id, sent, code, error, attempted_at)
    ORDER BY o.id
)
UPDATE batches AS b
SET batch_callback_status = CASE WHEN o.sent THEN 'sent' ELSE 'failed' END,
    batch_callback_response_code = o.code,
    batch_callback_error = CASE WHEN o.sent THEN NULL ELSE o.error END,
    batch_callback_attempted_at = COALESCE(o.attempted_at, now())
FROM o
WHERE b.id = ANY(CAST(:ids AS text[])) AND b.id = o.id
  AND b.batch_callback_status = 'in_flight'
RETURNING b.id
"""
)

_FAIL_STALE_BATCHES = sa.text(
    """
UPDATE batches SET batch_callback_status = 'failed', batch_callback_error = :error
WHERE batch_callback_status = 'in_flight'
  AND batch_callback_claimed_at < now() - make_interval(secs => :timeout)
RETURNING id
"""
)


class PostgresBatchCallbackStore:
    """The batch-summary side of the callback port: outbox, claims, outcomes, stale claims."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def publish_batches_terminated(self, *, limit: int, publish: PublishTerminated) -> int:
        """Publishes owed batch events and marks them; a failed publish rolls back the mark."""
        async with self._engine.begin() as conn:
            ids = [str(row[0]) for row in await conn.execute(_BATCH_EVENTS_DUE, {"limit": limit})]
            if not ids:
                return 0
            await publish(ids)
            await conn.execute(_MARK_BATCHES_PUBLISHED, {"ids": ids})
        return len(ids)

    async def claim_batch_callbacks(self, batch_ids: Sequence[str]) -> list[BatchCallbackRow]:
        if not batch_ids:
            return []
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM_BATCHES, {"ids": list(batch_ids)})).mappings().all()
            counted = await batch_counts(await driver_connection(conn), [row["id"] for row in rows])
        return [
            BatchCallbackRow(
                batch=batch_from_row(row, *counted.get(row["id"], (BatchCounts(), None))),
                user_email=row["email"],
            )
            for row in rows
        ]

    async def record_batch_callback_outcomes(
        self, outcomes: Sequence[CallbackOutcome]
    ) -> list[str]:
        if not outcomes:
            return []
        params = {
            "ids": [o.batch_id for o in outcomes],
            "sent": [o.sent for o in outcomes],
            "codes": [o.response_code for o in outcomes],
            "errors": [o.error for o in outcomes],
            "attempted": [o.attempted_at for o in outcomes],
        }
        async with self._engine.begin() as conn:
            applied = (await conn.execute(_RECORD_BATCHES, params)).scalars().all()
        return [str(batch_id) for batch_id in applied]

    async def fail_stale_batch_claims(
        self, *, claim_timeout_seconds: float, error: str
    ) -> list[str]:
        params = {"timeout": claim_timeout_seconds, "error": error}
        async with self._engine.begin() as conn:
            failed = (await conn.execute(_FAIL_STALE_BATCHES, params)).scalars().all()
        return [str(batch_id) for batch_id in failed]

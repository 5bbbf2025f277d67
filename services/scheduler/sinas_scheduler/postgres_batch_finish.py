"""Ending batches: the terminal derivation every statement that ends children runs in its own
transaction (completion, lost workers, the reaper, cancel), so a batch ends exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from sinas_scheduler.pg import scalars
from sinas_scheduler.store import EVENTS_CHANNEL

# Locked in id order before counting, so two transactions that each end a batch's last open
# children serialise here: the second one counts after the first commits and sees it.
_LOCK_OPEN = """
SELECT id FROM batches
WHERE id = ANY(%(ids)s::text[]) AND finished_at IS NULL
ORDER BY id
FOR UPDATE
"""

_FINISH = f"""
WITH done AS (
    SELECT b.id FROM batches AS b
    WHERE b.id = ANY(%(ids)s::text[]) AND b.finished_at IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM executions AS e
          WHERE e.batch_id = b.id AND e.status IN ('PENDING', 'RUNNING', 'AWAITING_INPUT')
      )
),
counts AS (
    SELECT e.batch_id AS id,
           count(*) FILTER (WHERE e.status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE e.status = 'FAILED') AS failed
    FROM executions AS e JOIN done AS d ON e.batch_id = d.id
    GROUP BY e.batch_id
),
finished AS (
    UPDATE batches AS b
    SET finished_at = now(),
        status = CASE
            WHEN b.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN c.completed = b.total THEN 'completed'
            WHEN c.failed = b.total THEN 'failed'
            ELSE 'partial'
        END,
        batch_callback_status = CASE
            WHEN b.batch_callback_url IS NULL THEN NULL ELSE 'pending'
        END
    FROM counts AS c
    WHERE b.id = c.id
    RETURNING b.id, b.batch_callback_status
)
SELECT f.id FROM finished AS f
CROSS JOIN LATERAL (
    SELECT CASE WHEN f.batch_callback_status IS NOT NULL
                THEN pg_notify('{EVENTS_CHANNEL}', '') END
) AS evented
"""


async def finish_batches_if_done(
    conn: AsyncConnection[Any], batch_ids: Sequence[str | None]
) -> list[str]:
    """Ends every given batch whose children are all terminal; returns the ids it ended.

    Call it in the transaction that made children terminal, after their UPDATE: the batch
    ends in that same commit, exactly once, and owes its summary event from then on. On an
    engine connection, pass its `driver_connection`.
    """
    ids = sorted({batch_id for batch_id in batch_ids if batch_id})
    if not ids:
        return []
    locked = await scalars(conn, _LOCK_OPEN, {"ids": ids})
    if not locked:
        return []
    finished = await scalars(conn, _FINISH, {"ids": locked})
    return [str(batch_id) for batch_id in finished]

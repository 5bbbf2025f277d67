"""PostgreSQL adapter of the retention port: each call is one DELETE of at most `limit` rows in
its own short transaction; `SKIP LOCKED` leaves rows another transaction holds for later."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

# A row whose terminal event is still owed to the notifier stays until it is published. A
# batch's child stays while its batch is unfinished, since the batch's counts come from them.
_DELETE_EXECUTIONS = sa.text(
    """
WITH doomed AS (
    SELECT e.id FROM executions AS e
    WHERE e.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
      AND COALESCE(e.completed_at, e.created_at) < now() - make_interval(secs => :age)
      AND NOT (e.event_published_at IS NULL AND e.callback_status IS NOT NULL)
      AND (e.batch_id IS NULL
           OR EXISTS (SELECT 1 FROM batches AS b
                      WHERE b.id = e.batch_id AND b.finished_at IS NOT NULL))
    LIMIT :limit
    FOR UPDATE OF e SKIP LOCKED
)
DELETE FROM executions AS e USING doomed WHERE e.id = doomed.id
"""
)

_DELETE_BATCHES = sa.text(
    """
WITH doomed AS (
    SELECT b.id FROM batches AS b
    WHERE b.finished_at IS NOT NULL
      AND b.finished_at < now() - make_interval(secs => :age)
      AND NOT (b.event_published_at IS NULL AND b.batch_callback_status IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM executions AS e WHERE e.batch_id = b.id)
    LIMIT :limit
    FOR UPDATE OF b SKIP LOCKED
)
DELETE FROM batches AS b USING doomed WHERE b.id = doomed.id
"""
)

# Messages go with their chat (ON DELETE CASCADE).
_DELETE_CHATS = sa.text(
    """
WITH doomed AS (
    SELECT c.id FROM chats AS c
    WHERE c.updated_at < now() - make_interval(secs => :age)
      AND NOT EXISTS (SELECT 1 FROM executions AS e WHERE e.chat_id = c.id)
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
)
DELETE FROM chats AS c USING doomed WHERE c.id = doomed.id
"""
)

_DELETE_KEYS = sa.text(
    """
WITH doomed AS (
    SELECT user_id, key FROM idempotency_keys
    WHERE created_at <= now() - make_interval(secs => :ttl_seconds)
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
DELETE FROM idempotency_keys AS k USING doomed
WHERE k.user_id = doomed.user_id AND k.key = doomed.key
"""
)


class PostgresRetentionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def delete_finished_executions(self, *, older_than_seconds: float, limit: int) -> int:
        return await self._delete(_DELETE_EXECUTIONS, {"age": older_than_seconds, "limit": limit})

    async def delete_finished_batches(self, *, older_than_seconds: float, limit: int) -> int:
        return await self._delete(_DELETE_BATCHES, {"age": older_than_seconds, "limit": limit})

    async def delete_idle_chats(self, *, older_than_seconds: float, limit: int) -> int:
        return await self._delete(_DELETE_CHATS, {"age": older_than_seconds, "limit": limit})

    async def delete_expired_idempotency_keys(self, *, ttl_seconds: int, limit: int) -> int:
        return await self._delete(_DELETE_KEYS, {"ttl_seconds": ttl_seconds, "limit": limit})

    async def _delete(self, statement: sa.TextClause, params: dict[str, float | int]) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(statement, params)
        return int(result.rowcount)

"""PostgreSQL adapter of the batch port: one-transaction submit, aggregates counted from the
children, ordered drill-in, and the terminal derivation every child-ending statement runs.

Counts are never stored: they come from the children through `(batch_id, status)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import AsyncConnection as PsycopgConnection
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.models import (
    TRIGGER_TYPE_API,
    Batch,
    BatchCounts,
    BatchPage,
    BatchQuery,
    BatchStatus,
    CallbackStatus,
    ExecutionStatus,
    NewBatch,
    batch_trigger_id,
)
from sinas_scheduler.pg import HotPool, driver_connection
from sinas_scheduler.postgres_executions import execution_from_row
from sinas_scheduler.postgres_idempotency import reserve_idempotency_key
from sinas_scheduler.store import DISPATCH_CHANNEL
from sinas_scheduler.tables import batches, executions

# All children in one statement: a 1,000-child batch is one INSERT, not a thousand.
_INSERT_CHILDREN = sa.text(
    """
INSERT INTO executions (
    id, user_id, kind, namespace, name, function_id, function_version, trigger_type,
    trigger_id, status, input, depth, created_at, run_at, parent_execution_id, callback_url,
    callback_status, batch_id, batch_index)
SELECT c.id, :user_id, :kind, :namespace, :name, :function_id, :function_version,
       :trigger_type, c.trigger_id, 'PENDING', CAST(c.input AS json), :depth, now(),
       now() + make_interval(secs => :delay_seconds), :parent_execution_id, :callback_url,
       :callback_status, :batch_id, (c.ord - 1)::int
FROM unnest(CAST(:ids AS text[]), CAST(:trigger_ids AS text[]), CAST(:inputs AS text[]))
     WITH ORDINALITY AS c(id, trigger_id, input, ord)
"""
)

_NOTIFY_DISPATCH = sa.text("SELECT pg_notify(:channel, '')").bindparams(channel=DISPATCH_CHANNEL)

# One batch's children tallied in one pass over `(batch_id, status)`; the columns are named
# apart from the batch's own, so a batch row and its tally can come back as one row.
_CHILD_TALLY = """
count(*) FILTER (WHERE e.status IN ('PENDING', 'AWAITING_INPUT')) AS child_queued,
count(*) FILTER (WHERE e.status = 'RUNNING') AS child_running,
count(*) FILTER (WHERE e.status = 'COMPLETED') AS child_completed,
count(*) FILTER (WHERE e.status = 'FAILED') AS child_failed,
count(*) FILTER (WHERE e.status = 'CANCELLED') AS child_cancelled,
COALESCE(sum(e.prompt_tokens), 0) AS child_prompt_tokens,
COALESCE(sum(e.completion_tokens), 0) AS child_completion_tokens,
min(e.started_at) AS child_started_at
"""

_COUNTS = f"""
SELECT e.batch_id, {_CHILD_TALLY}
FROM executions AS e
WHERE e.batch_id = ANY(%(ids)s::text[])
GROUP BY e.batch_id
"""

# A client polling one batch gets its row and its tally in one round trip.
_BATCH_WITH_TALLY = f"""
SELECT b.*, tally.*
FROM batches AS b
CROSS JOIN LATERAL (SELECT {_CHILD_TALLY} FROM executions AS e WHERE e.batch_id = b.id) AS tally
WHERE b.id = %(id)s
"""


class PostgresBatchStore:
    def __init__(self, engine: AsyncEngine, hot: HotPool) -> None:
        self._engine = engine
        # Clients poll one batch's aggregate: straight psycopg (see `pg`).
        self._hot = hot

    async def insert_batch(
        self, new: NewBatch, *, idempotency: IdempotencyReservation | None = None
    ) -> StoredResponse | None:
        """The batch row and every child in one transaction, then a dispatcher wake-up; the
        idempotency key is reserved first in that transaction, and when it is held nothing is
        stored and the holder's answer comes back."""
        async with self._engine.begin() as conn:
            if idempotency is not None:
                held = await reserve_idempotency_key(conn, idempotency)
                if held is not None:
                    return held
            await conn.execute(
                batches.insert().values(
                    id=new.id,
                    user_id=new.user_id,
                    kind=new.kind,
                    namespace=new.namespace,
                    name=new.name,
                    total=len(new.execution_ids),
                    trigger_id_prefix=new.trigger_id_prefix,
                    delay_seconds=new.delay_seconds,
                    callback_url=new.callback_url,
                    batch_callback_url=new.batch_callback_url,
                    created_at=sa.func.now(),
                )
            )
            await conn.execute(
                _INSERT_CHILDREN,
                {
                    "ids": list(new.execution_ids),
                    "trigger_ids": [
                        batch_trigger_id(new.trigger_id_prefix, index)
                        for index in range(len(new.execution_ids))
                    ],
                    "inputs": list(new.inputs_json),
                    "user_id": new.user_id,
                    "kind": new.kind,
                    "namespace": new.namespace,
                    "name": new.name,
                    "function_id": new.function_id,
                    "function_version": new.function_version,
                    "trigger_type": TRIGGER_TYPE_API,
                    "depth": new.depth,
                    "delay_seconds": new.delay_seconds,
                    "parent_execution_id": new.parent_execution_id,
                    "callback_url": new.callback_url,
                    "callback_status": (
                        None if new.callback_url is None else CallbackStatus.PENDING.value
                    ),
                    "batch_id": new.id,
                },
            )
            await conn.execute(_NOTIFY_DISPATCH)
        return None

    async def get_batch(self, batch_id: str) -> Batch | None:
        async with self._hot.connection() as conn:
            row = await (await conn.execute(_BATCH_WITH_TALLY, {"id": batch_id})).fetchone()
        return None if row is None else batch_from_row(row, *_tally(row))

    async def list_batches(self, query: BatchQuery) -> list[Batch]:
        select = sa.select(batches)
        if query.user_id is not None:
            select = select.where(batches.c.user_id == query.user_id)
        select = (
            select.order_by(batches.c.created_at.desc(), batches.c.id.desc())
            .limit(query.limit)
            .offset(query.offset)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select)).mappings().all()
            counted = await batch_counts(await driver_connection(conn), [row["id"] for row in rows])
        return [batch_from_row(row, *counted.get(row["id"], (BatchCounts(), None))) for row in rows]

    async def list_batch_executions(
        self, batch_id: str, *, status: ExecutionStatus | None, limit: int, offset: int
    ) -> BatchPage:
        where = [executions.c.batch_id == batch_id]
        if status is not None:
            where.append(executions.c.status == status.value)
        page = (
            sa.select(executions)
            .where(*where)
            .order_by(executions.c.batch_index)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(executions).where(*where)
        async with self._engine.connect() as conn:
            total = int((await conn.execute(count)).scalar_one())
            rows = (await conn.execute(page)).mappings().all()
        found = tuple(execution_from_row(row) for row in rows)
        next_offset = offset + len(found)
        return BatchPage(
            executions=found,
            total=total,
            next_offset=next_offset if found and next_offset < total else None,
        )


async def batch_counts(
    conn: PsycopgConnection[Any], batch_ids: Sequence[str]
) -> dict[str, tuple[BatchCounts, Any]]:
    """Per batch: its children's counts and the earliest child start (on an engine
    connection, pass its `driver_connection`); a batch without children is left out."""
    if not batch_ids:
        return {}
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_COUNTS, {"ids": list(batch_ids)})
        rows = await cursor.fetchall()
    return {row["batch_id"]: _tally(row) for row in rows}


def _tally(row: Any) -> tuple[BatchCounts, Any]:
    """The counts and earliest child start of a row carrying `_CHILD_TALLY`'s columns."""
    counts = BatchCounts(
        queued=int(row["child_queued"]),
        running=int(row["child_running"]),
        completed=int(row["child_completed"]),
        failed=int(row["child_failed"]),
        cancelled=int(row["child_cancelled"]),
        prompt_tokens=int(row["child_prompt_tokens"]),
        completion_tokens=int(row["child_completion_tokens"]),
    )
    return counts, row["child_started_at"]


def batch_from_row(row: Any, counts: BatchCounts, started_at: Any) -> Batch:
    return Batch(
        id=row["id"],
        user_id=row["user_id"],
        kind=row["kind"],
        namespace=row["namespace"],
        name=row["name"],
        total=row["total"],
        counts=counts,
        final_status=None if row["status"] is None else BatchStatus(row["status"]),
        trigger_id_prefix=row["trigger_id_prefix"],
        callback_url=row["callback_url"],
        batch_callback_url=row["batch_callback_url"],
        batch_callback_status=row["batch_callback_status"],
        batch_callback_response_code=row["batch_callback_response_code"],
        batch_callback_error=row["batch_callback_error"],
        batch_callback_attempted_at=row["batch_callback_attempted_at"],
        created_at=row["created_at"],
        started_at=started_at,
        finished_at=row["finished_at"],
        cancelled_at=row["cancelled_at"],
    )

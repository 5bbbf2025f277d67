"""PostgreSQL adapter of the execution port: submit, read, the dispatch outbox, worker writes.

Worker writes take whole lists and run as one statement each (`UPDATE ... FROM unnest(...)`),
so a fetched batch of a thousand executions costs one round trip, not a thousand. Each also
names its ids in `e.id = ANY(...)`: joined on the unnest alone, the generic plan PostgreSQL
caches for a prepared statement scanned a status index instead of looking rows up by key.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.jsoncodec import dump_json
from sinas_scheduler.idempotency import IdempotencyReservation, StoredResponse
from sinas_scheduler.models import (
    WORKER_LOST_PREFIX,
    WORKER_LOST_SUFFIX,
    CallbackStatus,
    ClaimedRow,
    ClaimItem,
    ClaimOutcome,
    DispatchRound,
    DueExecution,
    Execution,
    ExecutionQuery,
    ExecutionStatus,
    NewExecution,
    Outcome,
    ReapOutcome,
    ReleasedAttempt,
)
from sinas_scheduler.pg import HotPool, json_param
from sinas_scheduler.postgres_batch_finish import finish_batches_if_done
from sinas_scheduler.postgres_idempotency import reserve_idempotency_key
from sinas_scheduler.postgres_messages import append_messages
from sinas_scheduler.store import COMPLETION_CHANNEL, DISPATCH_CHANNEL, EVENTS_CHANNEL, Publish
from sinas_scheduler.tables import executions

# Every statement that ends executions wakes the event publishers in its own transaction when
# an ended row has a callback (its event is owed). PostgreSQL folds identical notifications
# of one transaction into one, so a batch costs one wake-up.
_NOTIFY_EVENT = (
    f"CASE WHEN {{row}}.callback_status IS NOT NULL THEN pg_notify('{EVENTS_CHANNEL}', '') END"
)

# Only a PENDING row that is due is claimed. A message for a row that is RUNNING elsewhere is
# a duplicate (a NATS node failed under a live worker and its in-progress acks were lost, or the
# reaper re-dispatched an attempt whose worker went quiet): it is skipped, and the row decides.
# A message for a row not yet due was never published by a dispatcher (they publish only due
# rows): it is skipped too, and the row, still undispatched, is published when it comes due.
_CLAIM = """
WITH claimed AS (
    UPDATE executions AS e
    SET status = 'RUNNING',
        attempts = e.attempts + 1,
        started_at = COALESCE(e.started_at, now()),
        worker_id = %(worker_id)s,
        heartbeat_at = now(),
        -- A new attempt runs the function from the start: its `input()` calls count anew.
        input_round = 0,
        input_prompt = NULL,
        input_deadline_at = NULL,
        resumed_input = NULL,
        resumed_at = NULL
    WHERE e.id = ANY(%(ids)s::text[]) AND e.status = 'PENDING' AND e.run_at <= now()
    RETURNING e.id, e.attempts, e.user_id, e.function_id, e.function_version, e.input,
              e.trigger_type, e.trigger_id, e.batch_id, e.chat_id, e.depth, e.kind,
              EXTRACT(EPOCH FROM now() - e.run_at)::float8 AS lag_seconds
)
SELECT c.id, c.attempts, c.user_id, u.email, c.function_id, c.function_version,
       fv.timeout_seconds, c.input, c.trigger_type, c.trigger_id, c.batch_id, c.chat_id,
       c.depth, c.kind, c.lag_seconds
FROM claimed AS c
JOIN users AS u ON u.id = c.user_id
-- Agent runs have no function version.
LEFT JOIN function_versions AS fv
  ON fv.function_id = c.function_id AND fv.version = c.function_version
"""

_COMPLETE_TEMPLATE = f"""
WITH o AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(attempts)s::int[], %(statuses)s::text[],
        %(outputs)s::text[], %(errors)s::text[], %(tracebacks)s::text[],
        %(timed_out)s::boolean[], %(completed)s::timestamptz[],
        %(prompt_tokens)s::bigint[], %(completion_tokens)s::bigint[]
    ) AS o(id, attempt, status, output, error, traceback, timed_out, completed_at,
           prompt_tokens, completion_tokens)
),
done AS (
    UPDATE executions AS e
    SET status = o.status,
        output = CAST(o.output AS json),
        error = o.error,
        traceback = o.traceback,
        timed_out = o.timed_out,
        completed_at = GREATEST(COALESCE(o.completed_at, now()), e.started_at),
        duration_ms = (EXTRACT(EPOCH FROM GREATEST(COALESCE(o.completed_at, now()), e.started_at)
                       - e.started_at) * 1000)::bigint,
        heartbeat_at = NULL,
        prompt_tokens = o.prompt_tokens,
        completion_tokens = o.completion_tokens
    FROM o
    -- The id list again, so that any plan looks the rows up by key. Only the worker holding
    -- the attempt may end it.
    WHERE e.id = ANY(%(ids)s::text[]) AND e.id = o.id AND e.status = 'RUNNING'
      AND e.attempts = o.attempt AND e.worker_id = %(worker_id)s{{scope}}
    RETURNING e.id, e.callback_status, e.batch_id, e.chat_id
)
SELECT d.id, d.batch_id, d.chat_id FROM done AS d
CROSS JOIN LATERAL (SELECT pg_notify(%(channel)s, d.id)) AS notified
CROSS JOIN LATERAL (SELECT {_NOTIFY_EVENT.format(row="d")}) AS evented
"""
_COMPLETE = _COMPLETE_TEMPLATE.replace("{scope}", "")
# Rows in no batch and no chat: nothing else changes with them, so their update is one
# autocommitted statement (one round trip; a transaction costs three, a pipelined one more
# client CPU still).
_COMPLETE_ALONE = _COMPLETE_TEMPLATE.replace(
    "{scope}", " AND e.batch_id IS NULL AND e.chat_id IS NULL"
)


# An attempt whose worker stopped heartbeating for a whole lease is over. With attempts left,
# the row goes back to PENDING and is dispatched again (a new message: the old one may be
# gone with its NATS node); after the last one it fails "worker lost".
_REAP = f"""
WITH stale AS (
    SELECT id FROM executions
    WHERE status IN ('RUNNING', 'AWAITING_INPUT')
      AND heartbeat_at < now() - make_interval(secs => %(lease_seconds)s)
    ORDER BY heartbeat_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
retried AS (
    UPDATE executions AS e
    SET status = 'PENDING',
        worker_id = NULL,
        heartbeat_at = NULL,
        dispatched_at = NULL,
        input_prompt = NULL,
        input_deadline_at = NULL
    FROM stale
    WHERE e.id = stale.id AND e.attempts < %(max_attempts)s
    RETURNING e.id
),
lost AS (
    UPDATE executions AS e
    SET status = 'FAILED',
        error = %(lost_prefix)s || e.attempts::text || %(lost_suffix)s,
        completed_at = now(),
        duration_ms = (EXTRACT(EPOCH FROM now() - COALESCE(e.started_at, now())) * 1000)::bigint,
        heartbeat_at = NULL,
        input_prompt = NULL
    FROM stale
    WHERE e.id = stale.id AND e.attempts >= %(max_attempts)s
    RETURNING e.id, e.callback_status, e.batch_id
)
SELECT l.id, l.batch_id, true AS lost FROM lost AS l
CROSS JOIN LATERAL (SELECT pg_notify(%(channel)s, l.id)) AS notified
CROSS JOIN LATERAL (SELECT {_NOTIFY_EVENT.format(row="l")}) AS evented
UNION ALL
SELECT r.id, NULL, false FROM retried AS r
CROSS JOIN LATERAL (SELECT pg_notify(%(dispatch_channel)s, '')) AS woken
"""

# A stopping worker's unfinished attempts go back to PENDING; their messages, nak'ed right
# after, bring them to another worker. Still dispatched: no second message is needed.
_RELEASE = sa.text(
    """
UPDATE executions AS e
SET status = 'PENDING', worker_id = NULL, heartbeat_at = NULL,
    input_prompt = NULL, input_deadline_at = NULL
FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[])) AS r(id, attempt)
WHERE e.id = ANY(CAST(:ids AS text[])) AND e.id = r.id AND e.attempts = r.attempt
  AND e.worker_id = :worker_id
  AND e.status IN ('RUNNING', 'AWAITING_INPUT')
RETURNING e.id
"""
)

# Picks and marks due rows, and reads when the next one not yet due comes due, in one
# statement; the caller publishes before it commits, so a failed publish rolls the marks back.
# A due row not taken here is another replica's (locked) or beyond the limit (the sweep goes
# on while rounds come back full), so the next due time only looks past now().
_DISPATCH_ROUND = """
WITH due AS (
    SELECT id FROM executions
    WHERE dispatched_at IS NULL AND status = 'PENDING' AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
taken AS (
    UPDATE executions AS e SET dispatched_at = now()
    FROM due
    WHERE e.id = due.id
    RETURNING e.id, e.kind, e.attempts, e.run_at
)
SELECT t.id, t.kind, t.attempts, t.run_at, NULL::float8 AS next_due_seconds FROM taken AS t
UNION ALL
SELECT NULL, NULL, NULL, NULL, EXTRACT(EPOCH FROM (min(run_at) - clock_timestamp()))::float8
FROM executions WHERE dispatched_at IS NULL AND status = 'PENDING' AND run_at > now()
"""

_COUNT_DUE = sa.text(
    "SELECT count(*) FROM executions"
    " WHERE status = 'PENDING' AND dispatched_at IS NULL AND run_at <= now()"
)


_EXECUTION_BY_ID = "SELECT * FROM executions WHERE id = %(id)s"

_INSERT_INTO = """
INSERT INTO executions (
    id, user_id, kind, namespace, name, function_id, function_version, trigger_type,
    trigger_id, status, input, depth, created_at, run_at, parent_execution_id,
    callback_url, callback_status
)"""

# In psycopg's parameter style: run straight on the hot pool, or through the engine's
# driver inside an idempotent submit's transaction.
_INSERT = f"""
WITH inserted AS ({_INSERT_INTO}
    VALUES (
        %(id)s, %(user_id)s, %(kind)s, %(namespace)s, %(name)s, %(function_id)s,
        %(function_version)s, %(trigger_type)s, %(trigger_id)s, 'PENDING', %(input)s::json,
        %(depth)s, now(), now() + make_interval(secs => %(delay_seconds)s),
        %(parent_execution_id)s, %(callback_url)s, %(callback_status)s
    )
    RETURNING id
)
"""

# The same row, stored only while the version it was checked against is the live one.
_INSERT_IF_CURRENT = f"""
WITH inserted AS ({_INSERT_INTO}
    SELECT
        %(id)s, %(user_id)s, %(kind)s, %(namespace)s, %(name)s, f.id, f.version,
        %(trigger_type)s, %(trigger_id)s, 'PENDING', %(input)s::json, %(depth)s, now(),
        now() + make_interval(secs => %(delay_seconds)s), %(parent_execution_id)s::text,
        %(callback_url)s::text, %(callback_status)s::text
    FROM functions AS f
    WHERE f.id = %(function_id)s AND f.version = %(function_version)s AND f.deleted_at IS NULL
    RETURNING id
)
"""

# Either insert, finished: the row's id, and with `_WAKE` the dispatch loops' wake-up; without
# it the caller publishes the row itself once it committed (see `prompt_dispatch`).
_WAKE = f"SELECT id, pg_notify('{DISPATCH_CHANNEL}', '') FROM inserted"
_NO_WAKE = "SELECT id FROM inserted"
# By `wake`: each statement whole, built once.
_INSERTS = {True: _INSERT + _WAKE, False: _INSERT + _NO_WAKE}
_INSERTS_IF_CURRENT = {True: _INSERT_IF_CURRENT + _WAKE, False: _INSERT_IF_CURRENT + _NO_WAKE}

_MARK_DISPATCHED = """
UPDATE executions AS e SET dispatched_at = %(published_at)s
WHERE e.id = ANY(%(ids)s) AND e.dispatched_at IS NULL
"""


def _insert_params(new: NewExecution) -> dict[str, Any]:
    return {
        "id": new.id,
        "user_id": new.user_id,
        "kind": new.kind,
        "namespace": new.namespace,
        "name": new.name,
        "function_id": new.function_id,
        "function_version": new.function_version,
        "trigger_type": new.trigger_type,
        "trigger_id": new.trigger_id,
        "input": json_param(new.input),
        "depth": new.depth,
        "delay_seconds": new.delay_seconds,
        "parent_execution_id": new.parent_execution_id,
        "callback_url": new.callback_url,
        "callback_status": None if new.callback_url is None else CallbackStatus.PENDING.value,
    }


class PostgresExecutionStore:
    def __init__(self, engine: AsyncEngine, hot: HotPool) -> None:
        self._engine = engine
        # Reads of one execution and claims run per request: straight psycopg (see `pg`).
        self._hot = hot

    async def insert_execution(
        self,
        new: NewExecution,
        *,
        idempotency: IdempotencyReservation | None = None,
        wake: bool = True,
    ) -> StoredResponse | None:
        """Stores the PENDING row (and wakes the dispatchers), in one transaction that first
        reserves the idempotency key; when the key is held, stores nothing and returns what
        the request holding it stored."""
        params = _insert_params(new)
        statement = _INSERTS[wake]
        if idempotency is None:
            # One autocommitted statement: the row (and its wake-up), one round trip.
            async with self._hot.connection() as conn:
                await conn.execute(statement, params)
            return None
        async with self._engine.begin() as conn:
            held = await reserve_idempotency_key(conn, idempotency)
            if held is not None:
                return held
            await conn.exec_driver_sql(statement, params)
        return None

    async def insert_if_current(self, new: NewExecution, *, wake: bool = True) -> bool:
        # One autocommitted statement: the version check, the row (and its wake-up).
        statement = _INSERTS_IF_CURRENT[wake]
        async with self._hot.connection() as conn:
            cursor = await conn.execute(statement, _insert_params(new))
            return await cursor.fetchone() is not None

    async def insert_executions(self, news: Sequence[NewExecution], *, wake: bool = True) -> None:
        if not news:
            return
        statement = _INSERTS[wake]
        # Pipelined: one round trip for all; their wake-ups fold into one at commit.
        async with self._hot.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(statement, [_insert_params(new) for new in news])

    async def mark_dispatched(self, execution_ids: Sequence[str], published_at: datetime) -> None:
        async with self._hot.connection() as conn:
            await conn.execute(
                _MARK_DISPATCHED, {"ids": list(execution_ids), "published_at": published_at}
            )

    async def get_execution(self, execution_id: str) -> Execution | None:
        async with self._hot.connection() as conn:
            row = await (await conn.execute(_EXECUTION_BY_ID, {"id": execution_id})).fetchone()
        return None if row is None else execution_from_row(row)

    async def list_executions(self, query: ExecutionQuery) -> list[Execution]:
        select = sa.select(executions)
        if query.user_id is not None:
            select = select.where(executions.c.user_id == query.user_id)
        if query.function_name:
            select = select.where(executions.c.name == query.function_name)
        if query.status is not None:
            select = select.where(executions.c.status == query.status.value)
        if query.trigger_id:
            select = select.where(executions.c.trigger_id == query.trigger_id)
        if query.batch_id:
            select = select.where(executions.c.batch_id == query.batch_id)
        select = (
            select.order_by(executions.c.created_at.desc(), executions.c.id.desc())
            .limit(query.limit)
            .offset(query.offset)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select)).mappings().all()
        return [execution_from_row(row) for row in rows]

    async def claim(self, *, worker_id: str, items: Sequence[ClaimItem]) -> ClaimOutcome:
        if not items:
            return ClaimOutcome(claimed=(), skipped=())
        params = {"ids": [item.execution_id for item in items], "worker_id": worker_id}
        async with self._hot.connection() as conn:
            rows = await (await conn.execute(_CLAIM, params)).fetchall()
        claimed = [
            ClaimedRow(
                execution_id=row["id"],
                attempt=row["attempts"],
                user_id=row["user_id"],
                user_email=row["email"],
                function_id=row["function_id"],
                function_version=row["function_version"],
                timeout_seconds=row["timeout_seconds"],
                input=row["input"],
                trigger_type=row["trigger_type"],
                trigger_id=row["trigger_id"],
                batch_id=row["batch_id"],
                chat_id=row["chat_id"],
                depth=row["depth"],
                kind=row["kind"],
                dispatch_lag_seconds=row["lag_seconds"],
            )
            for row in rows
        ]
        claimed_ids = {row.execution_id for row in claimed}
        skipped = tuple(
            dict.fromkeys(i.execution_id for i in items if i.execution_id not in claimed_ids)
        )
        return ClaimOutcome(claimed=tuple(claimed), skipped=skipped)

    async def release(self, *, worker_id: str, attempts: Sequence[ReleasedAttempt]) -> list[str]:
        if not attempts:
            return []
        params = {
            "ids": [a.execution_id for a in attempts],
            "attempts": [a.attempt for a in attempts],
            "worker_id": worker_id,
        }
        async with self._engine.begin() as conn:
            released = (await conn.execute(_RELEASE, params)).scalars().all()
        return [str(execution_id) for execution_id in released]

    async def complete(self, *, worker_id: str, outcomes: Sequence[Outcome]) -> list[str]:
        if not outcomes:
            return []
        async with self._hot.connection() as conn:
            alone = await (
                await conn.execute(_COMPLETE_ALONE, _complete_params(worker_id, outcomes))
            ).fetchall()
            applied = [str(row["id"]) for row in alone]
            done = set(applied)
            rest = [o for o in outcomes if o.execution_id not in done]
            if rest:
                applied += await _complete_with_batches_and_chats(conn, worker_id, rest)
        return applied

    async def reap_stale(
        self, *, lease_seconds: float, max_attempts: int, limit: int
    ) -> ReapOutcome:
        params = {
            "lease_seconds": lease_seconds,
            "max_attempts": max_attempts,
            "limit": limit,
            "lost_prefix": WORKER_LOST_PREFIX,
            "lost_suffix": WORKER_LOST_SUFFIX,
            "channel": COMPLETION_CHANNEL,
            "dispatch_channel": DISPATCH_CHANNEL,
        }
        async with self._hot.connection() as conn, conn.transaction():
            rows = await (await conn.execute(_REAP, params)).fetchall()
            await finish_batches_if_done(conn, [row["batch_id"] for row in rows if row["lost"]])
        return ReapOutcome(
            lost=tuple(str(row["id"]) for row in rows if row["lost"]),
            retried=tuple(str(row["id"]) for row in rows if not row["lost"]),
        )

    async def dispatch_due(self, *, limit: int, publish: Publish) -> DispatchRound:
        """Publishes due rows and marks them dispatched; a failed publish rolls back the mark."""
        async with self._hot.connection() as conn, conn.transaction():
            rows = await (await conn.execute(_DISPATCH_ROUND, {"limit": limit})).fetchall()
            read_at = time.monotonic()
            taken = [row for row in rows if row["id"] is not None]
            if taken:
                # Published in due order, so the earliest due runs first.
                taken.sort(key=lambda row: (row["run_at"], row["id"]))
                await publish(
                    [
                        DueExecution(id=row["id"], kind=row["kind"], attempts=row["attempts"])
                        for row in taken
                    ]
                )
        upcoming = [row["next_due_seconds"] for row in rows if row["id"] is None]
        seconds = upcoming[0] if upcoming else None
        if seconds is not None:
            # Counted from now, not from the read: publishing took some of that time.
            seconds = float(seconds) - (time.monotonic() - read_at)
        return DispatchRound(published=len(taken), next_due_seconds=seconds)

    async def count_due(self) -> int:
        """PENDING executions already due but not yet published: the dispatch backlog."""
        async with self._engine.connect() as conn:
            return int((await conn.execute(_COUNT_DUE)).scalar_one())


def _complete_params(worker_id: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "ids": [o.execution_id for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
        "statuses": [o.status.value for o in outcomes],
        "outputs": [None if o.output is None else dump_json(o.output).decode() for o in outcomes],
        "errors": [o.error for o in outcomes],
        "tracebacks": [o.traceback for o in outcomes],
        "timed_out": [o.timed_out for o in outcomes],
        "completed": [o.completed_at for o in outcomes],
        "prompt_tokens": [o.prompt_tokens for o in outcomes],
        "completion_tokens": [o.completion_tokens for o in outcomes],
        "channel": COMPLETION_CHANNEL,
    }


async def _complete_with_batches_and_chats(
    conn: AsyncConnection[DictRow], worker_id: str, outcomes: Sequence[Outcome]
) -> list[str]:
    """Ends rows whose batch may end with them, or whose chat gets their messages, in one
    transaction with those changes. Pipelined: BEGIN travels with the update, COMMIT with
    whatever follows it."""
    async with conn.pipeline(), conn.transaction():
        applied = await (
            await conn.execute(_COMPLETE, _complete_params(worker_id, outcomes))
        ).fetchall()
        # An applied agent run's new messages go after its chat's, in the same transaction.
        by_id = {o.execution_id: o for o in outcomes}
        await append_messages(
            conn,
            [
                (row["chat_id"], by_id[row["id"]].new_messages)
                for row in applied
                if row["chat_id"] and by_id[row["id"]].new_messages
            ],
        )
        await finish_batches_if_done(conn, [row["batch_id"] for row in applied])
    return [str(row["id"]) for row in applied]


def execution_from_row(row: Any) -> Execution:
    return Execution(
        id=row["id"],
        user_id=row["user_id"],
        kind=row["kind"],
        namespace=row["namespace"],
        name=row["name"],
        function_id=row["function_id"],
        function_version=row["function_version"],
        status=ExecutionStatus(row["status"]),
        input=row["input"],
        output=row["output"],
        error=row["error"],
        traceback=row["traceback"],
        timed_out=row["timed_out"],
        depth=row["depth"],
        trigger_type=row["trigger_type"],
        trigger_id=row["trigger_id"],
        batch_id=row["batch_id"],
        chat_id=row["chat_id"],
        parent_execution_id=row["parent_execution_id"],
        created_at=row["created_at"],
        run_at=row["run_at"],
        dispatched_at=row["dispatched_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        duration_ms=row["duration_ms"],
        attempts=row["attempts"],
        callback_url=row["callback_url"],
        callback_status=row["callback_status"],
        callback_response_code=row["callback_response_code"],
        callback_error=row["callback_error"],
        callback_attempted_at=row["callback_attempted_at"],
        batch_index=row["batch_index"],
        input_prompt=row["input_prompt"],
        input_deadline_at=row["input_deadline_at"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
    )

"""Retention in PostgreSQL: what a sweep deletes and keeps, chunking, skipping locked rows
without waiting, and the scheduler's own loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_scheduler.postgres_retention import PostgresRetentionStore
from sinas_scheduler.retention import Retention, RetentionCounts, RetentionPolicy
from sinas_scheduler.testing import RunningScheduler

DAY = 86400
POLICY = RetentionPolicy(retention_seconds=30 * DAY, idempotency_ttl_seconds=DAY, chunk_size=500)
DEADLINE_SECONDS = 60.0


async def execute(db: AsyncEngine, sql: str, **params: object) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.text(sql), params)


async def ids(db: AsyncEngine, table: str) -> set[str]:
    async with db.connect() as conn:
        return {str(row[0]) for row in await conn.execute(sa.text(f"SELECT id FROM {table}"))}


async def finish(db: AsyncEngine, execution_id: str, *, days_ago: float, status: str) -> None:
    await execute(
        db,
        "UPDATE executions SET status = :status, created_at = now() - make_interval(days => 40),"
        " completed_at = now() - make_interval(secs => :age) WHERE id = :id",
        status=status,
        age=days_ago * DAY,
        id=execution_id,
    )


async def add_batch(
    db: AsyncEngine, batch_id: str, children: list[str], *, finished_days_ago: float | None
) -> None:
    await execute(
        db,
        "INSERT INTO batches (id, user_id, kind, namespace, name, total, created_at, finished_at,"
        " status) SELECT :id, user_id, 'function', 'tests', 'echo', :total,"
        " now() - make_interval(days => 40),"
        " CASE WHEN CAST(:age AS float8) IS NULL THEN NULL"
        " ELSE now() - make_interval(secs => CAST(:age AS float8)) END,"
        " CASE WHEN CAST(:age AS float8) IS NULL THEN NULL ELSE 'completed' END"
        " FROM executions WHERE id = :first",
        id=batch_id,
        total=len(children),
        age=None if finished_days_ago is None else finished_days_ago * DAY,
        first=children[0],
    )
    for index, child in enumerate(children):
        await execute(
            db,
            "UPDATE executions SET batch_id = :batch, batch_index = :index WHERE id = :id",
            batch=batch_id,
            index=index,
            id=child,
        )


async def submit_many(scheduler: RunningScheduler, count: int) -> list[str]:
    return [await scheduler.submit(scheduler.admin, {"i": i}) for i in range(count)]


async def test_a_sweep_deletes_only_what_is_due(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    (
        old_done,
        old_failed,
        old_cancelled,
        recent,
        old_pending,
        old_running,
        owed_event,
        done_child,
        done_child_2,
        open_child,
        open_old_child,
    ) = await submit_many(scheduler, 11)
    for execution_id, status in [
        (old_done, "COMPLETED"),
        (old_failed, "FAILED"),
        (old_cancelled, "CANCELLED"),
        (owed_event, "COMPLETED"),
        (done_child, "COMPLETED"),
        (done_child_2, "FAILED"),
        (open_old_child, "COMPLETED"),
    ]:
        await finish(db, execution_id, days_ago=31, status=status)
    await finish(db, recent, days_ago=29, status="COMPLETED")
    await execute(
        db,
        "UPDATE executions SET created_at = now() - make_interval(days => 40),"
        " status = CASE WHEN id = :running THEN 'RUNNING' ELSE status END"
        " WHERE id IN (:pending, :running)",
        pending=old_pending,
        running=old_running,
    )
    # Its callback event is still owed to the notifier: it stays until published.
    await execute(
        db,
        "UPDATE executions SET callback_url = 'https://hooks.example/h',"
        " callback_status = 'pending', event_published_at = NULL WHERE id = :id",
        id=owed_event,
    )
    await add_batch(db, "batch-done", [done_child, done_child_2], finished_days_ago=31)
    # An unfinished batch keeps its finished children: its counts come from them.
    await add_batch(db, "batch-open", [open_old_child, open_child], finished_days_ago=None)
    await execute(
        db,
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, response, created_at)"
        " SELECT user_id, k.key, 'f', '{}', now() - make_interval(secs => k.age)"
        " FROM executions, (VALUES ('expired', 86401.0), ('live', 3600.0)) AS k(key, age)"
        " WHERE executions.id = :id",
        id=recent,
    )

    counts = await Retention(PostgresRetentionStore(db), POLICY).sweep()

    assert counts == RetentionCounts(executions=5, batches=1, idempotency_keys=1)
    assert await ids(db, "executions") == {
        recent,
        old_pending,
        old_running,
        owed_event,
        open_child,
        open_old_child,
    }
    assert await ids(db, "batches") == {"batch-open"}
    async with db.connect() as conn:
        keys = (await conn.execute(sa.text("SELECT key FROM idempotency_keys"))).scalars().all()
    assert keys == ["live"]


async def test_a_batch_stays_while_any_child_stays(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    old_child, young_child = await submit_many(scheduler, 2)
    await finish(db, old_child, days_ago=31, status="COMPLETED")
    await finish(db, young_child, days_ago=1, status="COMPLETED")
    await add_batch(db, "batch-1", [old_child, young_child], finished_days_ago=31)
    counts = await Retention(PostgresRetentionStore(db), POLICY).sweep()
    assert (counts.executions, counts.batches) == (1, 0)
    assert await ids(db, "batches") == {"batch-1"}
    await finish(db, young_child, days_ago=31, status="COMPLETED")
    counts = await Retention(PostgresRetentionStore(db), POLICY).sweep()
    assert (counts.executions, counts.batches) == (1, 1)
    assert await ids(db, "batches") == set()


async def test_small_chunks_delete_everything_due(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    for execution_id in await submit_many(scheduler, 7):
        await finish(db, execution_id, days_ago=31, status="COMPLETED")
    policy = RetentionPolicy(retention_seconds=30 * DAY, idempotency_ttl_seconds=DAY, chunk_size=2)
    counts = await Retention(PostgresRetentionStore(db), policy).sweep()
    assert counts.executions == 7
    assert await ids(db, "executions") == set()


async def test_a_locked_row_is_skipped_and_submits_go_on(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    await scheduler.create_function()
    held, free = await submit_many(scheduler, 2)
    for execution_id in (held, free):
        await finish(db, execution_id, days_ago=31, status="COMPLETED")
    async with db.connect() as other:
        transaction = await other.begin()
        await other.execute(
            sa.text("SELECT 1 FROM executions WHERE id = :id FOR UPDATE"), {"id": held}
        )
        # Neither the sweep nor a submit waits on the held row.
        counts, submitted = await asyncio.wait_for(
            asyncio.gather(
                Retention(PostgresRetentionStore(db), POLICY).sweep(),
                scheduler.submit(scheduler.admin, {"new": True}),
            ),
            timeout=DEADLINE_SECONDS,
        )
        await transaction.rollback()
    assert counts.executions == 1
    assert await ids(db, "executions") == {held, submitted}


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.1)


async def test_the_scheduler_runs_the_sweep_on_its_own(
    start_scheduler: Callable[..., Awaitable[RunningScheduler]], db: AsyncEngine
) -> None:
    scheduler = await start_scheduler(RETENTION_DAYS=2, RETENTION_INTERVAL_SECONDS=0.2)
    await scheduler.create_function()
    gone, kept = await submit_many(scheduler, 2)
    await finish(db, gone, days_ago=3, status="COMPLETED")
    await finish(db, kept, days_ago=1, status="COMPLETED")

    async def swept() -> bool:
        return await ids(db, "executions") == {kept}

    await eventually(swept)

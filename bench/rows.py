"""What the benchmark reads from and bulk-writes into the executions table: the system's own
timestamps are the source of every rate and lateness figure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL the services take, as the plain libpq URL psycopg and peers take."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


class Rows:
    """One autocommit connection to a system's database, for polling and bulk inserts."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, database_url: str) -> Rows:
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def _one(self, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        row = await (await self._conn.execute(query, params)).fetchone()
        assert row is not None
        return row

    async def wait_terminal(self, name: str, count: int, *, timeout: float = 900.0) -> None:
        """Polls until `count` executions of function `name` have ended."""
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            (done,) = await self._one(
                "SELECT count(*) FROM executions WHERE name = %s AND status = ANY(%s)",
                (name, list(TERMINAL)),
            )
            if int(done) >= count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{done} of {count} '{name}' executions ended within {timeout} s")

    async def wait_ended(self, execution_id: str, *, timeout: float = 30.0) -> None:
        """Polls one execution's row every millisecond (as the peers' clients poll their result
        stores) until it has ended; a GET of the execution then answers its result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (ended,) = await self._one(
                "SELECT status = ANY(%s) FROM executions WHERE id = %s",
                (list(TERMINAL), execution_id),
            )
            if ended:
                return
            await asyncio.sleep(0.001)
        raise TimeoutError(f"execution {execution_id} did not end within {timeout} s")

    async def failed(self, name: str) -> int:
        (count,) = await self._one(
            "SELECT count(*) FROM executions WHERE name = %s AND status <> 'COMPLETED'", (name,)
        )
        return int(count)

    async def drain_rate(self, name: str) -> float:
        """Completed executions / (last completed_at - first started_at)."""
        count, seconds = await self._one(
            "SELECT count(*), extract(epoch FROM max(completed_at) - min(started_at))"
            " FROM executions WHERE name = %s AND status = 'COMPLETED'",
            (name,),
        )
        return int(count) / float(seconds)

    async def lateness_ms(self, name: str) -> list[float]:
        """started_at - run_at per execution of `name`, in milliseconds."""
        cursor = await self._conn.execute(
            "SELECT 1000 * extract(epoch FROM started_at - run_at) FROM executions"
            " WHERE name = %s AND started_at IS NOT NULL",
            (name,),
        )
        return [float(value) for (value,) in await cursor.fetchall()]

    async def wait_events_published(self, name: str, count: int, *, timeout: float = 300.0) -> None:
        """Polls until the scheduler's outbox has published the callback event of `count`
        executions of `name`, so a notifier started next finds them all waiting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (done,) = await self._one(
                "SELECT count(*) FROM executions"
                " WHERE name = %s AND event_published_at IS NOT NULL",
                (name,),
            )
            if int(done) >= count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"callback events of '{name}' not published within {timeout} s")

    async def wait_callbacks_settled(
        self, name: str, count: int, *, timeout: float = 300.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            (done,) = await self._one(
                "SELECT count(*) FROM executions WHERE name = %s"
                " AND callback_status IN ('sent', 'failed')",
                (name,),
            )
            if int(done) >= count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"callbacks of '{name}' not settled within {timeout} s")

    async def callback_rate(self, name: str) -> tuple[int, float]:
        """(sent, sent / (last callback_attempted_at - first callback_claimed_at))."""
        count, seconds = await self._one(
            "SELECT count(*), extract(epoch FROM max(callback_attempted_at)"
            " - min(callback_claimed_at)) FROM executions"
            " WHERE name = %s AND callback_status = 'sent'",
            (name,),
        )
        sent = int(count)
        return sent, (sent / float(seconds) if sent else 0.0)

    async def count(self) -> int:
        (total,) = await self._one("SELECT count(*) FROM executions")
        return int(total)

    async def insert_copies(self, template_name: str, count: int, *, delayed: bool) -> None:
        """`count` copies of one execution of `template_name`, in one INSERT ... SELECT: PENDING
        and undispatched, due in one hour (`delayed`), or COMPLETED an hour ago (filler)."""
        if delayed:
            state = (
                "'PENDING', now(), now() + interval '1 hour', NULL::timestamptz,"
                " NULL::timestamptz, NULL::timestamptz"
            )
        else:
            state = (
                "'COMPLETED', now() - interval '1 hour', now() - interval '1 hour',"
                " now() - interval '1 hour', now() - interval '1 hour',"
                " now() - interval '1 hour'"
            )
        await self._conn.execute(
            "INSERT INTO executions (id, user_id, kind, namespace, name, function_id,"
            " function_version, trigger_type, trigger_id, input, output, status, created_at,"
            " run_at, dispatched_at, started_at, completed_at)"
            " SELECT gen_random_uuid()::text, t.user_id, t.kind, t.namespace,"
            " t.name || '_copy', t.function_id, t.function_version, t.trigger_type,"
            f" t.trigger_id, t.input, {'NULL' if delayed else 't.output'}, {state}"
            " FROM (SELECT * FROM executions WHERE name = %s LIMIT 1) AS t,"
            " generate_series(1, %s)",
            (template_name, count),
        )
        await self.settle()

    async def settle(self) -> None:
        """What autovacuum and the checkpointer do within a minute of a load or a burst of
        work, done now: plans then match production (cached while the table was nearly
        empty, a statement's plan otherwise scans it whole until autovacuum's first visit),
        and neither the vacuum nor the flush of the new rows runs during the measurement
        that follows."""
        await self._conn.execute("VACUUM (ANALYZE) executions")
        await self._conn.execute("CHECKPOINT")

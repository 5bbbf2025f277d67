"""Prompt dispatch: an execution due at once is published right after its row commits.

The outbox discipline stays whole: the accepting transaction commits the row with
`dispatched_at IS NULL`, and only then is the message published; the row is marked
dispatched once JetStream acknowledged it. What changes is who publishes in the common case:
the replica that accepted the row, at once, instead of a NOTIFY waking every replica's
dispatch loop to read the row back in a transaction of its own. Should the publish fail, or
the replica die before it, the row is still undispatched and the dispatch loop's next sweep
publishes it; should a sweep publish it first, the message id makes the second copy a no-op
inside JetStream's duplicate window, and a claim only ever takes a PENDING row.

Publishes and marks are made by one task, in batches of whatever accumulated meanwhile, so
that under load many submits share one round of acknowledgements and one UPDATE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sinas_scheduler.dispatch import Dispatcher
from sinas_scheduler.metrics import PROMPT_DISPATCH_MISSES
from sinas_scheduler.models import DueExecution

logger = logging.getLogger(__name__)

# Executions published per round at most; the rest wait for the next round.
MAX_PER_ROUND = 1000


class DispatchMarks(Protocol):
    async def mark_dispatched(self, execution_ids: Sequence[str], published_at: datetime) -> None:
        """Sets `dispatched_at` on the rows that have none yet."""
        ...


class PromptDispatch:
    """Publishes executions handed to `dispatch`, then marks their rows; until `attach`
    gives it a dispatcher (a replica without NATS never gets one) it is inactive, and rows
    are left to the dispatch loops that a NOTIFY wakes."""

    def __init__(self, *, marks: DispatchMarks, fallback: asyncio.Event) -> None:
        self._marks = marks
        # Set when a publish failed: the dispatch loop then sweeps what is still unpublished.
        self._fallback = fallback
        self._dispatcher: Dispatcher | None = None
        self._waiting: list[DueExecution] = []
        self._more = asyncio.Event()

    @property
    def active(self) -> bool:
        return self._dispatcher is not None

    def attach(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def dispatch(self, due: Sequence[DueExecution]) -> None:
        """Queues committed, due executions for the next publish round."""
        self._waiting.extend(due)
        self._more.set()

    async def run(self) -> None:
        while True:
            await self._more.wait()
            self._more.clear()
            while self._waiting:
                await self.publish_round()

    async def publish_round(self) -> None:
        """Publishes what is waiting (up to MAX_PER_ROUND) and marks it dispatched."""
        due = self._waiting[:MAX_PER_ROUND]
        del self._waiting[:MAX_PER_ROUND]
        if not due or self._dispatcher is None:
            return
        published_at = datetime.now(UTC)
        try:
            await self._dispatcher.publish(due)
        except Exception:
            _missed("publish", len(due), "prompt dispatch failed; the dispatch loop takes over")
            self._fallback.set()
            return
        try:
            await self._marks.mark_dispatched([execution.id for execution in due], published_at)
        except Exception:
            # Published but unmarked: a sweep publishes them again, and JetStream drops the
            # copies as duplicates.
            _missed("mark", len(due), "published executions not marked dispatched")


def _missed(step: str, count: int, message: str) -> None:
    """Counts and logs (with the exception being handled) executions left to the sweep."""
    PROMPT_DISPATCH_MISSES.labels(step=step).inc(count)
    logger.warning(message, extra={"action": "dispatch", "count": count}, exc_info=True)

"""Stopping background asyncio tasks reliably."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# How long to wait between cancellation rounds.
CANCEL_ROUND_SECONDS = 1.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancels the tasks and waits until every one has ended.

    Cancels again each round: on Python before 3.12, `asyncio.wait_for` can swallow a
    cancellation that arrives just as its inner awaitable completes, and a loop around it
    would then run on forever.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_ROUND_SECONDS)

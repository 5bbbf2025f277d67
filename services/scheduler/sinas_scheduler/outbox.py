"""The outbox discipline shared by job dispatch and event publishing.

Rows owed to JetStream are committed with the state change that owes them; a loop publishes
them in batches, waits for every acknowledgement, marks them, and sleeps until woken by a
NOTIFY (or a time limit, since a NOTIFY can be lost while reconnecting). A crash between
commit and publish only delays a message to the next sweep; the message id makes a
re-publish inside the duplicate window a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.js import JetStreamContext

logger = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
PUBLISH_ACK_TIMEOUT_SECONDS = 30.0
# Even with nothing due, sweep this often.
MAX_IDLE_SECONDS = 5.0
# Sleeping a hair past run_at makes sure the row is due when the sweep reads now(); every
# delayed execution starts at least this late. Waking early costs only one empty sweep.
DUE_MARGIN_SECONDS = 0.001
ERROR_BACKOFF_SECONDS = 1.0


async def publish_acknowledged(
    js: JetStreamContext, messages: Sequence[tuple[str, bytes, str]]
) -> None:
    """Publishes (subject, payload, message id) triples; returns once all are acknowledged."""
    acks: list[asyncio.Future[Any]] = [
        await js.publish_async(subject, payload, headers={MSG_ID_HEADER: message_id})
        for subject, payload, message_id in messages
    ]
    await asyncio.wait_for(asyncio.gather(*acks), timeout=PUBLISH_ACK_TIMEOUT_SECONDS)


async def sweep_in_batches(step: Callable[[int], Awaitable[int]], batch_size: int) -> int:
    """Runs `step(limit)` (one transaction each) while batches come back full."""
    total = 0
    while True:
        count = await step(batch_size)
        total += count
        if count < batch_size:
            return total


async def run_outbox(
    *,
    sweep: Callable[[], Awaitable[float | None]],
    wakeup: asyncio.Event,
    action: str,
) -> None:
    """Sweeps, then sleeps until woken or until the seconds `sweep` returned (None: capped)."""
    while True:
        # Cleared before the sweep: work owed during it sets the event again.
        wakeup.clear()
        try:
            next_due = await sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("outbox sweep failed", extra={"action": action})
            await asyncio.sleep(ERROR_BACKOFF_SECONDS)
            continue
        idle = MAX_IDLE_SECONDS if next_due is None else max(next_due, 0.0) + DUE_MARGIN_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=min(idle, MAX_IDLE_SECONDS))

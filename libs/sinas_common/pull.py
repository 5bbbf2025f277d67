"""JetStream pull-consumer building blocks shared by the executor and the notifier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

import nats.errors
from nats.aio.msg import Msg

logger = logging.getLogger(__name__)

# A fetch error (a reconnect in progress, say) is retried after this pause.
FETCH_ERROR_PAUSE_SECONDS = 0.5


class MessageSource(Protocol):
    """The part of a JetStream pull subscription the loops use."""

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Msg]: ...


async def fetch_available(
    sub: MessageSource,
    wanted: int,
    *,
    idle_timeout: float,
    top_up_timeout: float,
) -> list[Msg]:
    """Up to `wanted` messages: waits up to `idle_timeout` for the first, then takes only
    what the stream says is already waiting.

    nats-py's fetch(n > 1) lingers for its whole timeout on a quiet stream, so a lone job
    would wait for it; the first message's `num_pending` tells whether a top-up will find
    anything.
    """
    try:
        msgs: list[Msg] = await sub.fetch(1, timeout=idle_timeout)
    except (TimeoutError, nats.errors.TimeoutError):
        return []
    except nats.errors.Error:
        logger.warning("fetch failed", extra={"action": "fetch"}, exc_info=True)
        await asyncio.sleep(FETCH_ERROR_PAUSE_SECONDS)
        return []
    pending = msgs[-1].metadata.num_pending if msgs else 0
    if wanted > 1 and pending:
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            msgs += await sub.fetch(min(wanted - 1, pending), timeout=top_up_timeout)
    return msgs


async def settle(ack: Awaitable[Any]) -> None:
    """Awaits an ack/nak/in-progress; a lost one is recovered by JetStream's redelivery."""
    try:
        await ack
    except Exception:
        logger.warning("message acknowledgement failed", extra={"action": "ack"}, exc_info=True)


async def wait_for_either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Returns as soon as either event is set."""
    waiters = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

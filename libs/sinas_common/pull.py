"""JetStream pull-consumer building blocks shared by the executor and the notifier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError, ServiceUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


# How long a service keeps retrying JetStream set-up calls at start before giving up.
SETTLE_ATTEMPTS = 60
SETTLE_PAUSE_SECONDS = 1.0


# JetStream's error code for "stream not found".
STREAM_NOT_FOUND = 10059


def _not_settled(exc: Exception) -> bool:
    if isinstance(exc, NotFoundError):
        return exc.err_code == STREAM_NOT_FOUND
    return isinstance(
        exc, nats.errors.TimeoutError | nats.errors.NoRespondersError | ServiceUnavailableError
    )


async def while_jetstream_settles(call: Callable[[], Awaitable[T]]) -> T:
    """Retries a JetStream management call (stream or consumer set-up) while the cluster is
    still electing leaders or a node is coming back: such calls time out or find no
    responder for a few seconds, which must not crash a starting service. A consumer's
    stream not existing yet is the same: only the scheduler may create streams, and it may
    start after the executors and notifiers."""
    for attempt in range(1, SETTLE_ATTEMPTS + 1):
        try:
            return await call()
        except Exception as exc:
            if not _not_settled(exc) or attempt == SETTLE_ATTEMPTS:
                raise
            logger.warning(
                "jetstream not ready, retrying",
                extra={"action": "jetstream_setup", "attempt": attempt},
            )
            await asyncio.sleep(SETTLE_PAUSE_SECONDS)
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True, kw_only=True)
class PullPacing:
    """How a bounded pull loop fetches: at most `concurrency` in flight, `fetch_batch` a time."""

    concurrency: int
    fetch_batch: int
    idle_timeout: float
    top_up_timeout: float


async def pull_until_stopped(
    sub: MessageSource,
    *,
    pacing: PullPacing,
    in_flight: Callable[[], int],
    slot_freed: asyncio.Event,
    stopping: asyncio.Event,
    handle: Callable[[Sequence[Msg]], Awaitable[None]],
    prefetch: Callable[[], int] = lambda: 0,
) -> None:
    """Fetches while slots are free and hands each batch to `handle`, until `stopping` is
    set; a batch fetched as the stop arrives is handed back (nak) for another replica.

    `prefetch` says how many messages beyond `concurrency` may be held waiting for a slot
    right now: with short jobs, claiming the next ones while these run keeps every slot busy
    and lets one claim serve many jobs.
    """
    while not stopping.is_set():
        free = pacing.concurrency + prefetch() - in_flight()
        if free <= 0:
            slot_freed.clear()
            await wait_for_either(slot_freed, stopping)
            continue
        msgs = await fetch_available(
            sub,
            min(free, pacing.fetch_batch),
            idle_timeout=pacing.idle_timeout,
            top_up_timeout=pacing.top_up_timeout,
        )
        if not msgs:
            continue
        if stopping.is_set():
            for msg in msgs:
                await settle(msg.nak())
            return
        await handle(msgs)

"""Terminal events over NATS JetStream: the port, its JetStream adapter, and the outbox loop.

An execution with a callback that ends is committed with `event_published_at IS NULL` and a
NOTIFY in the same transaction; this loop publishes it and marks it, so a crash between the
two only delays the event to the next sweep, and a rolled-back end publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient

from sinas_common.eventstream import (
    BATCH_TERMINATED,
    EXECUTION_TERMINATED,
    BatchTerminated,
    EventStreamNames,
    ExecutionTerminated,
    ensure_event_stream,
)
from sinas_common.settings import NatsSettings
from sinas_scheduler.store import BatchCallbackStore, CallbackStore

logger = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
PUBLISH_ACK_TIMEOUT_SECONDS = 30.0
# Even with nothing woken, sweep this often (a NOTIFY may be lost while reconnecting).
MAX_IDLE_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 1.0


class EventPublisher(Protocol):
    async def publish_terminated(self, execution_ids: Sequence[str]) -> None:
        """Publishes one event per execution and returns once all are acknowledged."""
        ...

    async def publish_batches_terminated(self, batch_ids: Sequence[str]) -> None:
        """Publishes one event per batch and returns once all are acknowledged."""
        ...


class JetStreamEventPublisher:
    """Publishes ExecutionTerminated; its message id makes a re-publish a no-op."""

    def __init__(self, client: NatsClient, names: EventStreamNames) -> None:
        self._js = client.jetstream()
        self._subject = names.subject(EXECUTION_TERMINATED)
        self._batch_subject = names.subject(BATCH_TERMINATED)

    @classmethod
    async def create(cls, client: NatsClient, settings: NatsSettings) -> JetStreamEventPublisher:
        names = await ensure_event_stream(client.jetstream(), settings)
        return cls(client, names)

    async def publish_terminated(self, execution_ids: Sequence[str]) -> None:
        acks: list[asyncio.Future[Any]] = []
        for execution_id in execution_ids:
            event = ExecutionTerminated(execution_id=execution_id)
            acks.append(
                await self._js.publish_async(
                    self._subject, event.encode(), headers={MSG_ID_HEADER: event.message_id}
                )
            )
        await asyncio.wait_for(asyncio.gather(*acks), timeout=PUBLISH_ACK_TIMEOUT_SECONDS)

    async def publish_batches_terminated(self, batch_ids: Sequence[str]) -> None:
        acks: list[asyncio.Future[Any]] = []
        for batch_id in batch_ids:
            event = BatchTerminated(batch_id=batch_id)
            acks.append(
                await self._js.publish_async(
                    self._batch_subject, event.encode(), headers={MSG_ID_HEADER: event.message_id}
                )
            )
        await asyncio.wait_for(asyncio.gather(*acks), timeout=PUBLISH_ACK_TIMEOUT_SECONDS)


class EventOutboxLoop:
    """Sweeps owed events a batch per transaction, then sleeps until woken (capped)."""

    def __init__(
        self,
        *,
        store: CallbackStore,
        publisher: EventPublisher,
        wakeup: asyncio.Event,
        batch_size: int,
        batch_store: BatchCallbackStore | None = None,
    ) -> None:
        self._store = store
        self._batch_store = batch_store
        self._publisher = publisher
        self._wakeup = wakeup
        self._batch_size = batch_size

    async def sweep(self) -> int:
        total = 0
        while True:
            count = await self._store.publish_terminated(
                limit=self._batch_size, publish=self._publisher.publish_terminated
            )
            total += count
            if count < self._batch_size:
                break
        while self._batch_store is not None:
            count = await self._batch_store.publish_batches_terminated(
                limit=self._batch_size, publish=self._publisher.publish_batches_terminated
            )
            total += count
            if count < self._batch_size:
                break
        if total:
            logger.info("terminal events published", extra={"action": "publish", "count": total})
        return total

    async def run(self) -> None:
        while True:
            # Cleared before the sweep: an execution ending during it sets the event again.
            self._wakeup.clear()
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event sweep failed", extra={"action": "publish"})
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=MAX_IDLE_SECONDS)

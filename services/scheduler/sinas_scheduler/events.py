"""Terminal events over NATS JetStream: the port, its JetStream adapter, and the outbox loop.

An execution with a callback that ends is committed with `event_published_at IS NULL` and a
NOTIFY in the same transaction; this loop publishes it and marks it, so a crash between the
two only delays the event to the next sweep, and a rolled-back end publishes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from nats.aio.client import Client as NatsClient

from sinas_common.eventstream import (
    BATCH_TERMINATED,
    EXECUTION_TERMINATED,
    BatchTerminated,
    EventStreamNames,
    ExecutionTerminated,
    ensure_event_stream,
)
from sinas_common.pull import while_jetstream_settles
from sinas_common.settings import NatsSettings
from sinas_scheduler.outbox import publish_acknowledged, run_outbox, sweep_in_batches
from sinas_scheduler.store import BatchCallbackStore, CallbackStore

logger = logging.getLogger(__name__)


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
        names = await while_jetstream_settles(
            lambda: ensure_event_stream(client.jetstream(), settings)
        )
        return cls(client, names)

    async def publish_terminated(self, execution_ids: Sequence[str]) -> None:
        events = [ExecutionTerminated(execution_id=execution_id) for execution_id in execution_ids]
        await publish_acknowledged(
            self._js, [(self._subject, event.encode(), event.message_id) for event in events]
        )

    async def publish_batches_terminated(self, batch_ids: Sequence[str]) -> None:
        events = [BatchTerminated(batch_id=batch_id) for batch_id in batch_ids]
        await publish_acknowledged(
            self._js, [(self._batch_subject, event.encode(), event.message_id) for event in events]
        )


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
        total = await sweep_in_batches(
            lambda limit: self._store.publish_terminated(
                limit=limit, publish=self._publisher.publish_terminated
            ),
            self._batch_size,
        )
        batch_store = self._batch_store
        if batch_store is not None:
            total += await sweep_in_batches(
                lambda limit: batch_store.publish_batches_terminated(
                    limit=limit, publish=self._publisher.publish_batches_terminated
                ),
                self._batch_size,
            )
        if total:
            logger.info("terminal events published", extra={"action": "publish", "count": total})
        return total

    async def _sweep_without_schedule(self) -> None:
        await self.sweep()

    async def run(self) -> None:
        await run_outbox(sweep=self._sweep_without_schedule, wakeup=self._wakeup, action="publish")

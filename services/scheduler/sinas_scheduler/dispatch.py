"""Dispatch over NATS JetStream: the port, its JetStream adapter, and the outbox loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from nats.aio.client import Client as NatsClient

from sinas_common.jobstream import JobMessage, JobStreamNames, ensure_job_stream
from sinas_common.nats_connect import connect_nats
from sinas_common.pull import while_jetstream_settles
from sinas_common.settings import NatsSettings
from sinas_scheduler.models import DueExecution
from sinas_scheduler.outbox import publish_acknowledged, run_outbox
from sinas_scheduler.store import ExecutionStore

logger = logging.getLogger(__name__)


class Dispatcher(Protocol):
    async def publish(self, due: Sequence[DueExecution]) -> None:
        """Publishes every execution and returns once all are acknowledged (else raises)."""
        ...


class JetStreamDispatcher:
    """Publishes one JobMessage per execution attempt; its message id deduplicates re-publishes."""

    def __init__(self, client: NatsClient, names: JobStreamNames) -> None:
        self._client = client
        self._js = client.jetstream()
        self._names = names

    @classmethod
    async def connect(cls, settings: NatsSettings) -> JetStreamDispatcher:
        client = await connect_nats(settings, name="sinas-scheduler")
        names = await while_jetstream_settles(
            lambda: ensure_job_stream(client.jetstream(), settings)
        )
        return cls(client, names)

    async def publish(self, due: Sequence[DueExecution]) -> None:
        await publish_acknowledged(
            self._js,
            [
                (
                    self._names.subject(execution.kind),
                    JobMessage(execution_id=execution.id, kind=execution.kind).encode(),
                    execution.message_id,
                )
                for execution in due
            ],
        )

    async def close(self) -> None:
        await self._client.drain()


class DispatchLoop:
    """Sweeps the outbox, then sleeps until the earliest delayed row or new work."""

    def __init__(
        self,
        *,
        store: ExecutionStore,
        dispatcher: Dispatcher,
        wakeup: asyncio.Event,
        batch_size: int,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._wakeup = wakeup
        self._batch_size = batch_size

    async def sweep(self) -> float | None:
        """Publishes everything due, a batch per transaction, while batches come back full;
        returns the seconds until the earliest delayed execution comes due (None: none)."""
        total = 0
        while True:
            done = await self._store.dispatch_due(
                limit=self._batch_size, publish=self._dispatcher.publish
            )
            total += done.published
            if done.published < self._batch_size:
                break
        if total:
            logger.info("executions dispatched", extra={"action": "dispatch", "count": total})
        return done.next_due_seconds

    async def run(self) -> None:
        await run_outbox(sweep=self.sweep, wakeup=self._wakeup, action="dispatch")

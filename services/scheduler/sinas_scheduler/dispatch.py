"""Dispatch over NATS JetStream: the port, its JetStream adapter, and the outbox loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import nats
from nats.aio.client import Client as NatsClient

from sinas_common.jobstream import JobMessage, JobStreamNames, ensure_job_stream
from sinas_common.settings import NatsSettings
from sinas_scheduler.models import DueExecution
from sinas_scheduler.store import ExecutionStore

logger = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
PUBLISH_ACK_TIMEOUT_SECONDS = 30.0
# Even with nothing due, sweep this often (a NOTIFY may be lost while reconnecting).
MAX_IDLE_SECONDS = 5.0
# Sleeping a hair past run_at makes sure the row is due when the sweep reads now().
DUE_MARGIN_SECONDS = 0.01
ERROR_BACKOFF_SECONDS = 1.0


class Dispatcher(Protocol):
    async def publish(self, due: Sequence[DueExecution]) -> None:
        """Publishes every execution and returns once all are acknowledged (else raises)."""
        ...


class JetStreamDispatcher:
    """Publishes one JobMessage per execution; the execution id deduplicates re-publishes."""

    def __init__(self, client: NatsClient, names: JobStreamNames) -> None:
        self._client = client
        self._js = client.jetstream()
        self._names = names

    @classmethod
    async def connect(cls, settings: NatsSettings) -> JetStreamDispatcher:
        client = await nats.connect(servers=settings.servers, name="sinas-scheduler")
        names = await ensure_job_stream(client.jetstream(), settings)
        return cls(client, names)

    async def publish(self, due: Sequence[DueExecution]) -> None:
        acks: list[asyncio.Future[Any]] = []
        for execution in due:
            acks.append(
                await self._js.publish_async(
                    self._names.subject(execution.kind),
                    JobMessage(execution_id=execution.id, kind=execution.kind).encode(),
                    headers={MSG_ID_HEADER: execution.id},
                )
            )
        await asyncio.wait_for(asyncio.gather(*acks), timeout=PUBLISH_ACK_TIMEOUT_SECONDS)

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

    async def sweep(self) -> int:
        """Publishes everything due, a batch per transaction, while batches come back full."""
        total = 0
        while True:
            count = await self._store.dispatch_due(
                limit=self._batch_size, publish=self._dispatcher.publish
            )
            total += count
            if count < self._batch_size:
                break
        if total:
            logger.info("executions dispatched", extra={"action": "dispatch", "count": total})
        return total

    async def run(self) -> None:
        while True:
            # Cleared before the sweep: work submitted during it sets the event again.
            self._wakeup.clear()
            try:
                await self.sweep()
                next_due = await self._store.seconds_until_next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("dispatch sweep failed", extra={"action": "dispatch"})
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            idle = MAX_IDLE_SECONDS if next_due is None else max(next_due, 0.0) + DUE_MARGIN_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=min(idle, MAX_IDLE_SECONDS))

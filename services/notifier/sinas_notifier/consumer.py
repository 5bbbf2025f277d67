"""The JetStream pull loop: fetch terminal events, claim callbacks in one call per batch,
deliver them concurrently, record outcomes in batches, then ack."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sinas_common.eventstream import (
    BATCH_TERMINATED,
    BatchTerminated,
    ExecutionTerminated,
    event_stream_names,
)
from sinas_common.grpc_client import call_with_retry
from sinas_common.pull import (
    MessageSource,
    PullPacing,
    pull_until_stopped,
    settle,
    while_jetstream_settles,
)
from sinas_common.settings import NatsSettings
from sinas_common.timeconv import utcnow
from sinas_notifier.metrics import CALLBACK_SECONDS, CALLBACKS
from sinas_notifier.models import CallbackClaim, DeliveryOutcome, callback_key
from sinas_notifier.scheduler_client import CallbackSchedulerPort

logger = logging.getLogger(__name__)

# An event whose claim or outcome could not be recorded comes back after this.
RETRY_NAK_DELAY_SECONDS = 1.0


def consumer_name(settings: NatsSettings) -> str:
    return f"{settings.stream_prefix}_notifier"


async def subscribe(
    js: JetStreamContext, settings: NatsSettings, *, ack_wait_seconds: float
) -> JetStreamContext.PullSubscription:
    """The durable pull consumer every notifier replica shares.

    The scheduler creates the stream (a notifier's NATS user may not); one started first
    waits for it.
    """
    names = event_stream_names(settings)
    # Both event kinds: execution.terminated and batch.terminated.
    subject = names.all_subjects
    config = ConsumerConfig(
        durable_name=consumer_name(settings),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_seconds,
        # A redelivered event is harmless: the claim skips what was already taken.
        max_deliver=-1,
        filter_subject=subject,
    )
    return await while_jetstream_settles(
        lambda: js.pull_subscribe(
            subject, durable=consumer_name(settings), stream=names.stream, config=config
        )
    )


class Deliverer(Protocol):
    async def deliver(self, claim: CallbackClaim) -> DeliveryOutcome: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerOptions:
    """How the pull loop paces itself."""

    notifier_id: str
    concurrency: int = 64
    fetch_batch: int = 100
    ack_wait_seconds: float = 60.0
    shutdown_grace_seconds: float = 30.0
    # One long-polled message, then a top-up only when more is waiting (a fetch(n>1) with a
    # long timeout on a quiet stream would wait for the whole batch).
    idle_fetch_seconds: float = 1.0
    top_up_fetch_seconds: float = 0.02
    flush_max_outcomes: int = 100
    flush_delay_seconds: float = 0.005


class CallbackConsumer:
    """Delivers callbacks for terminal events until `stop()`, then finishes what it holds."""

    def __init__(
        self,
        *,
        subscription: MessageSource,
        scheduler: CallbackSchedulerPort,
        deliverer: Deliverer,
        options: ConsumerOptions,
    ) -> None:
        self._sub = subscription
        self._scheduler = scheduler
        self._deliverer = deliverer
        self._options = options
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        # Every event this notifier holds, by execution id, until it is acked or nakked.
        self._held: dict[str, Msg] = {}
        self._delivering: dict[str, asyncio.Task[None]] = {}
        self._outcomes: asyncio.Queue[tuple[DeliveryOutcome, Msg]] = asyncio.Queue()

    def stop(self) -> None:
        """Stops fetching; `run` then finishes in-flight deliveries, records them and returns."""
        self._stopping.set()

    async def run(self) -> None:
        recorder = asyncio.create_task(self._record_loop(), name="notifier-recorder")
        ticker = asyncio.create_task(self._keepalive_loop(), name="notifier-keepalive")
        try:
            await self._fetch_loop()
        finally:
            await self._shutdown(recorder, ticker)

    # -- fetching and claiming ---------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        await pull_until_stopped(
            self._sub,
            pacing=PullPacing(
                concurrency=self._options.concurrency,
                fetch_batch=self._options.fetch_batch,
                idle_timeout=self._options.idle_fetch_seconds,
                top_up_timeout=self._options.top_up_fetch_seconds,
            ),
            in_flight=lambda: len(self._delivering),
            slot_freed=self._slot_freed,
            stopping=self._stopping,
            handle=self._claim_and_deliver,
        )

    async def _claim_and_deliver(self, msgs: Sequence[Msg]) -> None:
        batch: dict[str, Msg] = {}
        execution_ids: list[str] = []
        batch_ids: list[str] = []
        for msg in msgs:
            try:
                if msg.subject.endswith(f".{BATCH_TERMINATED}"):
                    batch_id = BatchTerminated.decode(msg.data).batch_id
                    execution_id = ""
                else:
                    batch_id = ""
                    execution_id = ExecutionTerminated.decode(msg.data).execution_id
            except (ValueError, KeyError, TypeError):
                logger.error("undecodable event dropped", extra={"action": "decode"})
                await settle(msg.term())
                continue
            key = callback_key(execution_id, batch_id)
            if key in batch or key in self._held:
                # Another delivery of an event already held: the held one settles it.
                await settle(msg.ack())
                continue
            batch[key] = msg
            (batch_ids if batch_id else execution_ids).append(batch_id or execution_id)
        if not batch:
            return
        try:
            result = await call_with_retry(
                lambda: self._scheduler.claim_callbacks(
                    self._options.notifier_id, execution_ids, batch_ids
                )
            )
        except Exception:
            logger.exception("claim failed", extra={"action": "claim", "count": len(batch)})
            for msg in batch.values():
                await settle(msg.nak(delay=RETRY_NAK_DELAY_SECONDS))
            return
        skipped = [
            *result.skipped_execution_ids,
            *(callback_key("", batch_id) for batch_id in result.skipped_batch_ids),
        ]
        for key in skipped:
            if key in batch:
                await settle(batch.pop(key).ack())
        for claim in result.claims:
            if claim.key in batch:
                self._start(claim, batch.pop(claim.key))
        for msg in batch.values():
            # Neither claimed nor skipped: let the scheduler see it again later.
            await settle(msg.nak(delay=RETRY_NAK_DELAY_SECONDS))

    def _start(self, claim: CallbackClaim, msg: Msg) -> None:
        self._held[claim.key] = msg
        self._delivering[claim.key] = asyncio.create_task(
            self._deliver_one(claim, msg), name=f"callback-{claim.key}"
        )

    async def _deliver_one(self, claim: CallbackClaim, msg: Msg) -> None:
        started = time.perf_counter()
        try:
            outcome = await self._deliverer.deliver(claim)
        except Exception as exc:
            # The claim is spent either way; record the failure rather than leave it in flight.
            logger.exception(
                "callback delivery crashed",
                extra={"action": "deliver", "callback": claim.key},
            )
            outcome = DeliveryOutcome(
                execution_id=claim.execution_id,
                batch_id=claim.batch_id,
                sent=False,
                response_code=None,
                error=f"notifier error: {type(exc).__name__}",
                attempted_at=utcnow(),
            )
        finally:
            self._delivering.pop(claim.key, None)
            self._slot_freed.set()
        kind = "batch" if claim.batch_id and not claim.execution_id else "execution"
        CALLBACKS.labels(kind=kind, outcome="sent" if outcome.sent else "failed").inc()
        CALLBACK_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
        logger.info(
            "callback attempted",
            extra={
                "action": "deliver",
                "callback": claim.key,
                "execution_id": claim.execution_id,
                "batch_id": claim.batch_id,
                "sent": outcome.sent,
                "response_code": outcome.response_code,
            },
        )
        await self._outcomes.put((outcome, msg))

    # -- recording outcomes --------------------------------------------------------------------

    async def _record_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._outcomes.get()]
            deadline = loop.time() + self._options.flush_delay_seconds
            while len(batch) < self._options.flush_max_outcomes:
                if not self._outcomes.empty():
                    batch.append(self._outcomes.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._outcomes.get(), remaining))
                except TimeoutError:
                    break
            try:
                await self._record(batch)
            finally:
                for _ in batch:
                    self._outcomes.task_done()

    async def _record(self, batch: list[tuple[DeliveryOutcome, Msg]]) -> None:
        outcomes = [outcome for outcome, _ in batch]
        try:
            await call_with_retry(lambda: self._scheduler.record_outcomes(outcomes), attempts=None)
        except Exception:
            # The claims stay in flight and the scheduler's reaper fails them; the events come
            # back and are skipped by the claim, so nothing is sent twice.
            logger.exception(
                "outcomes could not be recorded", extra={"action": "record", "count": len(batch)}
            )
            for outcome, msg in batch:
                self._held.pop(outcome.key, None)
                await settle(msg.nak(delay=RETRY_NAK_DELAY_SECONDS))
            return
        for outcome, msg in batch:
            self._held.pop(outcome.key, None)
            await settle(msg.ack())

    # -- keeping leases alive ------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._options.ack_wait_seconds / 3)
            for msg in list(self._held.values()):
                await settle(msg.in_progress())

    # -- shutting down ---------------------------------------------------------------------------

    async def _shutdown(self, recorder: asyncio.Task[None], ticker: asyncio.Task[None]) -> None:
        grace = self._options.shutdown_grace_seconds
        tasks = list(self._delivering.values())
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            await asyncio.wait_for(self._outcomes.join(), timeout=grace)
        except TimeoutError:
            logger.error("outcomes not recorded before stop", extra={"action": "shutdown"})
        for task in (recorder, ticker):
            task.cancel()
        await asyncio.gather(recorder, ticker, return_exceptions=True)
        # What is still held was not recorded: its claim is failed by the scheduler's reaper.
        for key, msg in list(self._held.items()):
            await settle(msg.nak())
            self._held.pop(key, None)

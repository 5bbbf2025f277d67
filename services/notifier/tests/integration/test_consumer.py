"""The pull loop over real JetStream: one claim per batch, one POST per claim, ack after record."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from nats.js import JetStreamContext

from sinas_common.callback_policy import CallbackPolicy, SystemResolver
from sinas_common.eventstream import (
    BATCH_TERMINATED,
    EXECUTION_TERMINATED,
    BatchTerminated,
    ExecutionTerminated,
    ensure_event_stream,
)
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import CallbackPolicySettings, NatsSettings
from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.pytest_plugin import NatsSettingsAs
from sinas_notifier.consumer import CallbackConsumer, ConsumerOptions, subscribe
from sinas_notifier.delivery import CallbackDeliverer
from sinas_notifier.models import CallbackClaim, ClaimResult, DeliveryOutcome
from sinas_notifier.sender import HttpsSender, ssl_context
from sinas_notifier.signing import WebhookSigner, parse_signing_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class RecordingScheduler:
    """Claims each known execution or batch once, like the scheduler's conditional UPDATE;
    `urls` maps execution ids and batch ids to their callback URLs."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.claimed: set[str] = set()
        self.claim_calls: list[list[str]] = []
        self.batch_claim_calls: list[list[str]] = []
        self.recorded: list[DeliveryOutcome] = []

    def _claim(self, callback_id: str, *, batch: bool) -> CallbackClaim | None:
        if callback_id not in self.urls or callback_id in self.claimed:
            return None
        self.claimed.add(callback_id)
        return CallbackClaim(
            execution_id="" if batch else callback_id,
            batch_id=callback_id if batch else "",
            callback_url=self.urls[callback_id],
            webhook_id=f"msg_{callback_id}",
            access_token="t",
            payload_json=json.dumps({"id": callback_id}).encode(),
        )

    async def claim_callbacks(
        self, notifier_id: str, execution_ids: Sequence[str], batch_ids: Sequence[str] = ()
    ) -> ClaimResult:
        self.claim_calls.append(list(execution_ids))
        self.batch_claim_calls.append(list(batch_ids))
        claims: list[CallbackClaim] = []
        skipped: list[str] = []
        skipped_batches: list[str] = []
        for ids, batch, skips in (
            (execution_ids, False, skipped),
            (batch_ids, True, skipped_batches),
        ):
            for callback_id in ids:
                claim = self._claim(callback_id, batch=batch)
                if claim is None:
                    skips.append(callback_id)
                else:
                    claims.append(claim)
        return ClaimResult(
            claims=tuple(claims),
            skipped_execution_ids=tuple(skipped),
            skipped_batch_ids=tuple(skipped_batches),
        )

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> list[str]:
        self.recorded.extend(outcomes)
        return [o.key for o in outcomes]


@pytest.fixture
async def js(nats_settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    """The scheduler's side: creates the event stream and publishes to it."""
    nc = await connect_nats(nats_settings, name="test-scheduler")
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def notifier_js(nats_settings_as: NatsSettingsAs) -> AsyncIterator[JetStreamContext]:
    """The notifier's side, logged in as its own user: consumes the events."""
    nc = await connect_nats(nats_settings_as("notifier"), name="test-notifier")
    yield nc.jetstream()
    await nc.close()


async def publish(js: JetStreamContext, settings: NatsSettings, execution_id: str) -> None:
    names = await ensure_event_stream(js, settings)
    event = ExecutionTerminated(execution_id=execution_id)
    await js.publish(
        names.subject(EXECUTION_TERMINATED),
        event.encode(),
        headers={"Nats-Msg-Id": event.message_id},
    )


_SENDERS: list[HttpsSender] = []


def _opened(sender: HttpsSender) -> HttpsSender:
    _SENDERS.append(sender)
    return sender


@pytest.fixture(autouse=True)
async def _close_senders() -> AsyncIterator[None]:
    """Senders keep connections open for reuse: each test's are closed after it."""
    yield
    while _SENDERS:
        await _SENDERS.pop().close()


def deliverer(certificates: ReceiverCertificates, port: int) -> CallbackDeliverer:
    policy = CallbackPolicy.from_settings(
        CallbackPolicySettings.model_validate(
            {
                "CALLBACK_URL_HOSTS": "localhost",
                "CALLBACK_URL_PORTS": str(port),
                "CALLBACK_ALLOW_PRIVATE_NETWORKS": True,
            }
        )
    )
    return CallbackDeliverer(
        policy=policy,
        resolver=SystemResolver(),
        sender=_opened(HttpsSender(ssl_context(str(certificates.ca_file)), timeout_seconds=10)),
        signer=WebhookSigner(parse_signing_secret(SECRET)),
        timeout_seconds=10,
    )


async def wait_for(predicate: object, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_each_event_is_claimed_delivered_recorded_and_acked_once(
    js: JetStreamContext,
    notifier_js: JetStreamContext,
    nats_settings: NatsSettings,
    receiver: CallbackReceiver,
    certificates: ReceiverCertificates,
) -> None:
    run = uuid.uuid4().hex
    with_callback = [str(uuid.uuid4()) for _ in range(40)]
    statuses = {eid: ("status/500" if i % 4 == 0 else "ok") for i, eid in enumerate(with_callback)}
    urls = {eid: receiver.url(f"/{statuses[eid]}/{run}/{eid}") for eid in with_callback}
    scheduler = RecordingScheduler(urls)
    unknown = [str(uuid.uuid4()) for _ in range(5)]
    for execution_id in [*with_callback, *unknown, with_callback[0]]:
        await publish(js, nats_settings, execution_id)

    consumer = CallbackConsumer(
        subscription=await subscribe(notifier_js, nats_settings, ack_wait_seconds=30),
        scheduler=scheduler,
        deliverer=deliverer(certificates, receiver.port),
        options=ConsumerOptions(notifier_id="n1", concurrency=8, fetch_batch=16),
    )
    running = asyncio.create_task(consumer.run())
    await wait_for(lambda: len(scheduler.recorded) == len(with_callback))
    names = await ensure_event_stream(js, nats_settings)
    stream = names.stream

    async def stream_empty() -> bool:
        return (await js.stream_info(stream)).state.messages == 0

    deadline = time.monotonic() + 30
    while not await stream_empty():
        assert time.monotonic() < deadline, "events not all acked"
        await asyncio.sleep(0.05)
    consumer.stop()
    await running

    posts = [r for r in receiver.requests if f"/{run}/" in r.target]
    assert sorted(r.target.rsplit("/", 1)[1] for r in posts) == sorted(with_callback)
    recorded = {o.execution_id: o for o in scheduler.recorded}
    assert set(recorded) == set(with_callback)
    for execution_id, outcome in recorded.items():
        if statuses[execution_id] == "ok":
            assert (outcome.sent, outcome.response_code) == (True, 200)
        else:
            assert (outcome.sent, outcome.response_code) == (False, 500)
    # Several events share a claim call: the scheduler sees batches, not one call per event.
    assert len(scheduler.claim_calls) < len(with_callback) + len(unknown)
    # The duplicate event was published inside the window and dropped by JetStream.
    assert sum(len(call) for call in scheduler.claim_calls) == len(with_callback) + len(unknown)


async def test_stop_finishes_in_flight_deliveries_before_returning(
    js: JetStreamContext,
    notifier_js: JetStreamContext,
    nats_settings: NatsSettings,
    receiver: CallbackReceiver,
    certificates: ReceiverCertificates,
) -> None:
    execution_id = str(uuid.uuid4())
    scheduler = RecordingScheduler({execution_id: receiver.url(f"/hang/1/{execution_id}")})
    await publish(js, nats_settings, execution_id)
    consumer = CallbackConsumer(
        subscription=await subscribe(notifier_js, nats_settings, ack_wait_seconds=30),
        scheduler=scheduler,
        deliverer=deliverer(certificates, receiver.port),
        options=ConsumerOptions(notifier_id="n1", shutdown_grace_seconds=30),
    )
    running = asyncio.create_task(consumer.run())
    await wait_for(lambda: receiver.requests_to(f"/hang/1/{execution_id}"))
    consumer.stop()
    await running
    assert [(o.execution_id, o.sent) for o in scheduler.recorded] == [(execution_id, True)]


async def test_batch_events_deliver_one_summary_each(
    js: JetStreamContext,
    notifier_js: JetStreamContext,
    nats_settings: NatsSettings,
    receiver: CallbackReceiver,
    certificates: ReceiverCertificates,
) -> None:
    run = uuid.uuid4().hex
    batch_ids = [str(uuid.uuid4()) for _ in range(3)]
    # An execution and a batch may share nothing but the stream; an id of one kind never
    # claims the other.
    execution_id = str(uuid.uuid4())
    urls = {i: receiver.url(f"/ok/{run}/{i}") for i in [*batch_ids, execution_id]}
    scheduler = RecordingScheduler(urls)
    names = await ensure_event_stream(js, nats_settings)
    for batch_id in [*batch_ids, batch_ids[0]]:
        event = BatchTerminated(batch_id=batch_id)
        await js.publish(
            names.subject(BATCH_TERMINATED),
            event.encode(),
            headers={"Nats-Msg-Id": f"{event.message_id}-{uuid.uuid4()}"},
        )
    await publish(js, nats_settings, execution_id)

    consumer = CallbackConsumer(
        subscription=await subscribe(notifier_js, nats_settings, ack_wait_seconds=30),
        scheduler=scheduler,
        deliverer=deliverer(certificates, receiver.port),
        options=ConsumerOptions(notifier_id="n1", concurrency=4, fetch_batch=8),
    )
    running = asyncio.create_task(consumer.run())
    await wait_for(lambda: len(scheduler.recorded) == len(batch_ids) + 1)

    async def stream_empty() -> bool:
        return (await js.stream_info(names.stream)).state.messages == 0

    deadline = time.monotonic() + 30
    while not await stream_empty():
        assert time.monotonic() < deadline, "events not all acked"
        await asyncio.sleep(0.05)
    consumer.stop()
    await running

    assert sorted(o.batch_id for o in scheduler.recorded if o.batch_id) == sorted(batch_ids)
    assert [o.execution_id for o in scheduler.recorded if not o.batch_id] == [execution_id]
    assert all(o.sent for o in scheduler.recorded)
    posts = [r for r in receiver.requests if f"/{run}/" in r.target]
    assert sorted(r.target.rsplit("/", 1)[1] for r in posts) == sorted([*batch_ids, execution_id])
    claimed_batches = [i for call in scheduler.batch_claim_calls for i in call]
    assert sorted(set(claimed_batches)) == sorted(batch_ids)

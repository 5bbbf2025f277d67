"""Callbacks over real gRPC, PostgreSQL and NATS: the submit-time policy, the terminal-event
outbox, claims, recorded outcomes, stale claims and the callback token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import CallbackUrlRejected, Unauthenticated
from sinas_common.eventstream import (
    EXECUTION_TERMINATED,
    ExecutionTerminated,
    ensure_event_stream,
    event_stream_names,
)
from sinas_common.grpc_client import invoke
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import CallbackPolicySettings, NatsSettings
from sinas_common.timeconv import to_timestamp
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.models import NOTIFIER_LOST_ERROR
from sinas_scheduler.testing import RunningScheduler, bearer, stop_in_process

DEADLINE_SECONDS = 30.0
HOOK = "https://hooks.example/done"
PUBLIC = "93.184.215.14"

StartScheduler = Callable[..., Awaitable[RunningScheduler]]


class FixedResolver:
    """Answers lookups from a fixed table, like DNS that never changes."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int) -> list[str]:
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return self.answers[host]


RESOLVER = FixedResolver({"hooks.example": [PUBLIC], "private.example": [PUBLIC, "10.1.2.3"]})


def policy(hosts: str) -> CallbackPolicySettings:
    return CallbackPolicySettings(CALLBACK_URL_HOSTS=hosts)  # type: ignore[call-arg]


@pytest.fixture
async def jetstream(nats_settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    client = await connect_nats(nats_settings, name="test-scheduler")
    js = client.jetstream()
    await ensure_event_stream(js, nats_settings)
    yield js
    await client.close()


@pytest.fixture
async def scheduler(start_scheduler: StartScheduler) -> RunningScheduler:
    """Callbacks enabled for hooks.example and private.example."""
    started = await start_scheduler(
        resolver=RESOLVER, callbacks=policy("hooks.example,private.example")
    )
    await started.create_function()
    return started


async def events(js: JetStreamContext, settings: NatsSettings) -> list[Any]:
    """Every message now in the event stream, read without consuming it."""
    names = event_stream_names(settings)
    info = await js.stream_info(names.stream)
    if info.state.messages == 0:
        return []
    return [
        await js.get_msg(names.stream, seq)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def eventually(probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await probe():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def published_ids(js: JetStreamContext, settings: NatsSettings) -> list[str]:
    return [ExecutionTerminated.decode(m.data).execution_id for m in await events(js, settings)]


async def column(db: AsyncEngine, name: str, execution_id: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(
                sa.text(f"SELECT {name} FROM executions WHERE id = :id"), {"id": execution_id}
            )
        ).scalar_one()


async def finish(
    scheduler: RunningScheduler, execution_id: str, **outcome: Any
) -> pb.ClaimExecutionsResponse:
    """Claims the execution as a worker would and reports how it ended."""
    claimed = await invoke(
        scheduler.worker.ClaimExecutions,
        pb.ClaimExecutionsRequest(
            worker_id="w1",
            items=[pb.ClaimRequestItem(execution_id=execution_id, delivery_attempt=1)],
        ),
    )
    status = outcome.pop("status", pb.EXECUTION_STATUS_COMPLETED)
    output = outcome.pop("output", None)
    await invoke(
        scheduler.worker.CompleteExecutions,
        pb.CompleteExecutionsRequest(
            worker_id="w1",
            outcomes=[
                pb.ExecutionOutcome(
                    execution_id=execution_id,
                    attempt=1,
                    status=status,
                    output_json=b"" if output is None else dump_json(output),
                    **outcome,
                )
            ],
        ),
    )
    response: pb.ClaimExecutionsResponse = claimed
    return response


async def claim_callbacks(scheduler: RunningScheduler, *ids: str) -> pb.ClaimCallbacksResponse:
    response: pb.ClaimCallbacksResponse = await invoke(
        scheduler.notifier.ClaimCallbacks,
        pb.ClaimCallbacksRequest(notifier_id="n1", execution_ids=ids),
    )
    return response


async def record(scheduler: RunningScheduler, *outcomes: pb.CallbackOutcome) -> list[str]:
    response = await invoke(
        scheduler.notifier.RecordCallbackOutcomes,
        pb.RecordCallbackOutcomesRequest(outcomes=outcomes),
    )
    return list(response.applied_execution_ids)


# --- submit-time policy -------------------------------------------------------------------


async def test_callbacks_disabled_refuses_any_url(start_scheduler: StartScheduler) -> None:
    scheduler = await start_scheduler(resolver=RESOLVER)
    await scheduler.create_function()
    with pytest.raises(CallbackUrlRejected, match="callbacks are not enabled on this instance"):
        await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://other.example/done", "host other.example is not in the allowed callback hosts"),
        ("https://private.example/done", "resolves to 10.1.2.3"),
        ("http://hooks.example/done", "only https URLs are allowed"),
        ("https://hooks.example:8443/done", "port 8443 is not allowed"),
    ],
)
async def test_rejected_callback_urls_are_400s_naming_the_reason(
    scheduler: RunningScheduler, db: AsyncEngine, url: str, says: str
) -> None:
    with pytest.raises(CallbackUrlRejected, match=says) as caught:
        await scheduler.submit(scheduler.admin, {}, callback_url=url)
    assert [v.field for v in caught.value.violations] == ["callback_url"]
    async with db.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM executions"))).scalar_one() == 0


async def test_an_accepted_callback_is_pending(scheduler: RunningScheduler) -> None:
    with_callback = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    without = await scheduler.submit(scheduler.admin, {})

    stored = await scheduler.get(scheduler.admin, with_callback)
    assert (stored.callback_url, stored.callback_status) == (HOOK, "pending")
    assert (stored.callback_error, stored.HasField("callback_attempted_at")) == ("", False)
    plain = await scheduler.get(scheduler.admin, without)
    assert (plain.callback_url, plain.callback_status) == ("", "")


# --- terminal-event outbox ----------------------------------------------------------------


async def test_each_ended_execution_with_a_callback_yields_one_event(
    start_scheduler: StartScheduler,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    # Two replicas publish: SKIP LOCKED and the message id keep it at one event each.
    first = await start_scheduler(resolver=RESOLVER, callbacks=policy("*"))
    await start_scheduler(resolver=RESOLVER, callbacks=policy("*"))
    await first.create_function()
    ok = await first.submit(first.admin, {}, callback_url=HOOK)
    failed = await first.submit(first.admin, {}, callback_url=HOOK)
    plain = await first.submit(first.admin, {})
    pending = await first.submit(first.admin, {}, callback_url=HOOK)
    await finish(first, ok, output={"n": 1})
    await finish(first, failed, status=pb.EXECUTION_STATUS_FAILED, error="boom")
    await finish(first, plain)

    async def both_published() -> bool:
        return len(await published_ids(jetstream, nats_settings)) >= 2

    await eventually(both_published)
    messages = await events(jetstream, nats_settings)
    assert sorted(ExecutionTerminated.decode(m.data).execution_id for m in messages) == sorted(
        [ok, failed]
    )
    names = event_stream_names(nats_settings)
    for message in messages:
        assert message.subject == names.subject(EXECUTION_TERMINATED)
        event = ExecutionTerminated.decode(message.data)
        assert message.headers["Nats-Msg-Id"] == event.message_id
    for execution_id in (ok, failed):
        assert await column(db, "event_published_at", execution_id) is not None
    assert await column(db, "event_published_at", plain) is None
    assert await column(db, "event_published_at", pending) is None

    # A later end is published too, and nothing earlier a second time.
    await finish(first, pending, status=pb.EXECUTION_STATUS_FAILED, error="late")

    async def third_published() -> bool:
        return len(await published_ids(jetstream, nats_settings)) >= 3

    await eventually(third_published)
    assert sorted(await published_ids(jetstream, nats_settings)) == sorted([ok, failed, pending])


async def test_an_end_committed_while_no_publisher_runs_is_published_later(
    start_scheduler: StartScheduler,
    jetstream: JetStreamContext,
    nats_settings: NatsSettings,
    db: AsyncEngine,
) -> None:
    # The end commits with nothing publishing, as after a crash before the publish.
    api_only = await start_scheduler(
        resolver=RESOLVER, callbacks=policy("*"), SCHEDULER_DISPATCHER_ENABLED=False
    )
    await api_only.create_function()
    execution_id = await api_only.submit(api_only.admin, {}, callback_url=HOOK)
    await finish(api_only, execution_id)
    await stop_in_process(api_only)
    assert await column(db, "event_published_at", execution_id) is None
    assert await published_ids(jetstream, nats_settings) == []

    await start_scheduler(resolver=RESOLVER, callbacks=policy("*"))

    async def published() -> bool:
        return await published_ids(jetstream, nats_settings) == [execution_id]

    await eventually(published)
    assert await column(db, "event_published_at", execution_id) is not None


async def test_a_reaped_execution_yields_an_event(
    start_scheduler: StartScheduler, jetstream: JetStreamContext, nats_settings: NatsSettings
) -> None:
    scheduler = await start_scheduler(
        resolver=RESOLVER,
        callbacks=policy("*"),
        EXECUTION_MAX_ATTEMPTS=1,
        EXECUTION_LEASE_SECONDS=0.5,
        SCHEDULER_REAPER_INTERVAL_SECONDS=0.2,
    )
    await scheduler.create_function()
    execution_id = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    items = [pb.ClaimRequestItem(execution_id=execution_id, delivery_attempt=1)]
    await invoke(
        scheduler.worker.ClaimExecutions, pb.ClaimExecutionsRequest(worker_id="w", items=items)
    )

    async def published() -> bool:
        return await published_ids(jetstream, nats_settings) == [execution_id]

    await eventually(published)
    assert (await scheduler.get(scheduler.admin, execution_id)).status == (
        pb.EXECUTION_STATUS_FAILED
    )


# --- claims and outcomes ------------------------------------------------------------------


async def test_claim_builds_the_payload_once(scheduler: RunningScheduler) -> None:
    user, key = await scheduler.create_user(["Users"])
    done = await scheduler.submit(bearer(key), {"x": 1}, callback_url=HOOK, trigger_id="job-7")
    timed_out = await scheduler.submit(bearer(key), {}, callback_url=HOOK)
    running = await scheduler.submit(bearer(key), {}, callback_url=HOOK)
    plain = await scheduler.submit(bearer(key), {})
    await finish(scheduler, done, output={"big": 2**60})
    await finish(
        scheduler, timed_out, status=pb.EXECUTION_STATUS_FAILED, error="timed out", timed_out=True
    )
    await finish(scheduler, plain)

    first = await claim_callbacks(scheduler, done, timed_out, running, plain, "no-such-id")
    again = await claim_callbacks(scheduler, done, timed_out)

    assert sorted(d.execution_id for d in first.deliveries) == sorted([done, timed_out])
    assert sorted(first.skipped_execution_ids) == sorted([running, plain, "no-such-id"])
    assert list(again.deliveries) == []
    assert sorted(again.skipped_execution_ids) == sorted([done, timed_out])
    by_id = {d.execution_id: d for d in first.deliveries}
    delivery = by_id[done]
    assert (delivery.callback_url, delivery.webhook_id) == (HOOK, f"msg_{done}")
    stored = await scheduler.get(scheduler.admin, done)
    payload = load_json(delivery.payload_json)
    assert payload == {
        "execution_id": done,
        "trigger_id": "job-7",
        "function": {"namespace": "tests", "name": "echo"},
        "status": "success",
        "started_at": stored.started_at.ToDatetime(tzinfo=UTC).isoformat(),
        "finished_at": stored.completed_at.ToDatetime(tzinfo=UTC).isoformat(),
        "duration_ms": stored.duration_ms,
        "result": {"big": 2**60},
        "error": None,
    }
    assert payload["finished_at"].endswith("+00:00")
    timeout_payload = load_json(by_id[timed_out].payload_json)
    assert (timeout_payload["status"], timeout_payload["result"], timeout_payload["error"]) == (
        "timeout",
        None,
        "timed out",
    )
    assert (await scheduler.get(scheduler.admin, done)).callback_status == "in_flight"
    assert (await scheduler.get(scheduler.admin, running)).callback_status == "pending"

    # The callback token shows who the job ran for, and does nothing else.
    token = bearer(delivery.access_token)
    me = await invoke(scheduler.identity.GetMe, pb.GetMeRequest(), metadata=token)
    assert (me.user.id, me.user.email) == (user.id, user.email)
    with pytest.raises(Unauthenticated):
        await scheduler.submit(token, {})
    with pytest.raises(Unauthenticated):
        await scheduler.get(token, done)
    with pytest.raises(Unauthenticated):
        await invoke(
            scheduler.executions.ListExecutions, pb.ListExecutionsRequest(), metadata=token
        )


async def test_outcomes_apply_only_to_in_flight_claims(scheduler: RunningScheduler) -> None:
    sent = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    failed = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    unclaimed = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    for execution_id in (sent, failed, unclaimed):
        await finish(scheduler, execution_id)
    await claim_callbacks(scheduler, sent, failed)
    attempted = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

    applied = await record(
        scheduler,
        pb.CallbackOutcome(
            execution_id=sent, sent=True, response_code=204, attempted_at=to_timestamp(attempted)
        ),
        pb.CallbackOutcome(execution_id=failed, sent=False, error="connect timeout"),
        pb.CallbackOutcome(execution_id=unclaimed, sent=True, response_code=200),
    )
    again = await record(
        scheduler, pb.CallbackOutcome(execution_id=sent, sent=False, error="second report")
    )

    assert sorted(applied) == sorted([sent, failed])
    assert again == []
    delivered = await scheduler.get(scheduler.admin, sent)
    assert (delivered.callback_status, delivered.callback_response_code) == ("sent", 204)
    assert delivered.callback_error == ""
    assert delivered.callback_attempted_at.ToDatetime(tzinfo=UTC) == attempted
    lost = await scheduler.get(scheduler.admin, failed)
    assert (lost.callback_status, lost.HasField("callback_response_code")) == ("failed", False)
    assert lost.callback_error == "connect timeout"
    assert lost.HasField("callback_attempted_at")
    assert (await scheduler.get(scheduler.admin, unclaimed)).callback_status == "pending"


async def test_the_reaper_fails_stale_claims(start_scheduler: StartScheduler) -> None:
    scheduler = await start_scheduler(
        resolver=RESOLVER,
        callbacks=policy("*"),
        CALLBACK_CLAIM_TIMEOUT_SECONDS=0.5,
        SCHEDULER_REAPER_INTERVAL_SECONDS=0.2,
    )
    await scheduler.create_function()
    stale = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    untouched = await scheduler.submit(scheduler.admin, {}, callback_url=HOOK)
    await finish(scheduler, stale)
    await finish(scheduler, untouched)
    await claim_callbacks(scheduler, stale)

    async def reaped() -> bool:
        return (await scheduler.get(scheduler.admin, stale)).callback_status == "failed"

    await eventually(reaped)
    execution = await scheduler.get(scheduler.admin, stale)
    assert execution.callback_error == NOTIFIER_LOST_ERROR
    assert execution.HasField("callback_response_code") is False
    # The notifier reporting late changes nothing; the unclaimed one is still pending.
    assert await record(scheduler, pb.CallbackOutcome(execution_id=stale, sent=True)) == []
    assert (await scheduler.get(scheduler.admin, untouched)).callback_status == "pending"
    # And a stale claim is never offered again.
    assert list((await claim_callbacks(scheduler, stale)).skipped_execution_ids) == [stale]

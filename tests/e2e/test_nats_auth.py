"""NATS refuses anonymous clients and lets each service's user do only its own part."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig

from sinas_common.control import control_subject
from sinas_common.eventstream import (
    EXECUTION_TERMINATED,
    ExecutionTerminated,
    ensure_event_stream,
    event_stream_names,
)
from sinas_common.jobstream import JobMessage, ensure_job_stream, job_stream_names
from sinas_common.jsoncodec import dump_json
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings
from sinas_devstack.embedded import EmbeddedNats, EmbeddedNatsCluster
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.pytest_plugin import NatsSettingsAs
from sinas_devstack.stack import Stack
from sinas_executor.consumer import AGENT_JOB_KIND, JOB_KIND
from sinas_executor.consumer import consumer_name as executor_consumer
from sinas_executor.consumer import subscribe as executor_subscribe
from sinas_notifier.consumer import consumer_name as notifier_consumer
from sinas_notifier.consumer import subscribe as notifier_subscribe

from .helpers import FunctionFactory, enqueue, wait_for_status

VIOLATION_SECONDS = 5.0
# How long a refused request, or a message that must not arrive, is waited for.
QUIET_SECONDS = 1.0


@dataclass
class Connection:
    """One login, with the errors the server sent it (permission violations among them)."""

    client: Client
    errors: list[str] = field(default_factory=list)

    @property
    def js(self) -> JetStreamContext:
        return self.client.jetstream()

    @property
    def refused_js(self) -> JetStreamContext:
        """For requests the server drops: no answer comes, so don't wait long for one."""
        return self.client.jetstream(timeout=QUIET_SECONDS)

    async def violation(self, kind: str, subject: str) -> None:
        """Until the server reports refusing `kind` ("Publish", "Subscription") on `subject`."""
        # nats-py hands the server's error on lower-cased.
        expected = f'permissions violation for {kind} to "{subject}"'.lower()
        deadline = time.monotonic() + VIOLATION_SECONDS
        while not any(expected in error.lower() for error in self.errors):
            assert time.monotonic() < deadline, f"no {expected!r} in {self.errors}"
            await asyncio.sleep(0.02)


@dataclass
class Bus:
    """A test's stream prefix with the streams and the services' consumers in place."""

    settings_as: NatsSettingsAs
    connections: list[Connection] = field(default_factory=list)

    @property
    def settings(self) -> NatsSettings:
        return self.settings_as("scheduler")

    async def connect(self, role: str) -> Connection:
        errors: list[str] = []

        async def record(error: Exception) -> None:
            errors.append(str(error))

        client = await connect_nats(
            self.settings_as(role), name=f"attacker-{role}", error_cb=record
        )
        connection = Connection(client, errors)
        self.connections.append(connection)
        return connection


@pytest.fixture
async def bus(nats_settings_as: NatsSettingsAs) -> AsyncIterator[Bus]:
    bus = Bus(nats_settings_as)
    scheduler = await bus.connect("scheduler")
    await ensure_job_stream(scheduler.js, bus.settings)
    await ensure_event_stream(scheduler.js, bus.settings)
    # The consumers as the services create them, so the attacks aim at real ones.
    executor = await bus.connect("executor")
    for kind in (JOB_KIND, AGENT_JOB_KIND):
        await executor_subscribe(executor.js, bus.settings, ack_wait_seconds=30, kind=kind)
    notifier = await bus.connect("notifier")
    await notifier_subscribe(notifier.js, bus.settings, ack_wait_seconds=30)
    yield bus
    for connection in bus.connections:
        await connection.client.close()


async def _refused(url: str, **credentials: str) -> str:
    """The server's answer to a login that must fail."""
    client = Client()
    try:
        await client.connect(
            url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet, **credentials
        )
    except nats.errors.Error as exc:
        return str(exc)
    finally:
        # A refused login still opened a socket.
        await client.close()
    raise AssertionError("the server let the client in")


async def _quiet(error: Exception) -> None:
    return None


async def test_a_client_without_credentials_is_refused(nats_url: str) -> None:
    assert "Authorization Violation" in await _refused(nats_url)


async def test_a_wrong_password_is_refused(nats_settings_as: NatsSettingsAs) -> None:
    executor = nats_settings_as("executor")
    refusal = await _refused(executor.url, user=executor.user, password="guess")
    assert "Authorization Violation" in refusal


async def test_a_service_logs_in_with_its_own_password_only(
    nats_settings_as: NatsSettingsAs,
) -> None:
    executor, scheduler = nats_settings_as("executor"), nats_settings_as("scheduler")
    borrowed = scheduler.password.get_secret_value()
    refusal = await _refused(executor.url, user=executor.user, password=borrowed)
    assert "Authorization Violation" in refusal


async def _stream_messages(bus: Bus, stream: str) -> int:
    scheduler = bus.connections[0]
    return int((await scheduler.js.stream_info(stream)).state.messages)


@pytest.mark.parametrize("role", ["executor", "notifier"])
async def test_only_the_scheduler_publishes_jobs(bus: Bus, role: str) -> None:
    jobs = job_stream_names(bus.settings)
    attacker = await bus.connect(role)
    forged = JobMessage(execution_id="forged", kind=JOB_KIND).encode()

    with pytest.raises(nats.errors.TimeoutError):
        await attacker.js.publish(jobs.subject(JOB_KIND), forged, timeout=QUIET_SECONDS)

    await attacker.violation("Publish", jobs.subject(JOB_KIND))
    assert await _stream_messages(bus, jobs.stream) == 0


@pytest.mark.parametrize("role", ["executor", "notifier"])
async def test_only_the_scheduler_publishes_events(bus: Bus, role: str) -> None:
    events = event_stream_names(bus.settings)
    attacker = await bus.connect(role)
    forged = ExecutionTerminated(execution_id="forged").encode()

    with pytest.raises(nats.errors.TimeoutError):
        await attacker.js.publish(
            events.subject(EXECUTION_TERMINATED), forged, timeout=QUIET_SECONDS
        )

    await attacker.violation("Publish", events.subject(EXECUTION_TERMINATED))
    assert await _stream_messages(bus, events.stream) == 0


@pytest.mark.parametrize("role", ["executor", "notifier"])
async def test_only_the_scheduler_publishes_control_messages(bus: Bus, role: str) -> None:
    subject = control_subject(bus.settings)
    listener = await bus.connect("executor")
    received: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        received.append(msg)

    await listener.client.subscribe(subject, cb=on_message)
    await listener.client.flush()
    attacker = await bus.connect(role)
    # What the attack in issue 16 sent: an answer for another user's paused `input()`.
    forged = dump_json(
        {"execution_id": "someone-elses", "action": "continue", "input": "forged", "round": 1}
    )

    await attacker.client.publish(subject, forged)
    await attacker.client.flush()

    await attacker.violation("Publish", subject)
    await asyncio.sleep(QUIET_SECONDS)
    assert received == []
    # The scheduler's own still arrives: the listener was listening.
    scheduler = bus.connections[0]
    await scheduler.client.publish(subject, forged)
    deadline = time.monotonic() + VIOLATION_SECONDS
    while not received:
        assert time.monotonic() < deadline, "the scheduler's control message did not arrive"
        await asyncio.sleep(0.02)


def _watched_subjects(settings: NatsSettings) -> list[str]:
    prefix = settings.stream_prefix.lower()
    return [">", f"{prefix}.>", f"{prefix}.jobs.>", f"{prefix}.events.>", "$JS.API.>"]


@pytest.mark.parametrize("role", ["scheduler", "executor", "notifier"])
async def test_no_user_watches_the_bus(bus: Bus, role: str) -> None:
    # The attack in issue 16 watched every job id go by on `sinas.>`.
    watcher = await bus.connect(role)
    seen: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        seen.append(msg)

    subjects = _watched_subjects(bus.settings)
    for subject in subjects:
        await watcher.client.subscribe(subject, cb=on_message)
    await watcher.client.flush()
    for subject in subjects:
        await watcher.violation("Subscription", subject)

    scheduler = bus.connections[0]
    job = JobMessage(execution_id="watched", kind=JOB_KIND).encode()
    await scheduler.js.publish(job_stream_names(bus.settings).subject(JOB_KIND), job)
    await asyncio.sleep(QUIET_SECONDS)
    assert seen == []


@pytest.mark.parametrize(("role", "other"), [("executor", "scheduler"), ("notifier", "executor")])
async def test_no_user_reads_another_users_replies(bus: Bus, role: str, other: str) -> None:
    # JetStream answers, publish acks and fetched messages all travel to reply inboxes.
    watcher = await bus.connect(role)
    for subject in ("_INBOX.>", f"_INBOX.{other}.>"):
        await watcher.client.subscribe(subject)
        await watcher.violation("Subscription", subject)


async def test_the_executor_cannot_create_or_delete_streams(bus: Bus) -> None:
    jobs = job_stream_names(bus.settings)
    executor = await bus.connect("executor")

    with pytest.raises(nats.errors.TimeoutError):
        await executor.refused_js.add_stream(
            StreamConfig(name=f"{bus.settings.stream_prefix}_MINE", subjects=["mine.>"])
        )
    await executor.violation("Publish", f"$JS.API.STREAM.CREATE.{bus.settings.stream_prefix}_MINE")
    with pytest.raises(nats.errors.TimeoutError):
        await executor.refused_js.delete_stream(jobs.stream)
    await executor.violation("Publish", f"$JS.API.STREAM.DELETE.{jobs.stream}")
    with pytest.raises(nats.errors.TimeoutError):
        await executor.refused_js.purge_stream(jobs.stream)
    await executor.violation("Publish", f"$JS.API.STREAM.PURGE.{jobs.stream}")

    assert (await bus.connections[0].js.stream_info(jobs.stream)).config.name == jobs.stream


async def _fetch_refused(attacker: Connection, stream: str, consumer: str) -> None:
    subscription = await attacker.js.pull_subscribe_bind(durable=consumer, stream=stream)
    with pytest.raises(nats.errors.TimeoutError):
        await subscription.fetch(1, timeout=QUIET_SECONDS)
    await attacker.violation("Publish", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}")


def _sneaky(filter_subject: str) -> ConsumerConfig:
    """A consumer of one's own on a stream one may not read."""
    return ConsumerConfig(name="sneaky", durable_name="sneaky", filter_subject=filter_subject)


async def test_the_executor_cannot_read_events(bus: Bus) -> None:
    events = event_stream_names(bus.settings)
    scheduler = bus.connections[0]
    event = ExecutionTerminated(execution_id="someone-elses")
    await scheduler.js.publish(events.subject(EXECUTION_TERMINATED), event.encode())
    executor = await bus.connect("executor")

    await _fetch_refused(executor, events.stream, notifier_consumer(bus.settings))
    with pytest.raises(nats.errors.TimeoutError):
        await executor.refused_js.add_consumer(events.stream, _sneaky(events.all_subjects))
    await executor.violation(
        "Publish", f"$JS.API.CONSUMER.CREATE.{events.stream}.sneaky.{events.all_subjects}"
    )

    assert await _stream_messages(bus, events.stream) == 1


@pytest.mark.parametrize("role", ["notifier", "scheduler"])
async def test_only_the_executor_reads_jobs(bus: Bus, role: str) -> None:
    jobs = job_stream_names(bus.settings)
    scheduler = bus.connections[0]
    job = JobMessage(execution_id="someone-elses", kind=JOB_KIND).encode()
    await scheduler.js.publish(jobs.subject(JOB_KIND), job)
    reader = await bus.connect(role)

    for kind in (JOB_KIND, AGENT_JOB_KIND):
        await _fetch_refused(reader, jobs.stream, executor_consumer(bus.settings, kind))
    with pytest.raises(nats.errors.TimeoutError):
        await reader.refused_js.add_consumer(jobs.stream, _sneaky(jobs.all_subjects))
    await reader.violation(
        "Publish", f"$JS.API.CONSUMER.CREATE.{jobs.stream}.sneaky.{jobs.all_subjects}"
    )

    assert await _stream_messages(bus, jobs.stream) == 1


async def test_the_executor_reads_its_jobs_and_acks_them(bus: Bus) -> None:
    jobs = job_stream_names(bus.settings)
    scheduler = bus.connections[0]
    await scheduler.js.publish(
        jobs.subject(JOB_KIND), JobMessage(execution_id="mine", kind=JOB_KIND).encode()
    )
    executor = await bus.connect("executor")
    subscription = await executor_subscribe(executor.js, bus.settings, ack_wait_seconds=30)

    [message] = await subscription.fetch(1, timeout=VIOLATION_SECONDS)
    await message.ack_sync()

    assert JobMessage.decode(message.data).execution_id == "mine"
    assert await _stream_messages(bus, jobs.stream) == 0
    assert executor.errors == []


async def test_the_scheduler_manages_its_streams_and_publishes(bus: Bus) -> None:
    scheduler = await bus.connect("scheduler")
    # Again: the stream exists, so this is the update path.
    jobs = await ensure_job_stream(scheduler.js, bus.settings)
    events = await ensure_event_stream(scheduler.js, bus.settings)

    ack = await scheduler.js.publish(
        jobs.subject(AGENT_JOB_KIND), JobMessage(execution_id="a", kind=AGENT_JOB_KIND).encode()
    )
    await scheduler.js.publish(
        events.subject(EXECUTION_TERMINATED), ExecutionTerminated(execution_id="a").encode()
    )
    stored = await scheduler.js.get_msg(jobs.stream, ack.seq)

    assert JobMessage.decode(stored.data or b"").execution_id == "a"
    assert (await scheduler.js.account_info()).limits is not None
    assert scheduler.errors == []


async def test_a_whole_stack_runs_with_a_nats_user_per_service(
    stack: Stack,
    admin: httpx.AsyncClient,
    create_function: FunctionFactory,
    nats_server: EmbeddedNats,
) -> None:
    users = {name: stack.services[name].env.get("NATS_USER") for name in stack.services}
    assert users["scheduler"] == "scheduler"
    assert users["executor"] == "executor"
    assert users["notifier"] == "notifier"
    assert users["gateway"] is None
    assert "NATS_PASSWORD" not in stack.services["gateway"].env

    fn = await create_function("def handler(input_data, context):\n    return {'ok': True}\n")
    document = await wait_for_status(admin, await enqueue(admin, fn))

    assert document["status"] == "COMPLETED", document
    # Nothing the services did on their streams needed a right they lack.
    prefix = stack.config.nats_stream_prefix
    refused = [
        line
        for line in nats_server.log_path.read_text(errors="replace").splitlines()
        if "Violation" in line and (prefix in line or prefix.lower() in line)
    ]
    assert refused == []


async def test_a_cluster_node_refuses_a_route_without_its_password(scratch_root: Path) -> None:
    # A process reaching a cluster port could otherwise join as a node and see everything.
    folder = scratch_root / f"nats-routes-{uuid.uuid4().hex[:8]}"
    cluster = EmbeddedNatsCluster(folder, provision_nats_users(folder / "auth", prefixes=()))
    cluster.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", cluster.nodes[0].cluster_port)
        await reader.readline()  # the server's INFO
        writer.write(b'CONNECT {"verbose":false,"name":"intruder","cluster":"sinas"}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), VIOLATION_SECONDS)
        writer.close()
        await writer.wait_closed()
    finally:
        cluster.stop()
    assert b"Authorization Violation" in answer

"""Scale-out: two replicas of each service on a 3-node NATS cluster, losing one of each."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.embedded import EmbeddedNatsCluster, free_port
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.stack import ServiceProcess, Stack, StackConfig, merge_role_env
from sinas_scheduler.models import NOTIFIER_LOST_ERROR

from .helpers import make_function_factory, query_one
from .test_callbacks import callback_env

logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.slow, pytest.mark.scale_out, pytest.mark.timeout(600)]

CHILDREN = 1000
ROLES = ("scheduler", "executor", "notifier", "gateway")

NUMBERED_CODE = """
def handler(input_data, context):
    return {"n": input_data["n"]}
"""


@pytest.fixture
def nats_cluster(scratch_root: Path) -> Iterator[EmbeddedNatsCluster]:
    folder = scratch_root / f"nats-cluster-{uuid.uuid4().hex[:8]}"
    cluster = EmbeddedNatsCluster(folder, provision_nats_users(folder / "auth", prefixes=()))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def certificates(scratch_root: Path) -> ReceiverCertificates:
    return ReceiverCertificates.create(scratch_root / f"scale-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def receiver(certificates: ReceiverCertificates) -> Iterator[CallbackReceiver]:
    running = CallbackReceiver(certificates).start()
    yield running
    running.stop()


@pytest.fixture
def replicated_stack(
    database_url: str,
    nats_cluster: EmbeddedNatsCluster,
    certificates: ReceiverCertificates,
    receiver: CallbackReceiver,
    scratch_root: Path,
    internal_pki: dict[str, dict[str, str]],
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    prefix = f"S{tag.upper()}"
    nats_cluster.grant(prefix)
    stack = Stack(
        StackConfig(
            database_url=database_url,
            nats_url=nats_cluster.url,
            log_dir=scratch_root / f"logs-scale-{tag}",
            admin_key="sk-" + secrets.token_urlsafe(32),
            nats_stream_prefix=prefix,
            extra_env=callback_env(
                certificates,
                receiver.port,
                NATS_STREAM_REPLICAS="3",
                EXECUTOR_ACK_WAIT_SECONDS="5",
                EXECUTION_LEASE_SECONDS="10",
                SCHEDULER_REAPER_INTERVAL_SECONDS="1",
                # Longer than a delivery may take (CALLBACK_TIMEOUT_SECONDS, 10 s), so only a
                # dead notifier's claims are taken for lost.
                CALLBACK_CLAIM_TIMEOUT_SECONDS="15",
            ),
            role_env=merge_role_env(internal_pki, nats_cluster.accounts.role_env()),
        )
    )
    yield stack
    stack.stop_all()


def start_replicas(stack: Stack) -> dict[str, list[ServiceProcess]]:
    """Two of each service; the second gateway listens on a port of its own."""
    replicas = {
        "scheduler": [stack.scheduler(), stack.scheduler(name="scheduler-2")],
        "executor": [stack.executor(), stack.executor(name="executor-2")],
        "notifier": [stack.notifier(), stack.notifier(name="notifier-2")],
        "gateway": [
            stack.gateway(),
            stack.gateway(name="gateway-2", GATEWAY_PORT=str(free_port())),
        ],
    }
    # One scheduler first: it migrates and creates the R3 streams the others join.
    replicas["scheduler"][0].start()
    stack.wait_ready(replicas["scheduler"][0], timeout=120)
    rest = [service for group in replicas.values() for service in group]
    rest.remove(replicas["scheduler"][0])
    for service in rest:
        service.start()
    for service in rest:
        stack.wait_ready(service, timeout=120)
    return replicas


async def chaos(
    stack: Stack,
    replicas: dict[str, list[ServiceProcess]],
    cluster: EmbeddedNatsCluster,
    rng: random.Random,
) -> list[str]:
    """Kills one replica of each service and one NATS node at seeded moments within ~6 s,
    then brings each back the way an orchestrator would."""
    plan: list[tuple[float, str, int]] = [
        (rng.uniform(0.2, 6.0), role, rng.randrange(2)) for role in ROLES
    ]
    plan.append((rng.uniform(0.2, 6.0), "nats", rng.randrange(cluster.size)))
    plan.sort()
    started = time.monotonic()
    done: list[str] = []
    for at, role, index in plan:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        if role == "nats":
            await asyncio.to_thread(cluster.kill_node, index)
            done.append(f"nats-{index}")
        else:
            victim = replicas[role][index]
            await asyncio.to_thread(victim.kill)
            done.append(victim.name)
        logger.info("killed", extra={"victim": done[-1], "at_seconds": round(at, 2)})
    await asyncio.sleep(2.0)
    # Back in dependency order: the gateways' health needs the scheduler at SCHEDULER_ADDR.
    order = ("nats", *ROLES)
    for _at, role, index in sorted(plan, key=lambda step: order.index(step[1])):
        if role == "nats":
            await asyncio.to_thread(cluster.start_node, index)
            await asyncio.to_thread(cluster.wait_node, index)
        else:
            victim = replicas[role][index]
            victim.start()
            await asyncio.to_thread(stack.wait_ready, victim, timeout=120)
    return done


async def get_any(clients: list[httpx.AsyncClient], path: str) -> dict[str, Any] | None:
    """GET through whichever gateway answers: one may be down on purpose."""
    for client in clients:
        try:
            reply = await client.get(path)
        except httpx.HTTPError:
            continue
        if reply.status_code == 200:
            document: dict[str, Any] = reply.json()
            return document
    return None


async def batch_settled(
    clients: list[httpx.AsyncClient], batch_id: str, *, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    document: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        document = await get_any(clients, f"/batches/{batch_id}")
        if document is not None and document["batch_callback_status"] in ("sent", "failed"):
            return document
        await asyncio.sleep(0.5)
    raise AssertionError(f"batch never settled: {document}")


async def child_callbacks_settled(database_url: str, batch_id: str, *, timeout: float) -> None:
    """Waits until no child callback is pending or in flight (stale claims are failed by the
    scheduler's reaper after CALLBACK_CLAIM_TIMEOUT_SECONDS)."""
    deadline = time.monotonic() + timeout
    open_statuses: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        open_statuses = database_rows(
            database_url,
            "SELECT callback_status, count(*) FROM executions WHERE batch_id = %s"
            " AND callback_status IN ('pending', 'in_flight') GROUP BY callback_status",
            batch_id,
        )
        if not open_statuses:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"child callbacks never settled: {open_statuses}")


def database_rows(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq) as conn:
        return conn.execute(sql, params).fetchall()


async def test_a_1000_child_batch_survives_losing_a_replica_of_everything(
    replicated_stack: Stack, nats_cluster: EmbeddedNatsCluster, receiver: CallbackReceiver
) -> None:
    seed = int(os.environ.get("SINAS_CHAOS_SEED", secrets.randbelow(2**31)))
    # Rerun a failure with SINAS_CHAOS_SEED=<seed>.
    logger.warning("chaos seed", extra={"seed": seed})
    rng = random.Random(seed)
    replicas = start_replicas(replicated_stack)
    headers = {"X-API-Key": replicated_stack.config.admin_key}
    gateway_urls = [
        f"http://127.0.0.1:{service.env['GATEWAY_PORT']}" for service in replicas["gateway"]
    ]
    clients = [
        httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(60.0))
        for url in gateway_urls
    ]
    try:
        fn = await make_function_factory(clients[0])(NUMBERED_CODE)
        run = uuid.uuid4().hex
        reply = await clients[1].post(
            f"/functions/{fn.namespace}/{fn.name}/execute/batch",
            json={
                "inputs": [{"n": i} for i in range(CHILDREN)],
                "callback_url": receiver.url(f"/child/{run}"),
                "batch_callback_url": receiver.url(f"/batch/{run}"),
            },
        )
        assert reply.status_code == 202, reply.text
        batch_id = reply.json()["batch_id"]
        execution_ids = reply.json()["execution_ids"]

        victims = await chaos(replicated_stack, replicas, nats_cluster, rng)
        assert len(victims) == len(ROLES) + 1

        batch = await batch_settled(clients, batch_id, timeout=420)
        # Child callbacks are independent of the summary: the last ones may still be on
        # their way when the summary lands.
        await child_callbacks_settled(replicated_stack.config.database_url, batch_id, timeout=180)
    finally:
        for client in clients:
            await client.aclose()

    # Every child ended exactly once, completed, with its own output.
    rows = database_rows(
        replicated_stack.config.database_url,
        "SELECT id::text, status, attempts, output, callback_status, callback_error FROM executions"
        " WHERE batch_id = %s",
        batch_id,
    )
    assert sorted(row[0] for row in rows) == sorted(execution_ids)
    assert collections.Counter(row[1] for row in rows) == {"COMPLETED": CHILDREN}
    # A killed executor's attempts are retried; none ran out of attempts.
    assert all(1 <= row[2] <= 3 for row in rows)
    outputs = [json.loads(row[3]) if isinstance(row[3], str | bytes) else row[3] for row in rows]
    assert sorted(output["n"] for output in outputs) == list(range(CHILDREN))
    assert (batch["status"], batch["completed"], batch["failed"]) == ("completed", CHILDREN, 0)

    # Every child callback was sent at most once, and what was sent is recorded: as sent, or,
    # when the notifier was killed between its POST and recording it, as failed "notifier
    # lost" (it can't know the receiver got it; it never sends twice to find out).
    posts = collections.Counter(
        json.loads(request.body)["execution_id"]
        for request in receiver.requests_to(f"/child/{run}")
    )
    assert max(posts.values()) == 1, [k for k, v in posts.items() if v > 1]
    assert set(posts) <= set(execution_ids)
    statuses = {row[0]: row[4] for row in rows}
    assert set(statuses.values()) <= {"sent", "failed"}, collections.Counter(statuses.values())
    errors = {row[0]: row[5] for row in rows}
    unrecorded = [
        execution_id
        for execution_id in posts
        if statuses[execution_id] != "sent" and errors[execution_id] != NOTIFIER_LOST_ERROR
    ]
    assert unrecorded == [], [(i, statuses[i], errors[i]) for i in unrecorded]
    unsent = [execution_id for execution_id, status in statuses.items() if status != "sent"]
    # Only a notifier killed between its claim and its POST may lose a callback (at most once).
    assert len(unsent) <= 64, collections.Counter(errors[execution_id] for execution_id in unsent)

    # The batch callback fired once.
    assert batch["batch_callback_status"] == "sent", batch
    summaries = receiver.requests_to(f"/batch/{run}")
    assert len(summaries) == 1
    assert json.loads(summaries[0].body)["batch_id"] == batch_id

    row = query_one(
        replicated_stack.config.database_url,
        "SELECT extract(epoch FROM max(completed_at) - min(started_at)) FROM executions"
        " WHERE batch_id = %s",
        batch_id,
    )
    assert row is not None
    logger.warning(
        "scale-out drained",
        extra={"children": CHILDREN, "seconds": float(row[0]), "seed": seed, "victims": victims},
    )

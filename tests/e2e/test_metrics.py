"""Every service's Prometheus endpoint answers, and its counters move when work is done."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import enqueue, make_function_factory
from .test_callbacks import callback_env, posts_to

SERVICES = ("scheduler", "executor", "notifier", "gateway")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def metrics_certificates(scratch_root: Path) -> ReceiverCertificates:
    return ReceiverCertificates.create(scratch_root / f"metrics-certs-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def metrics_receiver(metrics_certificates: ReceiverCertificates) -> Iterator[CallbackReceiver]:
    running = CallbackReceiver(metrics_certificates).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def metrics_stack(
    stack_factory: StackFactory,
    metrics_certificates: ReceiverCertificates,
    metrics_receiver: CallbackReceiver,
) -> Stack:
    built = stack_factory(**callback_env(metrics_certificates, metrics_receiver.port))
    built.start_all()
    return built


@pytest.fixture
async def admin(metrics_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(metrics_stack) as client:
        yield client


async def scrape(stack: Stack, service: str) -> Samples:
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.get(stack.metrics_url(service))
    assert reply.status_code == 200, reply.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_service_answers_on_its_metrics_port(metrics_stack: Stack) -> None:
    for service in SERVICES:
        samples = await scrape(metrics_stack, service)
        # Every service serves gRPC health or HTTP, so its request counters exist.
        names = {name for name, _ in samples}
        expected = "sinas_http_requests_total" if service == "gateway" else "sinas_grpc_requests"
        assert any(name.startswith(expected) for name in names), (service, sorted(names)[:20])
    scheduler = await scrape(metrics_stack, "scheduler")
    assert ("sinas_pending_due_executions", ()) in scheduler


async def test_counters_move_when_an_execution_with_a_callback_runs(
    metrics_stack: Stack, admin: httpx.AsyncClient, metrics_receiver: CallbackReceiver
) -> None:
    before = {service: await scrape(metrics_stack, service) for service in SERVICES}
    fn = await make_function_factory(admin)(
        "def handler(input_data, context):\n    return {'n': 1}\n"
    )
    path = f"/metrics/{uuid.uuid4().hex}"
    await enqueue(admin, fn, callback_url=metrics_receiver.url(path))
    await posts_to(metrics_receiver, path)

    # The notifier counts after the receiver answers: poll until the scrape shows it.
    deadline = time.monotonic() + 60
    while True:
        after = {service: await scrape(metrics_stack, service) for service in SERVICES}
        sent = value(after["notifier"], "sinas_callbacks_total", kind="execution", outcome="sent")
        if sent > value(
            before["notifier"], "sinas_callbacks_total", kind="execution", outcome="sent"
        ):
            break
        assert time.monotonic() < deadline, "the notifier never counted the sent callback"
        await asyncio.sleep(0.2)

    def moved(service: str, name: str, **labels: str) -> bool:
        return value(after[service], name, **labels) > value(before[service], name, **labels)

    assert moved("scheduler", "sinas_executions_finished_total", outcome="COMPLETED")
    assert moved("scheduler", "sinas_dispatch_lag_seconds_count")
    assert moved(
        "scheduler",
        "sinas_grpc_requests_total",
        method="/sinas.scheduler.v1.WorkerService/ClaimExecutions",
        code="OK",
    )
    assert moved("notifier", "sinas_callback_seconds_count", kind="execution")
    # The enqueue's route template, whatever its path parameters were.
    assert any(
        name == "sinas_http_requests_total"
        and dict(labels).get("status") == "202"
        and count > value(before["gateway"], name, **dict(labels))
        for (name, labels), count in after["gateway"].items()
    )

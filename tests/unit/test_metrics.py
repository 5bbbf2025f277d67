"""The shared metrics helpers: the scrape server, the gRPC interceptor and gauge sampling."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from sinas_common.errors import NotFound
from sinas_common.grpc_client import open_channel
from sinas_common.grpc_server import GrpcServer
from sinas_common.metrics import MetricsServer, sample_forever
from sinas_devstack.pytest_plugin import InternalTls

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def grpc_count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("sinas_grpc_requests_total", {"method": method, "code": code})
    return value or 0.0


async def test_metrics_server_serves_its_registry_on_its_own_port() -> None:
    registry = CollectorRegistry()
    Counter("probe_events", "Events seen by the probe", registry=registry).inc(3)
    server = MetricsServer.start("127.0.0.1", 0, registry=registry)
    try:
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
    assert reply.status_code == 200
    assert "probe_events_total 3.0" in reply.text


async def test_grpc_calls_are_counted_by_method_and_final_code(internal_tls: InternalTls) -> None:
    server = GrpcServer(
        bind="127.0.0.1:0",
        registrars=[],
        service_names=["probe"],
        tls=internal_tls("scheduler"),
    )
    await server.start()
    ok_before = grpc_count(HEALTH_CHECK, "OK")
    missing_before = grpc_count(HEALTH_CHECK, "NOT_FOUND")
    try:
        async with open_channel(f"127.0.0.1:{server.port}", tls=internal_tls("gateway")) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(service="probe"))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Check(health_pb2.HealthCheckRequest(service="unknown"))
    finally:
        await server.stop(1.0)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert grpc_count(HEALTH_CHECK, "OK") == ok_before + 1
    assert grpc_count(HEALTH_CHECK, "NOT_FOUND") == missing_before + 1


async def test_a_sinas_error_is_counted_with_its_status_code(internal_tls: InternalTls) -> None:
    async def fail(request: bytes, context: object) -> bytes:
        raise NotFound("nothing here")

    handler = grpc.method_handlers_generic_handler(
        "probe.Probe", {"Fail": grpc.unary_unary_rpc_method_handler(fail)}
    )
    server = GrpcServer(
        bind="127.0.0.1:0",
        registrars=[lambda s: s.add_generic_rpc_handlers((handler,))],
        service_names=[],
        tls=internal_tls("scheduler"),
    )
    await server.start()
    before = grpc_count("/probe.Probe/Fail", "NOT_FOUND")
    try:
        async with open_channel(f"127.0.0.1:{server.port}", tls=internal_tls("gateway")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary("/probe.Probe/Fail")(b"")
    finally:
        await server.stop(1.0)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert grpc_count("/probe.Probe/Fail", "NOT_FOUND") == before + 1


async def test_sample_forever_sets_the_gauge_and_survives_a_failed_sample() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("probe_depth", "Sampled depth", registry=registry)
    values = iter([RuntimeError("database away"), 7.0])

    async def sample() -> float:
        value = next(values, 7.0)
        if isinstance(value, Exception):
            raise value
        return value

    task = asyncio.create_task(sample_forever(sample, gauge, interval_seconds=0.01))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while registry.get_sample_value("probe_depth") != 7.0:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

"""Integration fixtures: the fake scheduler on a real grpc.aio server, and the real gateway on
uvicorn on a free port, talked to over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from sinas_common.grpc_client import open_channel
from sinas_devstack.pytest_plugin import InternalTls
from sinas_gateway.app import base_url, bind_socket, build_server, create_app
from sinas_gateway.scheduler_client import GrpcSchedulerClient
from sinas_gateway.settings import GatewaySettings

from .fake_scheduler import ADMIN_TOKEN, BODY_LIMIT, USER_KEY, FakeScheduler, build_fake_scheduler


@pytest.fixture
async def fake_scheduler(internal_tls: InternalTls) -> AsyncIterator[FakeScheduler]:
    fake = build_fake_scheduler(internal_tls("scheduler"))
    await fake.server.start()
    yield fake
    await fake.server.stop(0)


@pytest.fixture
def gateway_settings(fake_scheduler: FakeScheduler, internal_tls: InternalTls) -> GatewaySettings:
    return GatewaySettings.model_validate(
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": 0,
            "MAX_REQUEST_BODY_BYTES": BODY_LIMIT,
            "SYNC_EXECUTE_DEFAULT_TIMEOUT": 5,
            "SHUTDOWN_GRACE_SECONDS": 2,
            "scheduler": {"SCHEDULER_ADDR": fake_scheduler.address, "RPC_TIMEOUT_SECONDS": 10},
            "tls": internal_tls("gateway"),
        }
    )


@pytest.fixture
async def gateway_url(gateway_settings: GatewaySettings) -> AsyncIterator[str]:
    """The real gateway on uvicorn, on a free port, calling the fake scheduler over gRPC."""
    channel = open_channel(
        gateway_settings.scheduler.scheduler_addr,
        tls=gateway_settings.tls,
        server_name=gateway_settings.scheduler.tls_server_name,
    )
    client = GrpcSchedulerClient(
        channel, rpc_timeout_seconds=gateway_settings.scheduler.rpc_timeout_seconds
    )
    server = build_server(create_app(gateway_settings, client), gateway_settings)
    sock = bind_socket(gateway_settings.host, gateway_settings.port)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(30):
        # uvicorn exposes readiness only as a flag, not as an event to await.
        while not server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    yield base_url(sock)
    server.should_exit = True
    await task
    await channel.close()


@pytest.fixture
async def http(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        yield client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": ADMIN_TOKEN}


@pytest.fixture
def user_headers() -> dict[str, str]:
    return {"X-API-Key": USER_KEY}

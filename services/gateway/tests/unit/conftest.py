"""Unit fixtures: the gateway app over a recording scheduler fake, driven without sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sinas_gateway.app import create_app
from sinas_gateway.settings import GatewaySettings
from sinas_gateway.testing import RecordingSchedulerClient

BODY_LIMIT = 4096
DEFAULT_SYNC_TIMEOUT = 7


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings.model_validate(
        {
            "MAX_REQUEST_BODY_BYTES": BODY_LIMIT,
            "SYNC_EXECUTE_DEFAULT_TIMEOUT": DEFAULT_SYNC_TIMEOUT,
        }
    )


@pytest.fixture
def scheduler() -> RecordingSchedulerClient:
    return RecordingSchedulerClient()


@pytest.fixture
async def client(
    settings: GatewaySettings, scheduler: RecordingSchedulerClient
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, scheduler)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gateway.test",
        headers={"Authorization": "Bearer test-token"},
    ) as http:
        yield http

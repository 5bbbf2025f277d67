"""End-to-end fixtures: the real services as processes, driven over HTTP.

`stack_factory`, `stack` and `admin` come from the auto-loaded sinas_devstack pytest plugin.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.pytest_plugin import StackFactory, admin_client_for
from sinas_devstack.stack import Stack

from .helpers import FunctionFactory, UserFactory, make_function_factory, make_user_factory

__all__ = ["StackFactory", "admin_client_for"]


@pytest.fixture(scope="module")
def certificates(scratch_root: Path) -> ReceiverCertificates:
    """A CA and a certificate for `localhost`, for a module's callback receiver."""
    return ReceiverCertificates.create(scratch_root / f"e2e-certs-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def receiver(certificates: ReceiverCertificates) -> Iterator[CallbackReceiver]:
    """A local HTTPS server recording the callbacks a module's stack sends."""
    running = CallbackReceiver(certificates).start()
    yield running
    running.stop()


@pytest.fixture
def isolated_stack(stack_factory: StackFactory) -> Stack:
    """A system of this test's own, not started: the test starts and kills what it needs.

    Short leases (heartbeats every second) so a killed executor's attempts are retried soon.
    """
    return stack_factory(
        EXECUTOR_ACK_WAIT_SECONDS="3",
        EXECUTION_LEASE_SECONDS="3",
        SCHEDULER_REAPER_INTERVAL_SECONDS="0.5",
    )


@pytest.fixture
def create_function(admin: httpx.AsyncClient) -> FunctionFactory:
    return make_function_factory(admin)


@pytest.fixture
async def create_user(admin: httpx.AsyncClient, stack: Stack) -> AsyncIterator[UserFactory]:
    opened: list[httpx.AsyncClient] = []
    yield make_user_factory(admin, stack.gateway_url, opened)
    for client in opened:
        await client.aclose()

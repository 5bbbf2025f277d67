"""Where workers can't be isolated, the executor refuses to start, unless the operator sets
EXECUTOR_SANDBOX=unsafe-none: then it runs, warns, and says so on its /health."""

from __future__ import annotations

import glob
import os
import tempfile
import time

import httpx

from sinas_devstack.run_as import NO_USER_NAMESPACES
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import run_once_as_new_user

REFUSED_EXIT_CODE = 78


def _sandbox_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "sinas-sandbox-*")))


def _started_scheduler(stack_factory: StackFactory, **env: str) -> Stack:
    stack = stack_factory(**env)
    scheduler = stack.scheduler()
    scheduler.start()
    stack.wait_ready(scheduler, timeout=120)
    return stack


def test_an_executor_that_can_not_isolate_refuses_to_start(stack_factory: StackFactory) -> None:
    stack = _started_scheduler(stack_factory)
    before = _sandbox_folders()
    executor = stack.executor(run_as_uid=NO_USER_NAMESPACES)
    executor.start()
    deadline = time.monotonic() + 60
    while executor.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert executor.process is not None
    assert executor.process.returncode == REFUSED_EXIT_CODE, executor.log_tail()
    log = executor.log_path.read_text()
    assert "executor refuses to start" in log
    assert "EXECUTOR_SANDBOX=unsafe-none" in log
    # Nothing left behind by the refused start.
    assert _sandbox_folders() <= before


async def test_unsafe_none_runs_functions_warned_and_reported(
    stack_factory: StackFactory,
) -> None:
    stack = _started_scheduler(stack_factory, EXECUTOR_SANDBOX="unsafe-none")
    services = [stack.executor(run_as_uid=NO_USER_NAMESPACES), stack.notifier(), stack.gateway()]
    for service in services:
        service.start()
    for service in services:
        stack.wait_ready(service)
    async with httpx.AsyncClient(timeout=10) as client:
        health = (await client.get(stack.health_url("executor"))).json()
    assert health["sandbox"]["isolation"] == "unsafe-none"
    assert any("EXECUTOR_SANDBOX=unsafe-none" in warning for warning in health["warnings"])
    assert "EXECUTOR_SANDBOX=unsafe-none" in stack.services["executor"].log_path.read_text()
    async with admin_client_for(stack) as admin:
        document = await run_once_as_new_user(admin, stack.gateway_url)
    assert document["status"] == "COMPLETED", document["error"]

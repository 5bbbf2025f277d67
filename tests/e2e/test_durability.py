"""Nothing is lost: delayed work, restarts, crashed executors and schedulers, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest

from sinas_devstack.stack import Stack

from .conftest import admin_client_for
from .helpers import (
    FunctionFactory,
    enqueue,
    make_function_factory,
    query_one,
    wait_for_status,
)

SLEEPY_CODE = """
import time
def handler(input_data, context):
    time.sleep(input_data.get("sleep", 0))
    return {"slept": input_data.get("sleep", 0), "execution_id": context["execution_id"]}
"""

pytestmark = pytest.mark.slow


@pytest.fixture
async def isolated_admin(isolated_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(isolated_stack) as client:
        yield client


def _status(stack: Stack, execution_id: str) -> str:
    row = query_one(
        stack.config.database_url, "SELECT status FROM executions WHERE id = %s", execution_id
    )
    assert row is not None
    return str(row[0])


async def _wait_in_db(stack: Stack, execution_id: str, status: str, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.05)):
        if _status(stack, execution_id) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution_id} never became {status}")


async def test_delayed_execution_waits_until_due(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(SLEEPY_CODE)
    execution_id = await enqueue(admin, fn, input={}, delay_seconds=2)
    pending = (await admin.get(f"/executions/{execution_id}")).json()
    assert pending["status"] == "PENDING"
    assert pending["started_at"] is None

    document = await wait_for_status(admin, execution_id)

    assert document["status"] == "COMPLETED"
    created = datetime.fromisoformat(document["created_at"])
    started = datetime.fromisoformat(document["started_at"])
    assert started >= created + timedelta(seconds=2)


async def test_delayed_execution_survives_a_scheduler_restart(
    isolated_stack: Stack, isolated_admin: httpx.AsyncClient
) -> None:
    isolated_stack.start_all()
    fn = await make_function_factory(isolated_admin)(SLEEPY_CODE)
    execution_id = await enqueue(isolated_admin, fn, input={}, delay_seconds=3)
    scheduler = isolated_stack.services["scheduler"]
    scheduler.kill()
    await asyncio.sleep(4)
    assert _status(isolated_stack, execution_id) == "PENDING"

    scheduler.start()
    isolated_stack.wait_ready(scheduler)

    document = await wait_for_status(isolated_admin, execution_id)
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])


async def test_executor_killed_mid_run_is_redelivered_and_completes(
    isolated_stack: Stack, isolated_admin: httpx.AsyncClient
) -> None:
    isolated_stack.start_all()
    fn = await make_function_factory(isolated_admin)(SLEEPY_CODE)
    execution_id = await enqueue(isolated_admin, fn, input={"sleep": 3})
    await _wait_in_db(isolated_stack, execution_id, "RUNNING")

    executor = isolated_stack.services["executor"]
    executor.kill()
    executor.start()
    isolated_stack.wait_ready(executor)

    document = await wait_for_status(isolated_admin, execution_id)
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    assert document["attempts"] == 2


async def test_executor_lost_on_last_attempt_fails_the_execution(isolated_stack: Stack) -> None:
    isolated_stack.config.extra_env["EXECUTION_MAX_ATTEMPTS"] = "1"
    isolated_stack.start_all()
    async with admin_client_for(isolated_stack) as admin:
        fn = await make_function_factory(admin)(SLEEPY_CODE)
        execution_id = await enqueue(admin, fn, input={"sleep": 3})
        await _wait_in_db(isolated_stack, execution_id, "RUNNING")

        executor = isolated_stack.services["executor"]
        executor.kill()
        executor.start()

        document = await wait_for_status(admin, execution_id)
    assert document["status"] == "FAILED"
    assert "worker lost" in document["error"]


async def test_scheduler_killed_between_commit_and_publish_still_runs_the_job(
    isolated_stack: Stack, isolated_admin: httpx.AsyncClient
) -> None:
    api_only = isolated_stack.scheduler(SCHEDULER_DISPATCHER_ENABLED="false")
    api_only.start()
    isolated_stack.wait_ready(api_only, timeout=120)
    gateway = isolated_stack.gateway()
    gateway.start()
    isolated_stack.wait_ready(gateway)
    fn = await make_function_factory(isolated_admin)(SLEEPY_CODE)
    execution_id = await enqueue(isolated_admin, fn, input={})
    row = query_one(
        isolated_stack.config.database_url,
        "SELECT status, dispatched_at FROM executions WHERE id = %s",
        execution_id,
    )
    assert row == ("PENDING", None)

    api_only.kill()
    replacement = isolated_stack.scheduler()
    replacement.start()
    isolated_stack.wait_ready(replacement)
    # Only a dispatching scheduler creates the streams an executor may consume (the executor's
    # NATS user can't), so the executor starts once one is up.
    executor = isolated_stack.executor()
    executor.start()
    isolated_stack.wait_ready(executor)

    document = await wait_for_status(isolated_admin, execution_id)
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    assert document["attempts"] == 1


async def test_concurrent_enqueues_each_run_exactly_once(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(SLEEPY_CODE)

    ids = await asyncio.gather(*(enqueue(admin, fn, input={"i": i}) for i in range(200)))

    assert len(set(ids)) == 200
    documents = [await wait_for_status(admin, execution_id) for execution_id in ids]
    assert all(doc["status"] == "COMPLETED" for doc in documents)
    assert all(doc["attempts"] == 1 for doc in documents)
    assert [doc["output_data"]["execution_id"] for doc in documents] == list(ids)
    assert [doc["input_data"]["i"] for doc in documents] == list(range(200))

"""Concurrent execute requests: the gateway sends a caller's submits to the scheduler together
while its submit calls are busy, and still each request gets its own answer, attributed to its
caller, and each accepted execution runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sinas_devstack.pytest_plugin import StackFactory, admin_client_for
from sinas_devstack.stack import Stack

from .helpers import make_function_factory, make_user_factory, query_one, wait_for_status

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
REQUESTS_PER_CALLER = 60
SUBMIT_METHODS = (
    "/sinas.scheduler.v1.ExecutionService/SubmitExecution",
    "/sinas.scheduler.v1.ExecutionService/SubmitExecutions",
)


@pytest.fixture(scope="module")
def one_slot_stack(stack_factory: StackFactory) -> Stack:
    """One submit call at a time per caller (the default, set here so the test keeps its
    meaning): a caller's requests arriving meanwhile wait for it and go together."""
    built = stack_factory(GATEWAY_SUBMIT_CALLS_IN_FLIGHT="1")
    built.start_all()
    return built


@pytest.fixture
async def admin(one_slot_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(one_slot_stack) as client:
        yield client


async def submit_calls(stack: Stack) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.get(stack.metrics_url("scheduler"))
    calls = dict.fromkeys(SUBMIT_METHODS, 0.0)
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            method = sample.labels.get("method", "")
            if sample.name == "sinas_grpc_requests_total" and method in calls:
                calls[method] += sample.value
    return calls


async def test_concurrent_submits_each_get_their_own_answer(
    one_slot_stack: Stack, admin: httpx.AsyncClient
) -> None:
    fn = await make_function_factory(admin)(input_schema=SCHEMA)
    opened: list[httpx.AsyncClient] = []
    try:
        user = await make_user_factory(admin, one_slot_stack.gateway_url, opened)(
            ["sinas.functions/*/*.execute:own", "sinas.executions.read:own"]
        )
        before = await submit_calls(one_slot_stack)

        async def post(client: httpx.AsyncClient, n: int) -> httpx.Response:
            # Every third request breaks the input schema.
            body: dict[str, Any] = {"input": {"n": n} if n % 3 else {"m": n}}
            return await client.post(fn.async_path, json=body)

        callers = {"admin": admin, "user": user.client}
        replies = await asyncio.gather(
            *(post(client, n) for n in range(REQUESTS_PER_CALLER) for client in callers.values())
        )
        after = await submit_calls(one_slot_stack)
    finally:
        for client in opened:
            await client.aclose()

    accepted: dict[str, list[tuple[int, str]]] = {name: [] for name in callers}
    for index, reply in enumerate(replies):
        n, name = index // len(callers), list(callers)[index % len(callers)]
        if n % 3:
            assert reply.status_code == 202, reply.text
            accepted[name].append((n, reply.json()["execution_id"]))
        else:
            assert reply.status_code == 422, reply.text
            assert reply.json()["reason"] == "schema_violation"
            assert ["body", "input", "n"] in [e["loc"] for e in reply.json()["detail"]]
    ids = [execution_id for pairs in accepted.values() for _, execution_id in pairs]
    assert (
        len(set(ids))
        == len(ids)
        == len(callers) * sum(1 for n in range(REQUESTS_PER_CALLER) if n % 3)
    )
    # Fewer calls than requests reached the scheduler: requests went together.
    calls = sum(after[m] - before[m] for m in SUBMIT_METHODS)
    assert 0 < calls < len(replies)
    assert after[SUBMIT_METHODS[1]] > before[SUBMIT_METHODS[1]]

    user_id = (await admin.get("/auth/me")).json()["id"]
    for name, owner in (("admin", user_id), ("user", user.id)):
        for n, execution_id in accepted[name]:
            done = await wait_for_status(admin, execution_id)
            assert done["status"] == "COMPLETED", done
            assert done["input_data"] == {"n": n}
            stored = query_one(
                one_slot_stack.config.database_url,
                "SELECT user_id FROM executions WHERE id = %s",
                execution_id,
            )
            assert stored == (owner,)

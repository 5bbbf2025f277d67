"""Idempotent submits end to end: a retry with the same `Idempotency-Key` and body answers the
original, another body is a 409, concurrent retries with one key make exactly one execution."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from sinas_devstack.stack import Stack

from .helpers import CreatedFunction, FunctionFactory, UserFactory, query_one, wait_for_status

RUNNER = "sinas.functions/*/*.execute:own"


def new_key() -> str:
    return f"retry-{uuid.uuid4().hex}"


def executions_of(stack: Stack, fn: CreatedFunction) -> int:
    row = query_one(
        stack.config.database_url,
        "SELECT count(*) FROM executions WHERE namespace = %s AND name = %s",
        fn.namespace,
        fn.name,
    )
    assert row is not None
    return int(row[0])


async def post_async(
    client: httpx.AsyncClient, fn: CreatedFunction, key: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(fn.async_path, json=body, headers={"Idempotency-Key": key})


async def test_a_retried_enqueue_answers_the_original_and_runs_once(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    key = new_key()
    body = {"input": {"order": 4711, "big": 2**60}, "trigger_id": "checkout"}
    first = await post_async(admin, fn, key, body)
    assert first.status_code == 202, first.text
    again = await post_async(admin, fn, key, body)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    execution_id = first.json()["execution_id"]
    done = await wait_for_status(admin, execution_id)
    assert done["status"] == "COMPLETED"
    # A retry after the run still answers the original id and starts nothing.
    late = await post_async(admin, fn, key, body)
    assert late.json() == first.json()
    assert executions_of(stack, fn) == 1


async def test_the_same_key_with_another_body_is_a_409(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    key = new_key()
    assert (await post_async(admin, fn, key, {"input": {"n": 1}})).status_code == 202
    reply = await post_async(admin, fn, key, {"input": {"n": 2}})
    assert reply.status_code == 409
    assert reply.json() == {
        "detail": "Idempotency-Key was already used for a different request",
        "reason": "already_exists",
    }
    assert executions_of(stack, fn) == 1


async def test_concurrent_retries_with_one_key_make_one_execution(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    key = new_key()
    replies = await asyncio.gather(
        *(post_async(admin, fn, key, {"input": {"n": 1}}) for _ in range(25))
    )
    assert {reply.status_code for reply in replies} == {202}
    assert len({reply.json()["execution_id"] for reply in replies}) == 1
    assert executions_of(stack, fn) == 1


async def test_keys_are_per_user(
    admin: httpx.AsyncClient,
    create_function: FunctionFactory,
    create_user: UserFactory,
    stack: Stack,
) -> None:
    fn = await create_function()
    user = await create_user([RUNNER])
    key = new_key()
    mine = await post_async(admin, fn, key, {"input": {}})
    theirs = await post_async(user.client, fn, key, {"input": {}})
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["execution_id"] != theirs.json()["execution_id"]
    assert executions_of(stack, fn) == 2


async def test_an_over_long_key_is_a_400(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    reply = await post_async(admin, fn, "k" * 256, {"input": {}})
    assert reply.status_code == 400
    assert "Idempotency-Key" in reply.json()["detail"]
    assert executions_of(stack, fn) == 0


def batch_path(fn: CreatedFunction) -> str:
    return f"/functions/{fn.namespace}/{fn.name}/execute/batch"


async def post_batch(
    client: httpx.AsyncClient, fn: CreatedFunction, key: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(batch_path(fn), json=body, headers={"Idempotency-Key": key})


def batches_of(stack: Stack, fn: CreatedFunction) -> int:
    row = query_one(
        stack.config.database_url,
        "SELECT count(*) FROM batches WHERE namespace = %s AND name = %s",
        fn.namespace,
        fn.name,
    )
    assert row is not None
    return int(row[0])


async def wait_for_batch(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60.0
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = await client.get(f"/batches/{batch_id}")
        assert reply.status_code == 200, reply.text
        document = reply.json()
        if document["finished_at"] is not None:
            return document
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch never finished: {document}")


async def test_a_retried_batch_answers_the_original_and_runs_each_child_once(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    key = new_key()
    body = {"inputs": [{"i": i} for i in range(20)], "trigger_id_prefix": "nightly"}
    first = await post_batch(admin, fn, key, body)
    assert first.status_code == 202, first.text
    again = await post_batch(admin, fn, key, body)
    assert again.status_code == 202, again.text
    assert again.json() == first.json()
    document = await wait_for_batch(admin, first.json()["batch_id"])
    assert (document["status"], document["total"], document["completed"]) == (
        "completed",
        20,
        20,
    )
    late = await post_batch(admin, fn, key, body)
    assert late.json() == first.json()
    assert (batches_of(stack, fn), executions_of(stack, fn)) == (1, 20)
    row = query_one(
        stack.config.database_url,
        "SELECT max(attempts) FROM executions WHERE batch_id = %s",
        first.json()["batch_id"],
    )
    assert row == (1,)


async def test_the_same_key_with_another_batch_is_a_409(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    key = new_key()
    assert (await post_batch(admin, fn, key, {"inputs": [{"i": 1}]})).status_code == 202
    reply = await post_batch(admin, fn, key, {"inputs": [{"i": 1}, {"i": 2}]})
    assert reply.status_code == 409
    assert reply.json()["reason"] == "already_exists"
    # Nor can the key be reused for a single enqueue.
    assert (await post_async(admin, fn, key, {"input": {"i": 1}})).status_code == 409
    assert (batches_of(stack, fn), executions_of(stack, fn)) == (1, 1)


async def test_concurrent_batch_retries_with_one_key_make_one_batch(
    admin: httpx.AsyncClient, create_function: FunctionFactory, stack: Stack
) -> None:
    fn = await create_function()
    key = new_key()
    body = {"inputs": [{"i": i} for i in range(100)]}
    replies = await asyncio.gather(*(post_batch(admin, fn, key, body) for _ in range(10)))
    assert {reply.status_code for reply in replies} == {202}
    assert len({reply.json()["batch_id"] for reply in replies}) == 1
    assert len({tuple(reply.json()["execution_ids"]) for reply in replies}) == 1
    assert (batches_of(stack, fn), executions_of(stack, fn)) == (1, 100)

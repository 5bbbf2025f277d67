"""Cancelling batches end to end: nothing cancelled ever runs, and exactly one summary callback
goes out, after the last running child when children were running."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import CreatedFunction, make_function_factory, wait_for_status

SLOW = """
import time
def handler(input_data, context):
    time.sleep(input_data.get("sleep", 0))
    return {"i": input_data.get("i")}
"""


@pytest.fixture(scope="module")
def cancel_stack(
    stack_factory: StackFactory, certificates: ReceiverCertificates, receiver: CallbackReceiver
) -> Stack:
    built = stack_factory(
        CALLBACK_URL_HOSTS="localhost",
        CALLBACK_URL_PORTS=str(receiver.port),
        CALLBACK_ALLOW_PRIVATE_NETWORKS="1",
        CALLBACK_CA_FILE=str(certificates.ca_file),
        CALLBACK_SIGNING_SECRET="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        EXECUTOR_CONCURRENCY="2",
    )
    built.start_all()
    return built


@pytest.fixture
async def admin(cancel_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(cancel_stack) as client:
        yield client


async def submit_batch(
    admin: httpx.AsyncClient, fn: CreatedFunction, inputs: list[Any], **body: Any
) -> dict[str, Any]:
    reply = await admin.post(
        f"/functions/{fn.namespace}/{fn.name}/execute/batch", json={"inputs": inputs, **body}
    )
    assert reply.status_code == 202, reply.text
    return dict(reply.json())


async def batch_finished(admin: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120.0
    while True:
        document = dict((await admin.get(f"/batches/{batch_id}")).json())
        if document["finished_at"] is not None:
            return document
        assert time.monotonic() < deadline, document
        await asyncio.sleep(0.1)


async def summaries(receiver: CallbackReceiver, path: str, *, settle: float = 2.0) -> list[Any]:
    """The summary POSTs to `path`, once one arrived and `settle` seconds brought no other."""
    deadline = time.monotonic() + 60.0
    while not receiver.requests_to(path):
        assert time.monotonic() < deadline, f"no summary callback to {path}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    return [json.loads(request.body) for request in receiver.requests_to(path)]


async def test_cancel_of_a_delayed_batch(
    admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    fn = await make_function_factory(admin)(SLOW)
    path = f"/summary-{uuid.uuid4().hex[:8]}"
    batch = await submit_batch(
        admin,
        fn,
        [{"i": i} for i in range(20)],
        delay_seconds=3600,
        batch_callback_url=receiver.url(path),
    )
    reply = await admin.post(f"/batches/{batch['batch_id']}/cancel")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "batch_id": batch["batch_id"],
        "status": "cancelled",
        "cancelled_children": 20,
    }
    document = await batch_finished(admin, batch["batch_id"])
    assert (document["status"], document["cancelled"], document["completed"]) == (
        "cancelled",
        20,
        0,
    )
    assert document["cancelled_at"] is not None
    [summary] = await summaries(receiver, path)
    assert (summary["status"], summary["cancelled"], summary["total"]) == ("cancelled", 20, 20)
    for execution_id in batch["execution_ids"]:
        child = (await admin.get(f"/executions/{execution_id}")).json()
        assert child["status"] == "CANCELLED" and child["started_at"] is None
    again = await admin.post(f"/batches/{batch['batch_id']}/cancel")
    assert again.json()["cancelled_children"] == 0


async def test_cancel_while_children_run(
    admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    fn = await make_function_factory(admin)(SLOW)
    path = f"/summary-{uuid.uuid4().hex[:8]}"
    batch = await submit_batch(
        admin,
        fn,
        [{"i": i, "sleep": 3} for i in range(10)],
        batch_callback_url=receiver.url(path),
    )
    ids = batch["execution_ids"]
    # The executor runs two at a time: wait until the first children run.
    await wait_for_status(admin, ids[0], {"RUNNING", "COMPLETED"})
    reply = await admin.post(f"/batches/{batch['batch_id']}/cancel")
    assert reply.status_code == 200, reply.text
    cancelled = reply.json()["cancelled_children"]
    assert 1 <= cancelled <= 9
    assert reply.json()["status"] == "running"

    document = await batch_finished(admin, batch["batch_id"])
    children = [(await admin.get(f"/executions/{i}")).json() for i in ids]
    ran = [c for c in children if c["status"] == "COMPLETED"]
    never = [c for c in children if c["status"] == "CANCELLED"]
    assert len(ran) + len(never) == 10 and len(never) == cancelled
    assert all(c["started_at"] is None for c in never)
    assert (document["status"], document["completed"], document["cancelled"]) == (
        "cancelled",
        len(ran),
        cancelled,
    )
    [summary] = await summaries(receiver, path)
    assert (summary["status"], summary["completed"], summary["cancelled"]) == (
        "cancelled",
        len(ran),
        cancelled,
    )
    # Sent after the last running child ended.
    last_end = max(c["completed_at"] for c in ran)
    assert document["finished_at"] >= last_end

"""Batches end to end: exact aggregates, ordered drill-in, one summary callback per batch, and
no orphan when the scheduler dies in the middle of a 1,000-child submit."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sinas_devstack.callback_receiver import CallbackReceiver, ReceivedRequest, ReceiverCertificates
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import CreatedFunction, make_function_factory, query_one
from .test_callbacks import callback_env, verify_signature

FLAKY_CODE = """
def handler(input_data, context):
    if input_data.get("fail"):
        raise ValueError("asked to fail")
    return {"n": input_data["n"], "batch_id": context["batch_id"]}
"""

INPUT_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "fail": {"type": "boolean"}},
    "required": ["n"],
}


@pytest.fixture(scope="module")
def batch_stack(
    stack_factory: StackFactory, certificates: ReceiverCertificates, receiver: CallbackReceiver
) -> Stack:
    built = stack_factory(**callback_env(certificates, receiver.port))
    built.start_all()
    return built


@pytest.fixture
async def admin(batch_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(batch_stack) as client:
        yield client


def batch_path(fn: CreatedFunction) -> str:
    return f"/functions/{fn.namespace}/{fn.name}/execute/batch"


async def submit(client: httpx.AsyncClient, fn: CreatedFunction, **body: Any) -> dict[str, Any]:
    reply = await client.post(batch_path(fn), json=body)
    assert reply.status_code == 202, reply.text
    document: dict[str, Any] = reply.json()
    assert document["status"] == "queued"
    return document


async def finished(
    client: httpx.AsyncClient, batch_id: str, *, timeout: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get(f"/batches/{batch_id}")
        # A restarted scheduler is reachable again once the gateway's channel reconnects.
        assert reply.status_code in (200, 503), reply.text
        document: dict[str, Any] = reply.json()
        if reply.status_code == 200 and document["finished_at"] is not None:
            return document
        assert time.monotonic() < deadline, document
        await asyncio.sleep(0.1)


async def posts_to(
    receiver: CallbackReceiver, prefix: str, count: int, *, timeout: float = 120.0
) -> list[ReceivedRequest]:
    deadline = time.monotonic() + timeout
    while len(receiver.requests_to(prefix)) < count:
        assert time.monotonic() < deadline, f"expected {count} POSTs to {prefix}"
        await asyncio.sleep(0.05)
    return receiver.requests_to(prefix)


async def children(client: httpx.AsyncClient, batch_id: str, **query: Any) -> list[dict[str, Any]]:
    """Every child, paging by next_offset."""
    found: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        reply = await client.get(
            f"/batches/{batch_id}/executions", params={"limit": 37, "offset": offset, **query}
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()
        found.extend(page["executions"])
        offset = page["next_offset"]
    return found


async def test_a_100_child_batch_completes_with_one_summary_and_100_child_callbacks(
    admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    fn = await make_function_factory(admin)(FLAKY_CODE, input_schema=INPUT_SCHEMA)
    run = uuid.uuid4().hex
    submitted = await submit(
        admin,
        fn,
        inputs=[{"n": i} for i in range(100)],
        trigger_id_prefix="nightly",
        callback_url=receiver.url(f"/child/{run}"),
        batch_callback_url=receiver.url(f"/batch/{run}"),
    )
    assert submitted["total"] == 100
    assert len(set(submitted["execution_ids"])) == 100
    batch_id = submitted["batch_id"]

    document = await finished(admin, batch_id)
    assert document["status"] == "completed"
    assert (document["total"], document["completed"], document["failed"]) == (100, 100, 0)
    assert (document["queued"], document["running"], document["cancelled"]) == (0, 0, 0)
    assert document["target"] == {"namespace": fn.namespace, "name": fn.name}
    assert document["trigger_id_prefix"] == "nightly"

    listed = await children(admin, batch_id)
    assert [c["execution_id"] for c in listed] == submitted["execution_ids"]
    assert [c["index"] for c in listed] == list(range(100))
    assert [c["trigger_id"] for c in listed] == [f"nightly:{i}" for i in range(100)]
    assert {c["status"] for c in listed} == {"completed"}
    output = (await admin.get(f"/executions/{listed[7]['execution_id']}")).json()
    assert output["output_data"] == {"n": 7, "batch_id": batch_id}

    (summary,) = await posts_to(receiver, f"/batch/{run}", 1)
    verify_signature(summary)
    body = json.loads(summary.body)
    assert body["batch_id"] == batch_id
    assert (body["status"], body["total"], body["completed"]) == ("completed", 100, 100)
    assert (body["failed"], body["cancelled"]) == (0, 0)
    child_posts = await posts_to(receiver, f"/child/{run}", 100)
    assert sorted(json.loads(p.body)["execution_id"] for p in child_posts) == sorted(
        submitted["execution_ids"]
    )

    settled = await finished(admin, batch_id)
    deadline = time.monotonic() + 60
    while settled["batch_callback_status"] != "sent":
        assert time.monotonic() < deadline, settled
        await asyncio.sleep(0.1)
        settled = (await admin.get(f"/batches/{batch_id}")).json()
    assert settled["batch_callback_response_code"] == 200
    await asyncio.sleep(1.0)
    assert len(receiver.requests_to(f"/batch/{run}")) == 1, "one summary, never two"


@pytest.mark.parametrize(("failures", "status"), [(3, "partial"), (30, "failed")])
async def test_failures_end_partial_or_failed(
    admin: httpx.AsyncClient, receiver: CallbackReceiver, failures: int, status: str
) -> None:
    fn = await make_function_factory(admin)(FLAKY_CODE, input_schema=INPUT_SCHEMA)
    run = uuid.uuid4().hex
    failing = set(random.sample(range(30), failures))
    submitted = await submit(
        admin,
        fn,
        inputs=[{"n": i, "fail": i in failing} for i in range(30)],
        batch_callback_url=receiver.url(f"/batch/{run}"),
    )
    document = await finished(admin, submitted["batch_id"])
    assert document["status"] == status
    assert (document["completed"], document["failed"]) == (30 - failures, failures)

    failed = await children(admin, submitted["batch_id"], status="FAILED")
    assert [c["index"] for c in failed] == sorted(failing)
    assert all("asked to fail" in c["error"] for c in failed)
    assert all(c["status"] == "failed" for c in failed)
    lower = await children(admin, submitted["batch_id"], status="failed")
    assert [c["execution_id"] for c in lower] == [c["execution_id"] for c in failed]

    (summary,) = await posts_to(receiver, f"/batch/{run}", 1)
    body = json.loads(summary.body)
    assert (body["status"], body["failed"], body["completed"]) == (
        status,
        failures,
        30 - failures,
    )


async def test_validation_limits_and_visibility(
    admin: httpx.AsyncClient, batch_stack: Stack
) -> None:
    fn = await make_function_factory(admin)(FLAKY_CODE, input_schema=INPUT_SCHEMA)
    before = query_one(batch_stack.config.database_url, "SELECT count(*) FROM batches")

    invalid = await admin.post(batch_path(fn), json={"inputs": [{"n": 1}, {"n": "x"}]})
    assert invalid.status_code == 422
    assert ["body", "inputs", 1, "n"] in [d["loc"] for d in invalid.json()["detail"]]
    empty = await admin.post(batch_path(fn), json={"inputs": []})
    assert empty.status_code == 422
    too_many = await admin.post(batch_path(fn), json={"inputs": [{"n": 1}] * 1001})
    assert too_many.status_code == 413
    assert "MAX_BATCH_SIZE=1000" in too_many.json()["detail"]
    assert query_one(batch_stack.config.database_url, "SELECT count(*) FROM batches") == before

    submitted = await submit(admin, fn, inputs=[{"n": 1}])
    async with httpx.AsyncClient(base_url=batch_stack.gateway_url) as anonymous:
        assert (await anonymous.get(f"/batches/{submitted['batch_id']}")).status_code == 401
    role = f"role_{uuid.uuid4().hex[:8]}"
    await admin.post(
        "/api/v1/roles",
        json={"name": role, "permissions": ["sinas.executions.read:own"]},
    )
    user = (
        await admin.post(
            "/api/v1/users",
            json={"email": f"u-{uuid.uuid4().hex[:8]}@example.com", "roles": [role]},
        )
    ).json()
    key = (await admin.post("/api/v1/api-keys", json={"name": "t", "user_id": user["id"]})).json()
    async with httpx.AsyncClient(
        base_url=batch_stack.gateway_url, headers={"X-API-Key": key["key"]}
    ) as other:
        for path in ("", "/executions"):
            reply = await other.get(f"/batches/{submitted['batch_id']}{path}")
            assert reply.status_code == 404, reply.text
        assert (await other.get("/batches")).json() == []


async def test_concurrent_last_children_fire_one_summary_each(
    admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    fn = await make_function_factory(admin)(FLAKY_CODE, input_schema=INPUT_SCHEMA)
    run = uuid.uuid4().hex
    submitted = await asyncio.gather(
        *(
            submit(
                admin,
                fn,
                inputs=[{"n": 1}, {"n": 2}],
                batch_callback_url=receiver.url(f"/pair/{run}/{i}"),
            )
            for i in range(25)
        )
    )
    for document in submitted:
        assert (await finished(admin, document["batch_id"]))["status"] == "completed"
    posts = await posts_to(receiver, f"/pair/{run}/", 25)
    await asyncio.sleep(1.0)
    posts = receiver.requests_to(f"/pair/{run}/")
    assert sorted(json.loads(p.body)["batch_id"] for p in posts) == sorted(
        d["batch_id"] for d in submitted
    )


# --- a scheduler killed mid-submit ------------------------------------------------------------


@pytest.fixture
async def isolated_admin(isolated_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(isolated_stack) as client:
        yield client


async def test_killing_the_scheduler_mid_submit_leaves_no_orphan(
    isolated_stack: Stack, isolated_admin: httpx.AsyncClient
) -> None:
    isolated_stack.start_all()
    fn = await make_function_factory(isolated_admin)(FLAKY_CODE, input_schema=INPUT_SCHEMA)
    inputs = [{"n": i} for i in range(1000)]
    scheduler = isolated_stack.services["scheduler"]
    accepted: list[str] = []
    rng = random.Random()
    for _ in range(6):
        request = asyncio.create_task(isolated_admin.post(batch_path(fn), json={"inputs": inputs}))
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        scheduler.kill()
        try:
            reply = await request
        except httpx.HTTPError:
            reply = None
        if reply is not None and reply.status_code == 202:
            accepted.append(reply.json()["batch_id"])
        else:
            assert reply is None or reply.status_code >= 500, reply.text
        scheduler.start()
        isolated_stack.wait_ready(scheduler)

    database = isolated_stack.config.database_url
    row = query_one(database, "SELECT array_agg(id) FROM batches")
    assert row is not None
    stored = set(row[0] or [])
    assert set(accepted) <= stored, "every accepted batch was stored"
    for batch_id in stored:
        document = await finished(isolated_admin, batch_id, timeout=300)
        assert (document["status"], document["completed"]) == ("completed", 1000)
        assert {c["status"] for c in await children(isolated_admin, batch_id)} == {"completed"}
    orphans = query_one(
        database,
        "SELECT count(*) FROM executions e WHERE e.batch_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = e.batch_id)",
    )
    assert orphans == (0,)
    assert query_one(database, "SELECT count(*) FROM executions") == (1000 * len(stored),)

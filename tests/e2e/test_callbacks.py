"""Callbacks end to end: one signed POST per finished execution, to real local HTTPS receivers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from sinas_devstack.callback_receiver import (
    CallbackReceiver,
    ReceivedRequest,
    ReceiverCertificates,
    StallingListener,
)
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import CreatedFunction, enqueue, make_function_factory

SECRET_KEY = secrets.token_bytes(32)
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()


@pytest.fixture(scope="module")
def stalling() -> Iterator[StallingListener]:
    running = StallingListener().start()
    yield running
    running.stop()


def callback_env(certificates: ReceiverCertificates, *ports: int, **extra: str) -> dict[str, str]:
    return {
        "CALLBACK_URL_HOSTS": "localhost",
        "CALLBACK_URL_PORTS": ",".join(str(p) for p in ports),
        "CALLBACK_ALLOW_PRIVATE_NETWORKS": "1",
        "CALLBACK_CA_FILE": str(certificates.ca_file),
        "CALLBACK_SIGNING_SECRET": SECRET,
        **extra,
    }


@pytest.fixture(scope="module")
def callback_stack(
    stack_factory: StackFactory, certificates: ReceiverCertificates, receiver: CallbackReceiver
) -> Stack:
    built = stack_factory(**callback_env(certificates, receiver.port))
    built.start_all()
    return built


@pytest.fixture
async def admin(callback_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(callback_stack) as client:
        yield client


async def function(admin: httpx.AsyncClient, code: str, **kwargs: Any) -> CreatedFunction:
    return await make_function_factory(admin)(code, **kwargs)


async def posts_to(
    receiver: CallbackReceiver, prefix: str, count: int = 1, *, timeout: float = 60.0
) -> list[ReceivedRequest]:
    deadline = time.monotonic() + timeout
    while len(receiver.requests_to(prefix)) < count:
        assert time.monotonic() < deadline, f"expected {count} POSTs to {prefix}"
        await asyncio.sleep(0.05)
    return receiver.requests_to(prefix)


async def callback_settled(
    client: httpx.AsyncClient, execution_id: str, *, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = (await client.get(f"/executions/{execution_id}")).json()
        if document["callback_status"] in ("sent", "failed"):
            return document
        assert time.monotonic() < deadline, document
        await asyncio.sleep(0.1)


def verify_signature(request: ReceivedRequest) -> None:
    headers = request.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(SECRET_KEY, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


@pytest.mark.parametrize(
    ("code", "timeout", "status", "has_result"),
    [
        ("def handler(input_data, context):\n    return {'n': 2}\n", None, "success", True),
        (
            "def handler(input_data, context):\n    raise ValueError('boom')\n",
            None,
            "failure",
            False,
        ),
        (
            "import time\ndef handler(input_data, context):\n    time.sleep(30)\n",
            1,
            "timeout",
            False,
        ),
    ],
)
async def test_each_outcome_posts_once_signed_with_its_payload(
    admin: httpx.AsyncClient,
    callback_stack: Stack,
    receiver: CallbackReceiver,
    code: str,
    timeout: int | None,
    status: str,
    has_result: bool,
) -> None:
    fn = await function(admin, code, timeout=timeout)
    path = f"/ok/{uuid.uuid4()}"
    execution_id = await enqueue(admin, fn, callback_url=receiver.url(path))
    [request] = await posts_to(receiver, path)

    payload = json.loads(request.body)
    assert payload["execution_id"] == execution_id
    assert payload["function"] == {"namespace": fn.namespace, "name": fn.name}
    assert payload["status"] == status
    assert (payload["result"] == {"n": 2}) is has_result
    assert (payload["error"] is None) is has_result
    assert payload["started_at"].endswith("+00:00")
    assert payload["finished_at"].endswith("+00:00")
    assert isinstance(payload["duration_ms"], int)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("sinas-runtime-notifier/")
    assert request.headers["webhook-id"] == f"msg_{execution_id}"
    verify_signature(request)

    document = await callback_settled(admin, execution_id)
    assert (document["callback_status"], document["callback_response_code"]) == ("sent", 200)
    assert document["callback_attempted_at"] is not None

    token = request.headers["authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=callback_stack.gateway_url, timeout=30) as anonymous:
        bearer = {"Authorization": f"Bearer {token}"}
        me = await anonymous.get("/auth/me", headers=bearer)
        assert me.status_code == 200, me.text
        refused = await anonymous.get(f"/executions/{execution_id}", headers=bearer)
        assert refused.status_code == 401
    await asyncio.sleep(0.5)
    assert len(receiver.requests_to(path)) == 1


@pytest.mark.parametrize(
    ("route", "code", "error"),
    [
        ("status/500", 500, "HTTP 500"),
        ("status/302", 302, "HTTP 302"),
        ("hang/15", None, "timed out"),
    ],
)
async def test_unsuccessful_answers_get_one_attempt(
    admin: httpx.AsyncClient, receiver: CallbackReceiver, route: str, code: int | None, error: str
) -> None:
    fn = await function(admin, "def handler(input_data, context):\n    return {'ok': True}\n")
    path = f"/{route}/{uuid.uuid4()}"
    execution_id = await enqueue(admin, fn, callback_url=receiver.url(path))
    await posts_to(receiver, path)
    if route.startswith("hang"):
        # The execution's own status never waits on its callback.
        document = (await admin.get(f"/executions/{execution_id}")).json()
        assert document["status"] == "COMPLETED"
        assert document["callback_status"] == "in_flight"
    document = await callback_settled(admin, execution_id)
    assert document["callback_status"] == "failed"
    assert document["callback_response_code"] == code
    assert error in document["callback_error"]
    assert len(receiver.requests_to(path)) == 1
    assert receiver.requests_to("/elsewhere") == []


async def test_rejected_urls_are_400_at_submit(
    admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    fn = await function(admin, "def handler(input_data, context):\n    return {'ok': True}\n")
    for url in [
        receiver.url("/x").replace("https://", "http://"),
        f"https://user:pw@localhost:{receiver.port}/x",
        "https:///x",
        "https://localhost:1/x",
        f"https://example.com:{receiver.port}/x",
    ]:
        reply = await admin.post(fn.async_path, json={"input": {}, "callback_url": url})
        assert reply.status_code == 400, (url, reply.text)


async def test_callbacks_disabled_and_private_addresses_are_400(
    stack_factory: StackFactory,
) -> None:
    strict = stack_factory(CALLBACK_URL_HOSTS="*", CALLBACK_SIGNING_SECRET=SECRET)
    strict.start_all()
    async with admin_client_for(strict) as admin:
        fn = await function(admin, "def handler(input_data, context):\n    return {'ok': True}\n")
        for url in [
            "https://localhost/x",
            "https://127.0.0.1/x",
            "https://2130706433/x",
            "https://0x7f.1/x",
            "https://0177.0.0.1/x",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/x",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[64:ff9b::7f00:1]/x",
        ]:
            reply = await admin.post(fn.async_path, json={"input": {}, "callback_url": url})
            assert reply.status_code == 400, (url, reply.text)
    disabled = stack_factory()
    disabled.start_all()
    async with admin_client_for(disabled) as admin:
        fn = await function(admin, "def handler(input_data, context):\n    return {'ok': True}\n")
        reply = await admin.post(
            fn.async_path, json={"input": {}, "callback_url": "https://example.com/x"}
        )
        assert reply.status_code == 400
        assert "not enabled" in reply.text


@pytest.mark.slow
async def test_notifier_killed_between_claim_and_post_never_posts_twice(
    stack_factory: StackFactory,
    certificates: ReceiverCertificates,
    stalling: StallingListener,
) -> None:
    stack = stack_factory(
        **callback_env(
            certificates,
            stalling.port,
            CALLBACK_CLAIM_TIMEOUT_SECONDS="3",
            CALLBACK_TIMEOUT_SECONDS="120",
        )
    )
    stack.start_all()
    async with admin_client_for(stack) as admin:
        fn = await function(admin, "def handler(input_data, context):\n    return {'ok': True}\n")
        before = stalling.connections
        execution_id = await enqueue(admin, fn, callback_url=f"https://localhost:{stalling.port}/x")
        deadline = time.monotonic() + 60
        while stalling.connections == before:
            assert time.monotonic() < deadline, "the notifier never connected"
            await asyncio.sleep(0.05)
        stack.services["notifier"].kill()
        restarted = stack.notifier()
        restarted.start()
        stack.wait_ready(restarted)
        document = await callback_settled(admin, execution_id, timeout=90)
        assert document["status"] == "COMPLETED"
        assert document["callback_status"] == "failed"
        assert document["callback_response_code"] is None
        assert stalling.connections == before + 1


@pytest.mark.slow
async def test_a_thousand_callbacks_arrive_once_each(
    admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    fn = await function(admin, "def handler(input_data, context):\n    return {'ok': True}\n")
    run = f"/ok/{uuid.uuid4()}"

    async def submit(index: int) -> str:
        return await enqueue(admin, fn, callback_url=receiver.url(f"{run}/{index}"))

    ids: list[str] = []
    for start in range(0, 1000, 50):
        ids += await asyncio.gather(*(submit(i) for i in range(start, start + 50)))
    posts = await posts_to(receiver, run, 1000, timeout=90)
    await asyncio.sleep(1)
    posts = receiver.requests_to(run)
    targets = [p.target for p in posts]
    assert len(targets) == 1000
    assert len(set(targets)) == 1000
    assert {json.loads(p.body)["execution_id"] for p in posts} == set(ids)

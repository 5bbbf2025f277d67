"""Service logs carry ids, never credentials: after jobs that succeed, fail, call the API with
their token and send a callback, no log holds a key, token, password or the encryption key."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import stat
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from sinas_devstack.callback_receiver import (
    CallbackReceiver,
    ReceivedRequest,
    ReceiverCertificates,
)
from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import (
    CreatedFunction,
    enqueue,
    make_function_factory,
    make_user_factory,
    wait_for_status,
)

SIGNING_KEY = secrets.token_bytes(32)
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
PROVIDER_KEY = "sk-provider-" + secrets.token_urlsafe(24)
# Any JWT (header, payload, signature), and any API key of ours or a provider's.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
API_KEY = re.compile(r"sk-[A-Za-z0-9_-]{16,}")

# Uses its token on the API (who am I, and a child run), hands it back, and fails with it in
# its error: all of that is the user's own data, none of it log material.
TOKEN_CODE = """
import json, urllib.request

def call(context, path, body=None):
    request = urllib.request.Request(
        context["api_url"] + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + context["access_token"],
                 "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())

def handler(input_data, context):
    me = call(context, "/auth/me")
    if input_data.get("child_path"):
        call(context, input_data["child_path"], {"input": {}})
    if input_data.get("fail"):
        raise RuntimeError("refusing with " + context["access_token"])
    return {"token": context["access_token"], "me": me["id"]}
"""


@pytest.fixture(scope="module")
def logged_stack(
    stack_factory: StackFactory, certificates: ReceiverCertificates, receiver: CallbackReceiver
) -> Stack:
    built = stack_factory(
        # The most a service ever writes.
        LOG_LEVEL="DEBUG",
        CALLBACK_URL_HOSTS="localhost",
        CALLBACK_URL_PORTS=str(receiver.port),
        CALLBACK_ALLOW_PRIVATE_NETWORKS="1",
        CALLBACK_CA_FILE=str(certificates.ca_file),
        CALLBACK_SIGNING_SECRET=SIGNING_SECRET,
    )
    built.start_all()
    return built


@pytest.fixture
async def admin(logged_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client_for(logged_stack) as client:
        yield client


async def test_no_log_holds_a_credential(
    logged_stack: Stack, admin: httpx.AsyncClient, receiver: CallbackReceiver
) -> None:
    create = make_function_factory(admin)
    fn = await create(TOKEN_CODE)
    child = await create()
    opened: list[httpx.AsyncClient] = []
    try:
        user = await make_user_factory(admin, logged_stack.gateway_url, opened)(
            [
                f"sinas.functions/{fn.namespace}/{fn.name}.execute:own",
                f"sinas.functions/{child.namespace}/{child.name}.execute:own",
                "sinas.executions.read:own",
            ]
        )
        await _run_jobs(logged_stack, admin, receiver, user.client, user.key, fn, child)
    finally:
        for client in opened:
            await client.aclose()


async def _run_jobs(
    stack: Stack,
    admin: httpx.AsyncClient,
    receiver: CallbackReceiver,
    client: httpx.AsyncClient,
    user_key: str,
    fn: CreatedFunction,
    child: CreatedFunction,
) -> None:
    known: dict[str, str] = {"the admin key": stack.config.admin_key, "a user's key": user_key}
    reply = await admin.post(
        "/api/v1/llm-providers",
        json={
            "name": f"p_{uuid.uuid4().hex[:8]}",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": PROVIDER_KEY,
            "default_model": "m",
        },
    )
    assert reply.status_code == 201, reply.text
    ok = await wait_for_status(
        client, await enqueue(client, fn, input={"child_path": child.async_path})
    )
    assert ok["status"] == "COMPLETED", ok
    known["an execution token"] = ok["output_data"]["token"]
    failed = await wait_for_status(client, await enqueue(client, fn, input={"fail": True}))
    assert failed["status"] == "FAILED", failed
    path = f"/logs-{uuid.uuid4().hex[:8]}"
    called = await wait_for_status(admin, await enqueue(admin, fn, callback_url=receiver.url(path)))
    assert called["status"] == "COMPLETED", called
    [delivery] = await _received(receiver, path)
    known["a callback token"] = delivery.headers["authorization"].removeprefix("Bearer ")
    # Refused credentials are not logged either.
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        for wrong in (
            "sk-" + secrets.token_urlsafe(32),
            known["an execution token"][:-6] + "AAAAAA",
        ):
            known[f"a refused credential {wrong[:6]}"] = wrong
            reply = await anonymous.get("/auth/me", headers={"Authorization": f"Bearer {wrong}"})
            assert reply.status_code == 401

    config = stack.config
    known["the encryption key"] = config.encryption_key
    known["the database password"] = urlsplit(config.database_url.split("?")[0]).password or ""
    known["the callback signing secret"] = SIGNING_SECRET.removeprefix("whsec_")
    known["the provider key"] = PROVIDER_KEY
    for role, env in config.role_env.items():
        if env.get("NATS_PASSWORD"):
            known[f"the {role}'s NATS password"] = env["NATS_PASSWORD"]
    assert all(known.values()), known

    logs = sorted(config.log_dir.glob("*.log"))
    assert {path.stem for path in logs} >= {"scheduler", "executor", "notifier", "gateway"}
    assert stat.S_IMODE(config.log_dir.stat().st_mode) == 0o700
    text = ""
    for log in logs:
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log
        text += log.read_text(errors="replace")
    # The logs do say what happened, by id.
    assert failed["execution_id"] in text
    for what, value in known.items():
        assert value not in text, f"{what} is in a service log"
    assert not JWT.search(text), JWT.search(text)
    assert not API_KEY.search(text), API_KEY.search(text)


async def _received(receiver: CallbackReceiver, prefix: str) -> list[ReceivedRequest]:
    deadline = time.monotonic() + 60
    while not receiver.requests_to(prefix):
        assert time.monotonic() < deadline, "no callback arrived"
        await asyncio.sleep(0.05)
    return list(receiver.requests_to(prefix))

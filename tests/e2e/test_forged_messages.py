"""Messages forged on NATS by someone who got onto the bus (here with the scheduler's own
credentials, the most a forger could hold): a control message never reaches a paused run, and
an early job message never starts a delayed one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client

from sinas_common.control import control_subject
from sinas_common.jobstream import JobMessage, job_stream_names
from sinas_common.jsoncodec import dump_json
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings
from sinas_devstack.stack import Stack

from .helpers import FunctionFactory, UserFactory, enqueue, query_one, wait_for_status

ASKING = """
def handler(input_data, context):
    return {"name": input("Your name?")}
"""


@pytest.fixture
def bus_settings(stack: Stack) -> NatsSettings:
    return NatsSettings.model_validate(stack.role_env("scheduler"))


@pytest.fixture
async def forger(bus_settings: NatsSettings) -> AsyncIterator[Client]:
    client = await connect_nats(bus_settings, name="forger")
    yield client
    await client.close()


async def test_a_forged_control_message_never_reaches_a_paused_run(
    forger: Client,
    bus_settings: NatsSettings,
    create_function: FunctionFactory,
    create_user: UserFactory,
) -> None:
    fn = await create_function(ASKING)
    user = await create_user(
        [
            f"sinas.functions/{fn.namespace}/{fn.name}.execute:own",
            "sinas.executions.read:own",
            "sinas.executions.update:own",
        ]
    )
    execution_id = await enqueue(user.client, fn)
    await wait_for_status(user.client, execution_id, {"AWAITING_INPUT"})

    # A continue with a forged value (as the scheduler once sent them) and a cancel.
    subject = control_subject(bus_settings)
    for forged in (
        {"execution_id": execution_id, "action": "continue", "input": "Mallory", "round": 1},
        {"execution_id": execution_id, "action": "cancel"},
    ):
        await forger.publish(subject, dump_json(forged))
    await forger.flush()
    # The executor asks the scheduler at once and hears nothing happened; give it ample time.
    await asyncio.sleep(2.0)
    paused = (await user.client.get(f"/executions/{execution_id}")).json()
    assert (paused["status"], paused["input_prompt"]) == ("AWAITING_INPUT", "Your name?"), paused

    reply = await user.client.post(f"/executions/{execution_id}/continue", json={"input": "Ada"})
    assert reply.status_code == 200, reply.text
    started = time.monotonic()
    done = await wait_for_status(user.client, execution_id)
    assert (done["status"], done["output_data"]) == ("COMPLETED", {"name": "Ada"}), done
    # The real continue still travels fast: a hint and one heartbeat, not the 10 s slow path.
    assert time.monotonic() - started < 5.0


async def test_an_early_job_message_never_starts_a_delayed_execution(
    stack: Stack,
    admin: httpx.AsyncClient,
    forger: Client,
    bus_settings: NatsSettings,
    create_function: FunctionFactory,
) -> None:
    fn = await create_function()
    execution_id = await enqueue(admin, fn, input={"when": "due"}, delay_seconds=4)
    submitted = time.monotonic()

    # A copy of the job message before the dispatcher published any (which it does only
    # once the row is due), under another message id, as a duplicate or forgery would come.
    names = job_stream_names(bus_settings)
    js = forger.jetstream()
    await js.publish(
        names.subject("function"),
        JobMessage(execution_id=execution_id, kind="function").encode(),
        headers={"Nats-Msg-Id": f"forged-{execution_id}"},
    )
    # Gone from the work queue: an executor took it, its claim was refused, and it acked.
    deadline = time.monotonic() + 30
    while (await js.stream_info(names.stream)).state.messages:
        assert time.monotonic() < deadline, "the forged message was never consumed"
        await asyncio.sleep(0.1)
    row = query_one(
        stack.config.database_url,
        "SELECT status, attempts, worker_id, started_at FROM executions WHERE id = %s",
        execution_id,
    )
    assert row == ("PENDING", 0, None, None), row
    assert time.monotonic() - submitted < 4.0, "too slow to tell early from due"

    # When due, the dispatcher publishes it for real and it runs, once.
    done = await wait_for_status(admin, execution_id)
    assert (done["status"], done["output_data"], done["attempts"]) == (
        "COMPLETED",
        {"echo": {"when": "due"}},
        1,
    ), done
    assert time.monotonic() - submitted >= 3.5

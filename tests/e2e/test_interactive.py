"""Interactive `input()` end to end: pause with the prompt, continue, cancel, input deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from .conftest import StackFactory, admin_client_for
from .helpers import FunctionFactory, UserFactory, enqueue, make_function_factory, wait_for_status

ASKING = """
def handler(input_data, context):
    if input_data.get("quiet"):
        return {"quiet": True}
    name = input("Name?")
    age = input(f"Age of {name}?")
    return {"name": name, "age": age}
"""

OWN = [
    "sinas.functions/*/*.execute:own",
    "sinas.executions.read:own",
    "sinas.executions.update:own",
]


async def paused_at(client: httpx.AsyncClient, execution_id: str, prompt: str) -> dict[str, Any]:
    """Polls until the execution waits in `input(prompt)`."""
    deadline = time.monotonic() + 60.0
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        document = (await client.get(f"/executions/{execution_id}")).json()
        if document["status"] == "AWAITING_INPUT" and document["input_prompt"] == prompt:
            return document
        assert document["status"] in ("PENDING", "RUNNING", "AWAITING_INPUT"), document
        await asyncio.sleep(0.05)
    raise AssertionError(f"never paused at {prompt!r}: {document}")


async def test_continue_answers_each_prompt(
    create_function: FunctionFactory, create_user: UserFactory
) -> None:
    fn = await create_function(ASKING)
    user = await create_user(OWN)
    stranger = await create_user(OWN)
    execution_id = await enqueue(user.client, fn)

    first = await paused_at(user.client, execution_id, "Name?")
    assert first["input_deadline_at"] is not None and first["completed_at"] is None
    assert (
        await stranger.client.post(f"/executions/{execution_id}/continue", json={"input": "x"})
    ).status_code == 404
    reply = await user.client.post(f"/executions/{execution_id}/continue", json={"input": "Ada"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "RUNNING" and reply.json()["input_prompt"] is None

    await paused_at(user.client, execution_id, "Age of Ada?")
    reply = await user.client.post(
        f"/executions/{execution_id}/continue", json={"input": {"years": 2**60}}
    )
    assert reply.status_code == 200, reply.text
    done = await wait_for_status(user.client, execution_id)
    assert done["status"] == "COMPLETED", done
    assert done["output_data"] == {"name": "Ada", "age": {"years": 2**60}}
    assert done["input_prompt"] is None

    late = await user.client.post(f"/executions/{execution_id}/continue", json={"input": "x"})
    assert late.status_code == 409
    assert "not awaiting input" in late.json()["detail"]


async def test_cancel_ends_the_waiting_worker(
    create_function: FunctionFactory, create_user: UserFactory
) -> None:
    fn = await create_function(ASKING)
    user = await create_user(OWN)
    execution_id = await enqueue(user.client, fn)
    await paused_at(user.client, execution_id, "Name?")

    reply = await user.client.post(f"/executions/{execution_id}/cancel")
    assert reply.status_code == 200, reply.text
    assert (reply.json()["status"], reply.json()["cancelled"]) == ("CANCELLED", True)
    again = await user.client.post(f"/executions/{execution_id}/cancel")
    assert (again.json()["status"], again.json()["cancelled"]) == ("CANCELLED", False)
    # The status never changes again, and the function keeps serving new runs.
    quiet = await wait_for_status(user.client, await enqueue(user.client, fn, input={"quiet": 1}))
    assert quiet["status"] == "COMPLETED"
    assert (await user.client.get(f"/executions/{execution_id}")).json()["status"] == "CANCELLED"
    assert (
        await user.client.post(f"/executions/{execution_id}/continue", json={"input": "late"})
    ).status_code == 409


async def test_cancel_leaves_running_work_alone(
    create_function: FunctionFactory, create_user: UserFactory
) -> None:
    fn = await create_function(
        "import time\ndef handler(input_data, context):\n    time.sleep(2)\n    return {}\n"
    )
    user = await create_user(OWN)
    execution_id = await enqueue(user.client, fn)
    await wait_for_status(user.client, execution_id, {"RUNNING"})
    reply = await user.client.post(f"/executions/{execution_id}/cancel")
    assert (reply.json()["status"], reply.json()["cancelled"]) == ("RUNNING", False)
    assert (await wait_for_status(user.client, execution_id))["status"] == "COMPLETED"


async def test_input_deadline_fails_the_paused_execution(stack_factory: StackFactory) -> None:
    stack = stack_factory(
        EXECUTION_INPUT_TIMEOUT_SECONDS="2", SCHEDULER_REAPER_INTERVAL_SECONDS="0.5"
    )
    stack.start_all()
    async with admin_client_for(stack) as admin:
        fn = await make_function_factory(admin)(ASKING)
        execution_id = await enqueue(admin, fn)
        await paused_at(admin, execution_id, "Name?")
        failed = await wait_for_status(admin, execution_id)
        assert failed["status"] == "FAILED", failed
        assert "input deadline passed" in failed["error"]
        # The worker was ended: the function's next run completes.
        quiet = await wait_for_status(admin, await enqueue(admin, fn, input={"quiet": 1}))
        assert quiet["status"] == "COMPLETED"
    stack.stop_all()

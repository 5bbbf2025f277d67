"""The README's quick start as a test: define a function, enqueue, poll; and sync execute."""

from __future__ import annotations

from datetime import datetime

import httpx

from .helpers import FunctionFactory, enqueue, wait_for_status


async def test_enqueue_and_poll_to_completion(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "def handler(input_data, context):\n"
        "    return {'greeting': 'hello ' + input_data['name']}\n",
        input_schema={
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
    )
    execution_id = await enqueue(admin, fn, input={"name": "Ada"})

    document = await wait_for_status(admin, execution_id)

    assert document["status"] == "COMPLETED"
    assert document["output_data"] == {"greeting": "hello Ada"}
    assert document["input_data"] == {"name": "Ada"}
    assert document["execution_id"] == execution_id
    assert document["namespace"] == fn.namespace
    assert document["function_name"] == fn.name
    assert document["trigger_type"] == "API"
    assert document["trigger_id"] == "runtime-api"
    assert document["attempts"] == 1
    assert document["error"] is None
    assert document["duration_ms"] is not None and document["duration_ms"] >= 0
    created, started, completed = (
        datetime.fromisoformat(document[key])
        for key in ("created_at", "started_at", "completed_at")
    )
    assert created <= started <= completed
    assert document["callback_status"] is None


async def test_async_handler_and_custom_trigger_id(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "import asyncio\n"
        "async def handler(input_data, context):\n"
        "    await asyncio.sleep(0.01)\n"
        "    return {'n': input_data['n'] * 2}\n"
    )
    execution_id = await enqueue(admin, fn, input={"n": 21}, trigger_id="order-42")

    document = await wait_for_status(admin, execution_id)

    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    assert document["output_data"] == {"n": 42}
    assert document["trigger_id"] == "order-42"


async def test_sync_execute_success_error_and_timeout(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    ok = await create_function("def handler(input_data, context):\n    return {'ok': True}\n")
    reply = await admin.post(ok.sync_path, json={"input": {}})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "success"
    assert body["result"] == {"ok": True}
    assert body["error"] is None

    broken = await create_function(
        "def handler(input_data, context):\n    raise ValueError('no good')\n"
    )
    reply = await admin.post(broken.sync_path, json={"input": {}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "error"
    assert "no good" in reply.json()["error"]

    slow = await create_function(
        "import time\n"
        "def handler(input_data, context):\n"
        "    time.sleep(3)\n"
        "    return {'late': True}\n"
    )
    reply = await admin.post(slow.sync_path, json={"input": {}, "timeout": 1})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "timeout"
    # The execution keeps running and can be polled to its end.
    document = await wait_for_status(admin, body["execution_id"])
    assert document["status"] == "COMPLETED"
    assert document["output_data"] == {"late": True}


async def test_list_executions_filters_and_orders_newest_first(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function()
    first = await enqueue(admin, fn, input={"i": 1}, trigger_id="list-test")
    second = await enqueue(admin, fn, input={"i": 2}, trigger_id="list-test")
    await wait_for_status(admin, first)
    await wait_for_status(admin, second)

    reply = await admin.get("/executions", params={"trigger_id": "list-test", "limit": 10})
    assert reply.status_code == 200, reply.text
    ids = [doc["execution_id"] for doc in reply.json()]
    assert ids == [second, first]

    reply = await admin.get(
        "/executions", params={"function_name": fn.name, "status": "COMPLETED", "limit": 1}
    )
    assert [doc["execution_id"] for doc in reply.json()] == [second]

    reply = await admin.get("/executions", params={"limit": 1001})
    assert reply.status_code == 422

"""Bad input is refused with the offending field, and nothing of it is stored."""

from __future__ import annotations

import httpx

from sinas_devstack.stack import Stack

from .helpers import FunctionFactory, count_executions, enqueue, wait_for_status

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["customer", "items"],
}


async def test_input_schema_violation_is_422_with_field_path_and_stores_nothing(
    stack: Stack, admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(input_schema=ORDER_SCHEMA)
    before = count_executions(stack.config.database_url)

    reply = await admin.post(
        fn.async_path,
        json={
            "input": {"customer": "c1", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 0}]}
        },
    )

    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert body["reason"] == "schema_violation"
    locations = [error["loc"] for error in body["detail"]]
    assert ["body", "input", "items", 1, "qty"] in locations
    reply = await admin.post(fn.async_path, json={"input": {"items": []}})
    assert reply.status_code == 422
    assert any("customer" in error["msg"] for error in reply.json()["detail"])
    assert count_executions(stack.config.database_url) == before


async def test_request_shape_errors(
    stack: Stack, admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function()
    before = count_executions(stack.config.database_url)

    cases: list[tuple[object, int, str]] = [
        ({}, 422, "input"),
        ({"input": [1, 2]}, 422, "input"),
        ({"input": {}, "trigger_id": "x" * 256}, 422, "trigger_id"),
        ({"input": {}, "delay_seconds": -1}, 422, "delay_seconds"),
        ({"input": {}, "delay_seconds": 31536001}, 422, "delay_seconds"),
        ({"input": {}, "delay_seconds": 1.5}, 422, "delay_seconds"),
    ]
    for body, status, field in cases:
        reply = await admin.post(fn.async_path, json=body)
        assert reply.status_code == status, (body, reply.text)
        assert field in reply.text, (body, reply.text)

    reply = await admin.post(
        fn.async_path, content=b'{"input": {', headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 422, reply.text
    assert "JSON" in reply.text

    reply = await admin.post(
        fn.async_path, json={"input": {}, "callback_url": "https://example.com/hook"}
    )
    assert reply.status_code == 400, reply.text
    assert "callback" in reply.json()["detail"].lower()
    assert reply.json()["reason"] == "callback_url_rejected"

    assert count_executions(stack.config.database_url) == before


async def test_oversize_bodies_are_413_and_never_reach_the_database(
    stack: Stack, admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function()
    before = count_executions(stack.config.database_url)
    big = b'{"input": {"blob": "' + b"x" * (1024 * 1024) + b'"}}'

    reply = await admin.post(
        fn.async_path, content=big, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["reason"] == "payload_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    reply = await admin.post(
        fn.async_path, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 413, reply.text
    assert count_executions(stack.config.database_url) == before


async def test_json_survives_exactly(
    admin: httpx.AsyncClient, create_function: FunctionFactory
) -> None:
    fn = await create_function(
        "def handler(input_data, context):\n"
        "    return {'same': input_data, 'doubled': input_data['big'] * 2}\n"
    )
    payload = {
        "big": 2**60 + 1,
        "huge": 2**200,
        "negative": -(2**63),
        "float": 0.1,
        "tiny": 5e-324,
        "precise": 1.2345678901234567,
        "text": "za\u017c\u00f3\u0142\u0107 \u2713 \U0001f680 \u6f22\u5b57 \u0000 end",
        "nested": [{"a": None, "b": True}],
    }
    document = await wait_for_status(admin, await enqueue(admin, fn, input=payload))
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    assert document["input_data"] == payload
    assert document["output_data"] == {"same": payload, "doubled": (2**60 + 1) * 2}
    assert document["output_data"]["same"]["big"] == 2**60 + 1

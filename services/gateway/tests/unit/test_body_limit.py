"""The request size limit: refused with 413 before any route or scheduler call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from sinas_common.jsoncodec import load_json
from sinas_gateway.settings import GatewaySettings
from sinas_gateway.testing import RecordingSchedulerClient
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

PATH = "/functions/a/b/execute/async"


def _body_of_size(size: int) -> bytes:
    head, tail = b'{"input": {"pad": "', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_declared_length_over_the_limit_is_413(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, settings: GatewaySettings
) -> None:
    limit = settings.max_request_body_bytes
    response = await client.post(
        PATH,
        content=_body_of_size(limit + 1),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"Request body exceeds {limit} bytes",
        "reason": "payload_too_large",
    }
    assert scheduler.calls == []


async def test_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, settings: GatewaySettings
) -> None:
    body = _body_of_size(settings.max_request_body_bytes + 1)

    response = await client.post(
        PATH, content=_chunks(body, 500), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["reason"] == "payload_too_large"
    assert scheduler.calls == []


async def test_body_exactly_at_the_limit_passes_whole(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, settings: GatewaySettings
) -> None:
    body = _body_of_size(settings.max_request_body_bytes)

    response = await client.post(
        PATH, content=_chunks(body, 700), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 202
    (call,) = scheduler.calls_to("submit_execution")
    assert isinstance(call.request, pb.SubmitExecutionRequest)
    assert load_json(call.request.input_json) == load_json(body)["input"]


async def test_an_understated_length_does_not_smuggle_bytes(
    client: httpx.AsyncClient, scheduler: RecordingSchedulerClient, settings: GatewaySettings
) -> None:
    body = _body_of_size(settings.max_request_body_bytes * 2)

    response = await client.post(
        PATH,
        content=_chunks(body, 1000),
        headers={"Content-Type": "application/json", "Content-Length": "10"},
    )

    assert response.status_code == 413
    assert scheduler.calls == []

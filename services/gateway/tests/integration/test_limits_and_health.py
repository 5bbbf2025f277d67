"""Body limits, malformed bodies and scheduler outages, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from sinas_gateway.settings import GatewaySettings

from .fake_scheduler import BODY_LIMIT, FakeScheduler

PATH = "/functions/tools/echo/execute/async"


def _oversized() -> bytes:
    return b'{"input": {"pad": "' + b"x" * (BODY_LIMIT * 2) + b'"}}'


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1024):
        yield body[start : start + 1024]


async def test_oversized_bodies_are_413_and_never_reach_the_scheduler(
    http: httpx.AsyncClient, user_headers: dict[str, str], fake_scheduler: FakeScheduler
) -> None:
    headers = {**user_headers, "Content-Type": "application/json"}

    declared = await http.post(PATH, headers=headers, content=_oversized())
    streamed = await http.post(PATH, headers=headers, content=_chunked(_oversized()))

    expected = {
        "detail": f"Request body exceeds {BODY_LIMIT} bytes",
        "reason": "payload_too_large",
    }
    assert declared.status_code == 413
    assert declared.json() == expected
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert streamed.status_code == 413
    assert streamed.json() == expected
    assert fake_scheduler.state.calls == []


async def test_invalid_json_is_422_and_never_reaches_the_scheduler(
    http: httpx.AsyncClient, user_headers: dict[str, str], fake_scheduler: FakeScheduler
) -> None:
    response = await http.post(
        PATH,
        headers={**user_headers, "Content-Type": "application/json"},
        content=b'{"input": {"a": 1,}}',
    )

    assert response.status_code == 422
    assert response.json()["reason"] == "invalid_json"
    assert "Invalid JSON" in response.json()["detail"][0]["msg"]
    assert fake_scheduler.state.calls == []


async def test_health_follows_the_scheduler(
    http: httpx.AsyncClient, user_headers: dict[str, str], fake_scheduler: FakeScheduler
) -> None:
    up = await http.get("/health")
    await fake_scheduler.server.stop(0)
    down = await http.get("/health")
    call_while_down = await http.get("/auth/me", headers=user_headers)

    assert up.status_code == 200
    assert up.json() == {"status": "ok"}
    assert down.status_code == 503
    assert down.json()["reason"] == "unavailable"
    assert call_while_down.status_code == 503
    assert call_while_down.json()["reason"] == "unavailable"


async def test_openapi_lists_every_path(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()

    assert set(document["paths"]) == {
        "/functions/{namespace}/{name}/execute/async",
        "/functions/{namespace}/{name}/execute",
        "/functions/{namespace}/{name}/execute/batch",
        "/batches",
        "/batches/{batch_id}",
        "/batches/{batch_id}/executions",
        "/batches/{batch_id}/cancel",
        "/executions/{execution_id}/continue",
        "/executions/{execution_id}/cancel",
        "/executions/{execution_id}",
        "/executions",
        "/auth/me",
        "/.well-known/jwks.json",
        "/health",
        "/api/v1/functions",
        "/api/v1/functions/{namespace}/{name}",
        "/api/v1/roles",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{key_id}",
        "/api/v1/llm-providers",
        "/api/v1/agents",
        "/api/v1/agents/{namespace}/{name}",
        "/agents/{namespace}/{name}/execute/async",
        "/agents/{namespace}/{name}/invoke",
        "/agents/{namespace}/{name}/chats/batch",
        "/chats",
        "/chats/{chat_id}",
    }
    schemas = document["components"]["schemas"]
    for model in ("AsyncExecuteRequest", "SyncExecuteResponse", "ExecutionDocument", "ErrorBody"):
        assert model in schemas


async def test_gateway_settings_point_at_the_fake(
    gateway_settings: GatewaySettings, fake_scheduler: FakeScheduler
) -> None:
    assert gateway_settings.scheduler.scheduler_addr == fake_scheduler.address

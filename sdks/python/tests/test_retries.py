"""The retry rule: idempotent calls only, on connection errors and 503, never on other errors."""

from __future__ import annotations

import httpx
import pytest

from sinas import (
    AsyncSinasClient,
    SinasAPIError,
    SinasClient,
    SinasConnectionError,
    SinasValidationError,
)


class ScriptedTransport(httpx.MockTransport):
    """Answers from a script (a status, or None for a dropped connection); records requests."""

    def __init__(self, script: list[int | None]) -> None:
        self.script = list(script)
        self.seen: list[httpx.Request] = []
        super().__init__(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        status = self.script.pop(0)
        if status is None:
            raise httpx.ConnectError("connection refused", request=request)
        if status >= 400:
            return httpx.Response(status, json={"detail": "busy", "reason": "UNAVAILABLE"})
        return httpx.Response(status, json={"execution_id": "e1", "status": "queued"})


def client_over(transport: ScriptedTransport) -> SinasClient:
    return SinasClient(
        base_url="http://sinas.test", api_key="sk-1", use_env=False, transport=transport
    )


def test_reads_retry_through_503_and_dropped_connections() -> None:
    transport = ScriptedTransport([503, None, 200])
    with client_over(transport) as client:
        assert client.executions.get("e1")["execution_id"] == "e1"
    assert len(transport.seen) == 3
    assert transport.seen[0].headers["Authorization"] == "Bearer sk-1"


def test_a_submit_without_idempotency_key_is_sent_once() -> None:
    transport = ScriptedTransport([503])
    with client_over(transport) as client, pytest.raises(SinasAPIError) as failed:
        client.functions.enqueue("ns", "fn", {"n": 1})
    assert (failed.value.status_code, failed.value.reason) == (503, "UNAVAILABLE")
    assert len(transport.seen) == 1

    transport = ScriptedTransport([None])
    with client_over(transport) as client, pytest.raises(SinasConnectionError):
        client.functions.submit_batch("ns", "fn", [{"n": 1}])
    assert len(transport.seen) == 1


def test_a_submit_with_idempotency_key_is_retried_with_the_same_key() -> None:
    transport = ScriptedTransport([None, 503, 202])
    with client_over(transport) as client:
        queued = client.functions.enqueue("ns", "fn", {"n": 1}, idempotency_key="k-1")
    assert queued == {"execution_id": "e1", "status": "queued"}
    assert [request.headers["Idempotency-Key"] for request in transport.seen] == ["k-1"] * 3
    assert {request.content for request in transport.seen} == {b'{"input":{"n":1}}'}


def test_other_errors_are_not_retried_and_retries_are_bounded() -> None:
    transport = ScriptedTransport([422])
    with client_over(transport) as client, pytest.raises(SinasValidationError):
        client.batches.get("b1")
    assert len(transport.seen) == 1

    transport = ScriptedTransport([503, 503, 503, 503])
    with client_over(transport) as client, pytest.raises(SinasAPIError):
        client.batches.get("b1")
    assert len(transport.seen) == 4  # the first attempt and max_retries=3 more


async def test_the_async_client_follows_the_same_rule() -> None:
    seen: list[httpx.Request] = []
    script: list[int | None] = [None, 503, 200]

    async def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = script.pop(0)
        if status is None:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(status, json={"id": "u1", "email": "a@example.com"})

    async with AsyncSinasClient(
        base_url="http://sinas.test",
        token="jwt",
        api_key="sk-1",
        use_env=False,
        transport=httpx.MockTransport(answer),
    ) as client:
        assert (await client.auth.get_me())["id"] == "u1"
        script.append(503)
        with pytest.raises(SinasAPIError):
            await client.executions.continue_execution("e1", "yes")
    assert len(seen) == 4
    assert seen[0].headers["Authorization"] == "Bearer jwt"

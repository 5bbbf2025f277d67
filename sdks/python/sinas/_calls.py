"""Every API operation as a Call, so the sync and async clients send exactly the same requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sinas._http import Call, idempotency_headers, options, segment

EXECUTION_WAITING_STATUSES = frozenset({"PENDING", "RUNNING"})


def enqueue_function(
    namespace: str,
    name: str,
    input: Mapping[str, Any] | None,
    *,
    trigger_id: str | None,
    delay_seconds: int | None,
    callback_url: str | None,
    idempotency_key: str | None,
) -> Call:
    body = {"input": dict(input or {})} | options(
        trigger_id=trigger_id, delay_seconds=delay_seconds, callback_url=callback_url
    )
    return Call(
        method="POST",
        path=f"/functions/{segment(namespace)}/{segment(name)}/execute/async",
        json=body,
        headers=idempotency_headers(idempotency_key),
        idempotent=idempotency_key is not None,
    )


def execute_function(
    namespace: str,
    name: str,
    input: Mapping[str, Any] | None,
    *,
    timeout: int | None,
    trigger_id: str | None,
    request_timeout: float,
) -> Call:
    body = {"input": dict(input or {})} | options(timeout=timeout, trigger_id=trigger_id)
    return Call(
        method="POST",
        path=f"/functions/{segment(namespace)}/{segment(name)}/execute",
        json=body,
        # The server holds the request for up to `timeout` seconds; don't give up first.
        timeout=request_timeout + (timeout or 0),
    )


def submit_function_batch(
    namespace: str,
    name: str,
    inputs: Sequence[Mapping[str, Any]],
    *,
    trigger_id_prefix: str | None,
    delay_seconds: int | None,
    callback_url: str | None,
    batch_callback_url: str | None,
    idempotency_key: str | None,
) -> Call:
    body = {"inputs": [dict(item) for item in inputs]} | options(
        trigger_id_prefix=trigger_id_prefix,
        delay_seconds=delay_seconds,
        callback_url=callback_url,
        batch_callback_url=batch_callback_url,
    )
    return Call(
        method="POST",
        path=f"/functions/{segment(namespace)}/{segment(name)}/execute/batch",
        json=body,
        headers=idempotency_headers(idempotency_key),
        idempotent=idempotency_key is not None,
    )


def enqueue_agent(
    namespace: str,
    name: str,
    message: str | None,
    input: Mapping[str, Any] | None,
    *,
    trigger_id: str | None,
    delay_seconds: int | None,
    callback_url: str | None,
    idempotency_key: str | None,
) -> Call:
    body = {"input": dict(input or {})} | options(
        message=message,
        trigger_id=trigger_id,
        delay_seconds=delay_seconds,
        callback_url=callback_url,
    )
    return Call(
        method="POST",
        path=f"/agents/{segment(namespace)}/{segment(name)}/execute/async",
        json=body,
        headers=idempotency_headers(idempotency_key),
        idempotent=idempotency_key is not None,
    )


def invoke_agent(
    namespace: str,
    name: str,
    message: str | None,
    input: Mapping[str, Any] | None,
    *,
    timeout: int | None,
    request_timeout: float,
) -> Call:
    body = {"input": dict(input or {})} | options(message=message, timeout=timeout)
    return Call(
        method="POST",
        path=f"/agents/{segment(namespace)}/{segment(name)}/invoke",
        json=body,
        timeout=request_timeout + (timeout or 0),
    )


def submit_agent_batch(
    namespace: str,
    name: str,
    inputs: Sequence[Mapping[str, Any]],
    *,
    trigger_id_prefix: str | None,
    delay_seconds: int | None,
    callback_url: str | None,
    batch_callback_url: str | None,
    idempotency_key: str | None,
) -> Call:
    body = {"inputs": [dict(item) for item in inputs]} | options(
        trigger_id_prefix=trigger_id_prefix,
        delay_seconds=delay_seconds,
        callback_url=callback_url,
        batch_callback_url=batch_callback_url,
    )
    return Call(
        method="POST",
        path=f"/agents/{segment(namespace)}/{segment(name)}/chats/batch",
        json=body,
        headers=idempotency_headers(idempotency_key),
        idempotent=idempotency_key is not None,
    )


def get_batch(batch_id: str) -> Call:
    return Call(method="GET", path=f"/batches/{segment(batch_id)}", idempotent=True)


def list_batches(*, limit: int, offset: int) -> Call:
    return Call(
        method="GET", path="/batches", params={"limit": limit, "offset": offset}, idempotent=True
    )


def list_batch_executions(batch_id: str, *, status: str | None, limit: int, offset: int) -> Call:
    return Call(
        method="GET",
        path=f"/batches/{segment(batch_id)}/executions",
        params={"status": status, "limit": limit, "offset": offset},
        idempotent=True,
    )


def cancel_batch(batch_id: str) -> Call:
    # Cancelling twice has the effect of cancelling once, so a lost answer may be retried.
    return Call(method="POST", path=f"/batches/{segment(batch_id)}/cancel", idempotent=True)


def get_execution(execution_id: str) -> Call:
    return Call(method="GET", path=f"/executions/{segment(execution_id)}", idempotent=True)


def list_executions(
    *,
    function_name: str | None,
    status: str | None,
    trigger_id: str | None,
    batch_id: str | None,
    limit: int,
    offset: int,
) -> Call:
    return Call(
        method="GET",
        path="/executions",
        params={
            "function_name": function_name,
            "status": status,
            "trigger_id": trigger_id,
            "batch_id": batch_id,
            "limit": limit,
            "offset": offset,
        },
        idempotent=True,
    )


def continue_execution(execution_id: str, input: Any) -> Call:
    return Call(
        method="POST",
        path=f"/executions/{segment(execution_id)}/continue",
        json={"input": input},
    )


def cancel_execution(execution_id: str) -> Call:
    return Call(method="POST", path=f"/executions/{segment(execution_id)}/cancel", idempotent=True)


def get_chat(chat_id: str) -> Call:
    return Call(method="GET", path=f"/chats/{segment(chat_id)}", idempotent=True)


def list_chats(*, limit: int, offset: int) -> Call:
    return Call(
        method="GET", path="/chats", params={"limit": limit, "offset": offset}, idempotent=True
    )


def get_me() -> Call:
    return Call(method="GET", path="/auth/me", idempotent=True)


def execution_finished(document: Mapping[str, Any]) -> bool:
    """Whether a wait on this execution is over: finished, or paused for input."""
    return str(document.get("status", "")).upper() not in EXECUTION_WAITING_STATUSES


def batch_finished(document: Mapping[str, Any]) -> bool:
    return document.get("finished_at") is not None


def offset_of(skip: int | None, offset: int) -> int:
    """Upstream's `skip` is our `offset`; accept either."""
    return offset if skip is None else skip

"""Runtime execute: enqueue a function run, or run it and wait for the outcome."""

from __future__ import annotations

from fastapi import APIRouter

from sinas_gateway import convert
from sinas_gateway.deps import Caller, IdempotencyKey, Scheduler, Settings
from sinas_gateway.schemas import (
    AsyncExecuteRequest,
    QueuedResponse,
    SyncExecuteRequest,
    SyncExecuteResponse,
    error_responses,
)

router = APIRouter(tags=["runtime"], responses=error_responses(400, 401, 403, 404, 413, 503))


@router.post(
    "/functions/{namespace}/{name}/execute/async",
    status_code=202,
    summary="Enqueue one function execution",
    responses=error_responses(409, 422),
)
async def execute_async(
    namespace: str,
    name: str,
    body: AsyncExecuteRequest,
    scheduler: Scheduler,
    caller: Caller,
    idempotency_key: IdempotencyKey,
) -> QueuedResponse:
    """Stores a PENDING execution (run now or after `delay_seconds`) and answers at once.

    With an `Idempotency-Key`, a retry of the same request answers the original
    `execution_id`; the same key with a different request is a 409.
    """
    submitted = await scheduler.submit_execution(
        convert.submit_request(namespace, name, body, idempotency_key=idempotency_key), caller
    )
    return QueuedResponse(execution_id=submitted.execution_id)


@router.post("/functions/{namespace}/{name}/execute", summary="Run a function and wait")
async def execute_sync(
    namespace: str,
    name: str,
    body: SyncExecuteRequest,
    scheduler: Scheduler,
    caller: Caller,
    settings: Settings,
) -> SyncExecuteResponse:
    """Submits like the async endpoint, then waits up to `timeout` seconds for the outcome.

    A run still going when the wait ends keeps running; the answer says `timeout` and the
    execution can be polled at `GET /executions/{execution_id}`.
    """
    timeout = body.timeout or settings.sync_execute_default_timeout
    submitted = await scheduler.submit_execution(
        convert.submit_request(namespace, name, body), caller
    )
    waited = await scheduler.wait_execution(
        convert.wait_request(submitted.execution_id, timeout), caller
    )
    return convert.sync_response(submitted.execution_id, waited, timeout)

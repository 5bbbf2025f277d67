"""Batches: submit many runs of one function at once, read the aggregate, drill into children."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from sinas_gateway import convert
from sinas_gateway.deps import Caller, IdempotencyKey, Scheduler
from sinas_gateway.schemas import (
    BatchDocument,
    BatchExecuteRequest,
    BatchExecutionsPage,
    BatchQueuedResponse,
    ExecutionStatusName,
    error_responses,
)

router = APIRouter(tags=["batches"], responses=error_responses(401, 404, 503))


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


StatusFilter = Annotated[ExecutionStatusName | None, BeforeValidator(_upper)]


@router.post(
    "/functions/{namespace}/{name}/execute/batch",
    status_code=202,
    summary="Enqueue a batch of runs of one function",
    responses=error_responses(400, 403, 409, 413, 422),
)
async def execute_batch(
    namespace: str,
    name: str,
    body: BatchExecuteRequest,
    scheduler: Scheduler,
    caller: Caller,
    idempotency_key: IdempotencyKey,
) -> BatchQueuedResponse:
    """Checks every input first; the batch and all its children are stored together or not
    at all. Child `i` has `execution_ids[i]`; over `MAX_BATCH_SIZE` inputs is a 413."""
    submitted = await scheduler.submit_batch(
        convert.submit_batch_request(namespace, name, body, idempotency_key=idempotency_key),
        caller,
    )
    return BatchQueuedResponse(
        batch_id=submitted.batch_id,
        execution_ids=list(submitted.execution_ids),
        total=submitted.total,
    )


@router.get("/batches", summary="List batches, newest first")
async def list_batches(
    scheduler: Scheduler,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[BatchDocument]:
    """The caller's batches (everyone's with `sinas.executions.read:all`)."""
    listed = await scheduler.list_batches(
        convert.list_batches_request(limit=limit, offset=offset), caller
    )
    return [convert.batch_document(batch) for batch in listed.batches]


@router.get("/batches/{batch_id}", summary="One batch's aggregate")
async def get_batch(batch_id: str, scheduler: Scheduler, caller: Caller) -> BatchDocument:
    """Counts come from the children; someone else's batch answers 404."""
    found = await scheduler.get_batch(convert.get_batch_request(batch_id), caller)
    return convert.batch_document(found.batch)


@router.get("/batches/{batch_id}/executions", summary="A batch's children in batch order")
async def list_batch_executions(
    batch_id: str,
    scheduler: Scheduler,
    caller: Caller,
    status: Annotated[
        StatusFilter, Query(description="pending, running, ...; either case.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> BatchExecutionsPage:
    page = await scheduler.list_batch_executions(
        convert.list_batch_executions_request(batch_id, status=status, limit=limit, offset=offset),
        caller,
    )
    return convert.batch_executions_page(page)

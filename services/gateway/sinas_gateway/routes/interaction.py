"""Acting on running work: answer a paused `input()`, cancel an execution, cancel a batch."""

from __future__ import annotations

from fastapi import APIRouter

from sinas_gateway import convert
from sinas_gateway.deps import Caller, Scheduler
from sinas_gateway.schemas import (
    BatchCancelResponse,
    CancelledExecution,
    ContinueRequest,
    ExecutionDocument,
    error_responses,
)

router = APIRouter(tags=["runtime"], responses=error_responses(401, 403, 404, 409, 503))


@router.post("/executions/{execution_id}/continue", summary="Answer a paused input()")
async def continue_execution(
    execution_id: str, body: ContinueRequest, scheduler: Scheduler, caller: Caller
) -> ExecutionDocument:
    """Resumes an AWAITING_INPUT execution with `input`; any other status is a 409."""
    response = await scheduler.continue_execution(
        convert.continue_request(execution_id, body), caller
    )
    return convert.execution_document(response.execution)


@router.post("/executions/{execution_id}/cancel", summary="Cancel an execution")
async def cancel_execution(
    execution_id: str, scheduler: Scheduler, caller: Caller
) -> CancelledExecution:
    """A PENDING or AWAITING_INPUT execution becomes CANCELLED and never runs (a waiting
    worker is ended); a running or finished one is left as it is, with `cancelled` false."""
    response = await scheduler.cancel_execution(
        convert.cancel_execution_request(execution_id), caller
    )
    return convert.cancelled_execution(response)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch's remaining children")
async def cancel_batch(batch_id: str, scheduler: Scheduler, caller: Caller) -> BatchCancelResponse:
    """Every PENDING or AWAITING_INPUT child becomes CANCELLED; running children finish and
    count. A finished batch answers with its status and 0."""
    response = await scheduler.cancel_batch(convert.cancel_batch_request(batch_id), caller)
    return convert.batch_cancel_document(response)

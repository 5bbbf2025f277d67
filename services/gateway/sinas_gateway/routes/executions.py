"""Reading executions: one by id, or a filtered, newest-first page of the caller's own."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from sinas_gateway import convert
from sinas_gateway.deps import Caller, Scheduler
from sinas_gateway.schemas import ExecutionDocument, ExecutionStatusName, error_responses

router = APIRouter(tags=["runtime"], responses=error_responses(401, 403, 404, 503))


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


StatusFilter = Annotated[ExecutionStatusName | None, BeforeValidator(_upper)]


@router.get("/executions/{execution_id}", summary="One execution")
async def get_execution(
    execution_id: str, scheduler: Scheduler, caller: Caller
) -> ExecutionDocument:
    """The execution; someone else's answers 404 unless the caller may read all."""
    found = await scheduler.get_execution(convert.get_execution_request(execution_id), caller)
    return convert.execution_document(found.execution)


@router.get("/executions", summary="List executions, newest first")
async def list_executions(
    scheduler: Scheduler,
    caller: Caller,
    function_name: Annotated[str | None, Query(max_length=255)] = None,
    status: Annotated[
        StatusFilter, Query(description="PENDING, RUNNING, ...; either case.")
    ] = None,
    trigger_id: Annotated[str | None, Query(max_length=255)] = None,
    batch_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ExecutionDocument]:
    listed = await scheduler.list_executions(
        convert.list_request(
            function_name=function_name,
            status=status,
            trigger_id=trigger_id,
            batch_id=batch_id,
            limit=limit,
            offset=offset,
        ),
        caller,
    )
    return [convert.execution_document(execution) for execution in listed.executions]

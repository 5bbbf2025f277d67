"""Running agents: one queued run, a sync invoke, or a batch of fresh chats."""

from __future__ import annotations

from fastapi import APIRouter

from sinas_gateway import agent_convert, convert
from sinas_gateway.agent_schemas import (
    AgentBatchQueuedResponse,
    AgentBatchRequest,
    AgentInvokeRequest,
    AgentInvokeResponse,
    AgentQueuedResponse,
    AgentRunRequest,
)
from sinas_gateway.deps import Caller, IdempotencyKey, Scheduler, Settings
from sinas_gateway.schemas import error_responses

router = APIRouter(
    prefix="/agents/{namespace}/{name}",
    tags=["agents"],
    responses=error_responses(400, 401, 403, 404, 413, 422, 503),
)


@router.post(
    "/execute/async",
    status_code=202,
    summary="Enqueue one agent run in a fresh chat",
    responses=error_responses(409),
)
async def execute_agent_async(
    namespace: str,
    name: str,
    body: AgentRunRequest,
    scheduler: Scheduler,
    caller: Caller,
    idempotency_key: IdempotencyKey,
) -> AgentQueuedResponse:
    """Renders the agent's prompts with `input` (an undefined variable or input invalid
    against the agent's schema is a 422), stores the chat and a PENDING run, and answers at
    once. The run's result is `{chat_id, final_message, final_message_role, tool_calls}`."""
    submitted = await scheduler.submit_agent_run(
        agent_convert.submit_agent_run_request(
            namespace, name, body, idempotency_key=idempotency_key
        ),
        caller,
    )
    return AgentQueuedResponse(execution_id=submitted.execution_id, chat_id=submitted.chat_id)


@router.post(
    "/invoke",
    summary="Run an agent and wait for its reply",
    responses=error_responses(502, 504),
)
async def invoke_agent(
    namespace: str,
    name: str,
    body: AgentInvokeRequest,
    scheduler: Scheduler,
    caller: Caller,
    settings: Settings,
) -> AgentInvokeResponse:
    """Submits like `execute/async`, then waits up to `timeout` seconds. A run still going
    then answers 504 (it keeps running; poll `GET /executions/{id}`); a run that failed
    answers 502 with its error."""
    timeout = body.timeout or settings.sync_execute_default_timeout
    submitted = await scheduler.submit_agent_run(
        agent_convert.submit_agent_run_request(
            namespace,
            name,
            AgentRunRequest(message=body.message, input=body.input),
        ),
        caller,
    )
    waited = await scheduler.wait_execution(
        convert.wait_request(submitted.execution_id, timeout), caller
    )
    return agent_convert.invoke_response(submitted, waited)


@router.post(
    "/chats/batch",
    status_code=202,
    summary="Enqueue a batch of agent runs, one fresh chat each",
    responses=error_responses(409),
)
async def execute_agent_batch(
    namespace: str,
    name: str,
    body: AgentBatchRequest,
    scheduler: Scheduler,
    caller: Caller,
    idempotency_key: IdempotencyKey,
) -> AgentBatchQueuedResponse:
    """Checks every item first (422 naming `inputs[i]...`); the batch, its chats and
    children are stored together or not at all. Read it back under `/batches/{batch_id}`."""
    submitted = await scheduler.submit_agent_batch(
        agent_convert.submit_agent_batch_request(
            namespace, name, body, idempotency_key=idempotency_key
        ),
        caller,
    )
    return AgentBatchQueuedResponse(
        batch_id=submitted.batch_id,
        execution_ids=list(submitted.execution_ids),
        chat_ids=list(submitted.chat_ids),
        total=submitted.total,
    )

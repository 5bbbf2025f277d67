"""Managing agents and the LLM providers they call, under /api/v1; admins only."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sinas_gateway import agent_convert
from sinas_gateway.agent_schemas import (
    AgentCreate,
    AgentDocument,
    AgentUpdate,
    LlmProviderCreate,
    LlmProviderDocument,
)
from sinas_gateway.deps import Caller, Scheduler
from sinas_gateway.schemas import error_responses

router = APIRouter(
    prefix="/api/v1",
    tags=["management"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503),
)


@router.post("/llm-providers", status_code=201, summary="Create an LLM provider")
async def create_llm_provider(
    body: LlmProviderCreate, scheduler: Scheduler, caller: Caller
) -> LlmProviderDocument:
    """The API key is stored encrypted and never shown again."""
    created = await scheduler.create_llm_provider(
        agent_convert.create_llm_provider_request(body), caller
    )
    return agent_convert.llm_provider_document(created.provider)


@router.post("/agents", status_code=201, summary="Create an agent")
async def create_agent(body: AgentCreate, scheduler: Scheduler, caller: Caller) -> AgentDocument:
    """The provider and every enabled function must exist and the templates must parse."""
    created = await scheduler.create_agent(agent_convert.create_agent_request(body), caller)
    return agent_convert.agent_document(created.agent)


@router.get("/agents/{namespace}/{name}", summary="An agent at its current version")
async def get_agent(
    namespace: str, name: str, scheduler: Scheduler, caller: Caller
) -> AgentDocument:
    found = await scheduler.get_agent(agent_convert.get_agent_request(namespace, name), caller)
    return agent_convert.agent_document(found.agent)


@router.put("/agents/{namespace}/{name}", summary="Update an agent (a new version)")
async def update_agent(
    namespace: str, name: str, body: AgentUpdate, scheduler: Scheduler, caller: Caller
) -> AgentDocument:
    """Fields left out or null keep their value; every update makes a new version."""
    updated = await scheduler.update_agent(
        agent_convert.update_agent_request(namespace, name, body), caller
    )
    return agent_convert.agent_document(updated.agent)


@router.delete(
    "/agents/{namespace}/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete an agent",
)
async def delete_agent(namespace: str, name: str, scheduler: Scheduler, caller: Caller) -> None:
    await scheduler.delete_agent(agent_convert.delete_agent_request(namespace, name), caller)

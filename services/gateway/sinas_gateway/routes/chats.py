"""Chats: the stored transcripts of agent runs, visible to their owner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sinas_gateway import agent_convert
from sinas_gateway.agent_schemas import ChatDocument, ChatSummary
from sinas_gateway.deps import Caller, Scheduler
from sinas_gateway.schemas import error_responses

router = APIRouter(tags=["agents"], responses=error_responses(401, 404, 503))


@router.get("/chats", summary="List the caller's chats, newest first")
async def list_chats(
    scheduler: Scheduler,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ChatSummary]:
    listed = await scheduler.list_chats(
        agent_convert.list_chats_request(limit=limit, offset=offset), caller
    )
    return [agent_convert.chat_summary(chat) for chat in listed.chats]


@router.get("/chats/{chat_id}", summary="One chat with its ordered messages")
async def get_chat(chat_id: str, scheduler: Scheduler, caller: Caller) -> ChatDocument:
    """Someone else's chat answers 404 unless the caller may read all executions."""
    found = await scheduler.get_chat(agent_convert.get_chat_request(chat_id), caller)
    return agent_convert.chat_document(found.chat)

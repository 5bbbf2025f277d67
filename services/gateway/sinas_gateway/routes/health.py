"""Liveness that means something: the gateway is only healthy while the scheduler answers."""

from __future__ import annotations

from fastapi import APIRouter

from sinas_common.errors import ServiceUnavailable
from sinas_gateway.deps import Scheduler
from sinas_gateway.schemas import HealthResponse, error_responses

router = APIRouter(tags=["health"])


@router.get("/health", summary="Health", responses=error_responses(503))
async def health(scheduler: Scheduler) -> HealthResponse:
    """200 while the scheduler's gRPC health check says SERVING, else 503."""
    if not await scheduler.is_serving():
        raise ServiceUnavailable("The scheduler is not answering its health check")
    return HealthResponse()

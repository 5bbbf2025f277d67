"""Who the caller is, and the keys that verify the runtime's tokens."""

from __future__ import annotations

from fastapi import APIRouter

from sinas_gateway import convert
from sinas_gateway.deps import Caller, Scheduler
from sinas_gateway.schemas import JwksDocument, MeResponse, error_responses

router = APIRouter(tags=["auth"])


@router.get("/auth/me", summary="The current user", responses=error_responses(401, 404, 503))
async def get_me(scheduler: Scheduler, caller: Caller) -> MeResponse:
    """Resolves the credential (JWT or API key) to its user; apps call this to check tokens."""
    found = await scheduler.get_me(convert.get_me_request(), caller)
    return convert.me_document(found.user)


@router.get(
    "/.well-known/jwks.json",
    summary="Token verification keys",
    responses=error_responses(503),
)
async def get_jwks(scheduler: Scheduler) -> JwksDocument:
    """The public keys as a JWKS document; needs no credential."""
    return convert.jwks_document(await scheduler.get_jwks(convert.get_jwks_request()))

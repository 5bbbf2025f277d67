"""The management API under /api/v1; the scheduler decides who may use it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from sinas_gateway import convert
from sinas_gateway.deps import Caller, Scheduler
from sinas_gateway.schemas import (
    ApiKeyCreate,
    ApiKeyDocument,
    ApiKeySummary,
    FunctionCreate,
    FunctionDocument,
    FunctionUpdate,
    RoleCreate,
    RoleDocument,
    UserCreate,
    UserDocument,
    error_responses,
)

router = APIRouter(
    prefix="/api/v1",
    tags=["management"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 503),
)


@router.post("/functions", status_code=201, summary="Create a function")
async def create_function(
    body: FunctionCreate, scheduler: Scheduler, caller: Caller
) -> FunctionDocument:
    created = await scheduler.create_function(convert.create_function_request(body), caller)
    return convert.function_document(created.function)


@router.get("/functions/{namespace}/{name}", summary="A function at its current version")
async def get_function(
    namespace: str, name: str, scheduler: Scheduler, caller: Caller
) -> FunctionDocument:
    found = await scheduler.get_function(convert.get_function_request(namespace, name), caller)
    return convert.function_document(found.function)


@router.put("/functions/{namespace}/{name}", summary="Update a function (a new version)")
async def update_function(
    namespace: str, name: str, body: FunctionUpdate, scheduler: Scheduler, caller: Caller
) -> FunctionDocument:
    """Fields left out or null keep their value; every update makes a new version."""
    updated = await scheduler.update_function(
        convert.update_function_request(namespace, name, body), caller
    )
    return convert.function_document(updated.function)


@router.delete(
    "/functions/{namespace}/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete a function",
)
async def delete_function(namespace: str, name: str, scheduler: Scheduler, caller: Caller) -> None:
    await scheduler.delete_function(convert.delete_function_request(namespace, name), caller)


@router.post("/roles", status_code=201, summary="Create a role")
async def create_role(body: RoleCreate, scheduler: Scheduler, caller: Caller) -> RoleDocument:
    created = await scheduler.create_role(convert.create_role_request(body), caller)
    return convert.role_document(created.role)


@router.post("/users", status_code=201, summary="Create a user")
async def create_user(body: UserCreate, scheduler: Scheduler, caller: Caller) -> UserDocument:
    created = await scheduler.create_user(convert.create_user_request(body), caller)
    return convert.user_document(created.user)


@router.post("/api-keys", status_code=201, summary="Create an API key (shown once)")
async def create_api_key(
    body: ApiKeyCreate, scheduler: Scheduler, caller: Caller
) -> ApiKeyDocument:
    """A key for the caller (`sinas.api_keys.create:own`), or for `user_id` with
    `sinas.api_keys.create:all` (admins). With `expires_at` the key is refused from then on;
    one not in the future is a 422 and nothing is stored."""
    created = await scheduler.create_api_key(convert.create_api_key_request(body), caller)
    return convert.api_key_document(created)


@router.get("/api-keys", summary="List API keys (never the keys themselves)")
async def list_api_keys(
    scheduler: Scheduler,
    caller: Caller,
    user_id: Annotated[
        str | None, Query(description="Whose keys; omitted: the caller's own.")
    ] = None,
) -> list[ApiKeySummary]:
    """The caller's keys (`sinas.api_keys.read:own`), or `user_id`'s with
    `sinas.api_keys.read:all` (admins), newest first, revoked and expired ones included."""
    listed = await scheduler.list_api_keys(convert.list_api_keys_request(user_id), caller)
    return [convert.api_key_summary(api_key) for api_key in listed.api_keys]


@router.delete("/api-keys/{key_id}", summary="Revoke an API key")
async def revoke_api_key(key_id: str, scheduler: Scheduler, caller: Caller) -> ApiKeySummary:
    """Revokes one of the caller's keys (`sinas.api_keys.delete:own`) or anyone's
    (`sinas.api_keys.delete:all`), and answers it. Revoking a revoked key answers it unchanged.
    The key is refused within `AUTH_CACHE_SECONDS`. A key the caller may not see is a 404,
    as is one that doesn't exist."""
    revoked = await scheduler.revoke_api_key(convert.revoke_api_key_request(key_id), caller)
    return convert.api_key_summary(revoked.api_key)

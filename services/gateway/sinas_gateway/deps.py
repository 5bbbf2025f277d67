"""FastAPI dependencies: the scheduler client, the settings, and the caller's credential."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from sinas_common.errors import InvalidArgument, Unauthenticated
from sinas_gateway.scheduler_client import Credentials, SchedulerClient
from sinas_gateway.settings import GatewaySettings

# Declared for OpenAPI's security schemes; the raw header values are what gets forwarded.
_bearer_scheme = HTTPBearer(
    auto_error=False, description="A JWT issued by the runtime, or an API key (`sk-...`)."
)
_api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key; wins over `Authorization`."
)


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, which costs
# more than the whole request's own work.
async def get_scheduler(request: Request) -> SchedulerClient:
    return cast(SchedulerClient, request.app.state.scheduler)


async def get_settings(request: Request) -> GatewaySettings:
    return cast(GatewaySettings, request.app.state.settings)


def _metadata_safe(value: str | None) -> str | None:
    # gRPC metadata carries printable ASCII only; anything else can't be a valid credential.
    if value is not None and not (value.isascii() and value.isprintable()):
        raise Unauthenticated()
    return value


async def get_caller(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
    _api_key: Annotated[str | None, Security(_api_key_scheme)],
) -> Credentials:
    """The credential headers exactly as sent; the scheduler authenticates them."""
    return Credentials(
        authorization=_metadata_safe(request.headers.get("authorization")),
        api_key=_metadata_safe(request.headers.get("x-api-key")),
    )


IDEMPOTENCY_KEY_MAX_LENGTH = 255


async def get_idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description=(
                "Per user, kept 24 h: a retry with the same key and body answers the original"
                " response; the same key with another body is a 409."
            ),
        ),
    ] = None,
) -> str:
    """The `Idempotency-Key` header, or "" without one; a malformed key is a 400."""
    if idempotency_key is None:
        return ""
    key = idempotency_key
    if not (0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH and key.isascii() and key.isprintable()):
        raise InvalidArgument(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters"
        )
    return key


Scheduler = Annotated[SchedulerClient, Depends(get_scheduler)]
Settings = Annotated[GatewaySettings, Depends(get_settings)]
Caller = Annotated[Credentials, Depends(get_caller)]
IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]

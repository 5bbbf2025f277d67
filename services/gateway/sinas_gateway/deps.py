"""FastAPI dependencies: the scheduler client, the settings, and the caller's credential."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from sinas_common.errors import Unauthenticated
from sinas_gateway.scheduler_client import Credentials, SchedulerClient
from sinas_gateway.settings import GatewaySettings

# Declared for OpenAPI's security schemes; the raw header values are what gets forwarded.
_bearer_scheme = HTTPBearer(
    auto_error=False, description="A JWT issued by the runtime, or an API key (`sk-...`)."
)
_api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key; wins over `Authorization`."
)


def get_scheduler(request: Request) -> SchedulerClient:
    return cast(SchedulerClient, request.app.state.scheduler)


def get_settings(request: Request) -> GatewaySettings:
    return cast(GatewaySettings, request.app.state.settings)


def _metadata_safe(value: str | None) -> str | None:
    # gRPC metadata carries printable ASCII only; anything else can't be a valid credential.
    if value is not None and not (value.isascii() and value.isprintable()):
        raise Unauthenticated()
    return value


def get_caller(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
    _api_key: Annotated[str | None, Security(_api_key_scheme)],
) -> Credentials:
    """The credential headers exactly as sent; the scheduler authenticates them."""
    return Credentials(
        authorization=_metadata_safe(request.headers.get("authorization")),
        api_key=_metadata_safe(request.headers.get("x-api-key")),
    )


Scheduler = Annotated[SchedulerClient, Depends(get_scheduler)]
Settings = Annotated[GatewaySettings, Depends(get_settings)]
Caller = Annotated[Credentials, Depends(get_caller)]

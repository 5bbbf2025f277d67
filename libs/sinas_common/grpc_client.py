"""Calling our gRPC services: channels, deadlines, credentials and error translation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from sinas_common.errors import from_rpc_error, is_retryable
from sinas_common.reloading_channel import ReloadingChannel
from sinas_common.settings import InternalTlsSettings, SchedulerClientSettings
from sinas_common.tls import SCHEDULER_SERVER_NAME, TlsFiles, channel_credentials, warn_if_off

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT")
T = TypeVar("T")
Metadata = Sequence[tuple[str, str]]

DEFAULT_DEADLINE_SECONDS = 30.0


def open_channel(
    address: str,
    *,
    tls: InternalTlsSettings,
    server_name: str = SCHEDULER_SERVER_NAME,
    max_message_bytes: int = 64 * 1024 * 1024,
) -> grpc.aio.Channel:
    """A channel to a service inside the cluster: mutual TLS with this service's certificate,
    the peer's checked to carry `server_name` whatever address reaches it. Raises ValueError
    on a missing certificate file."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    warn_if_off(tls, "grpc_channel")
    if not tls.enabled:
        return grpc.aio.insecure_channel(address, options=options)
    options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)


def open_scheduler_channel(
    scheduler: SchedulerClientSettings, *, tls: InternalTlsSettings
) -> grpc.aio.Channel:
    """The channel every service opens to the scheduler, from its scheduler client settings;
    with mutual TLS, it follows renewals of this service's certificate files."""

    def connect() -> grpc.aio.Channel:
        return open_channel(
            scheduler.scheduler_addr, tls=tls, server_name=scheduler.tls_server_name
        )

    if not tls.enabled:
        return connect()
    return ReloadingChannel(connect, TlsFiles.from_settings(tls))


async def invoke(
    method: Callable[..., Awaitable[ResponseT]],
    request: Any,
    *,
    metadata: Metadata = (),
    timeout: float = DEFAULT_DEADLINE_SECONDS,
) -> ResponseT:
    """Calls a unary RPC with a deadline, raising the server's SinasError on failure."""
    try:
        return await method(request, metadata=tuple(metadata), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = 5,
    first_delay: float = 0.05,
    max_delay: float = 2.0,
) -> T:
    """Calls `call`, retrying what `is_retryable` allows with capped backoff; None = forever."""
    delay = first_delay
    tried = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            tried += 1
            if not is_retryable(exc) or (attempts is not None and tried >= attempts):
                raise
            logger.warning(
                "scheduler call failed, retrying",
                extra={"action": "rpc_retry", "attempt": tried, "error": str(exc)},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)

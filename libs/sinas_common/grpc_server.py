"""gRPC server setup shared by every service: mutual TLS, health, error mapping, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sinas_common.errors import STATUS_DETAILS_KEY, SinasError
from sinas_common.metrics import MetricsInterceptor
from sinas_common.settings import InternalTlsSettings
from sinas_common.tls import server_credentials, warn_if_off

logger = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: SinasError) -> None:
    """Ends the call with `error` as a rich status, which `from_rpc_error` turns back into it."""
    await context.abort(
        error.grpc_code,
        error.message,
        trailing_metadata=((STATUS_DETAILS_KEY, error.to_status().SerializeToString()),),
    )


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Turns a SinasError into a rich gRPC status, and anything else into a logged INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except SinasError as exc:
                await abort_with(context, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                logger.exception("unhandled error in rpc", extra={"action": method})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    """A grpc.aio server on a mutual-TLS port (unless `tls` is off) with the standard health
    service and our error interceptor; `interceptors` run inside the error interceptor, so
    the SinasError they raise reaches the caller as such."""

    def __init__(
        self,
        *,
        bind: str,
        registrars: Sequence[Registrar],
        service_names: Sequence[str],
        tls: InternalTlsSettings,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        # Credentials first: a missing certificate fails the start before anything binds.
        credentials = server_credentials(tls) if tls.enabled else None
        warn_if_off(tls, "grpc_server")
        self._server = grpc.aio.server(
            # Metrics first: it sees the status code the error interceptor settles on.
            interceptors=[MetricsInterceptor(), ErrorInterceptor(), *interceptors],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        for register in registrars:
            register(self._server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._service_names = list(service_names)
        self.port = (
            self._server.add_insecure_port(bind)
            if credentials is None
            else self._server.add_secure_port(bind, credentials)
        )
        if self.port == 0:
            raise RuntimeError(f"could not bind the gRPC server to {bind}")

    async def start(self) -> None:
        await self._server.start()
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish within the grace period."""
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(grace_seconds)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

"""Which service role may call which of the scheduler's gRPC services: one table, every call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from sinas_common.errors import CallerRoleDenied
from sinas_common.grpc_server import abort_with
from sinas_common.tls import ROLES, peer_role

logger = logging.getLogger(__name__)

GATEWAY = frozenset({"gateway"})
# Service -> the roles whose certificate may call it. The user-facing services still require
# the user's credential on every call; a service missing here is refused to every role.
ALLOWED_ROLES: dict[str, frozenset[str]] = {
    "sinas.scheduler.v1.WorkerService": frozenset({"executor"}),
    "sinas.scheduler.v1.NotifierService": frozenset({"notifier"}),
    "sinas.scheduler.v1.IdentityService": GATEWAY,
    "sinas.scheduler.v1.FunctionService": GATEWAY,
    "sinas.scheduler.v1.ExecutionService": GATEWAY,
    "sinas.scheduler.v1.BatchService": GATEWAY,
    "sinas.scheduler.v1.AgentService": GATEWAY,
    "grpc.health.v1.Health": frozenset(ROLES),
}
# Methods open to more roles than their service. An agent run waits for its tool calls'
# results as the run's user, with the run's own token, which the call still requires.
ALLOWED_METHOD_ROLES: dict[str, frozenset[str]] = {
    "/sinas.scheduler.v1.ExecutionService/WaitExecution": GATEWAY | {"executor"},
}

Context: TypeAlias = Any  # grpc ships no type information


def allowed_roles(method: str) -> frozenset[str]:
    """The roles that may call `/package.Service/Method`; none for a malformed name."""
    _, _, rest = method.partition("/")
    service, _, name = rest.partition("/")
    if not name:
        return frozenset()
    return ALLOWED_METHOD_ROLES.get(method, ALLOWED_ROLES.get(service, frozenset()))


def check_caller(context: Context, method: str, allowed: frozenset[str]) -> None:
    """Raises CallerRoleDenied unless the peer's certificate names an allowed role."""
    role = peer_role(context)
    if role not in allowed:
        logger.warning(
            "caller role denied",
            extra={"action": "caller_role_denied", "method": method, "role": role},
        )
        raise CallerRoleDenied()


class CallerRoleInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call before its servicer runs unless the caller's role is in ALLOWED_ROLES.

    Installed only with internal TLS on: with INTERNAL_TLS=off the mesh checks the roles.
    An unknown method is refused too, rather than answered UNIMPLEMENTED, so a caller learns
    nothing about what is served to other roles.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        allowed = allowed_roles(method)
        handler = await continuation(handler_call_details) if allowed else None
        if handler is None:
            return _refuse_all(method)
        if handler.unary_unary is not None:
            return _checked_unary(handler, method, allowed)
        if handler.unary_stream is not None:
            return _checked_unary_stream(handler, method, allowed)
        # Nothing we serve streams requests; refuse rather than pass an unchecked kind.
        return _refuse_all(method)


def _refuse_all(method: str) -> grpc.RpcMethodHandler:
    async def refuse(request: bytes, context: Context) -> bytes:
        check_caller(context, method, frozenset())
        raise AssertionError("check_caller refuses every role here")

    # No deserializer: the request of a method we don't know is never parsed.
    return grpc.unary_unary_rpc_method_handler(refuse)


def _checked_unary(
    handler: grpc.RpcMethodHandler, method: str, allowed: frozenset[str]
) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary

    async def checked(request: Any, context: Context) -> Any:
        check_caller(context, method, allowed)
        return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        checked,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _checked_unary_stream(
    handler: grpc.RpcMethodHandler, method: str, allowed: frozenset[str]
) -> grpc.RpcMethodHandler:
    inner = handler.unary_stream

    async def checked(request: Any, context: Context) -> AsyncIterator[Any]:
        # The error interceptor sees unary calls only: a streaming one aborts here itself.
        try:
            check_caller(context, method, allowed)
        except CallerRoleDenied as exc:
            await abort_with(context, exc)
            return
        result = inner(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:
            await result

    return grpc.unary_stream_rpc_method_handler(
        checked,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )

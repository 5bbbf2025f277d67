"""One error vocabulary from PostgreSQL to HTTP: each error has a stable reason and a gRPC code.

Exception tree::

    SinasError                      internal (500)
    ├── InvalidArgument             invalid_argument (400)
    │   ├── SchemaViolation         schema_violation (422)
    │   ├── ExecutionDepthExceeded  execution_depth_exceeded (400)
    │   └── CallbackUrlRejected     callback_url_rejected (400)
    ├── Unauthenticated             invalid_credentials (401)
    │   └── MissingCredentials      missing_credentials (401)
    ├── PermissionDenied            permission_denied (403)
    │   ├── CallerRoleDenied        caller_role_denied (403)
    │   └── ExecutionTokenNotAllowed  execution_token_not_allowed (403)
    ├── NotFound                    not_found (404)
    │   ├── FunctionNotFound, ExecutionNotFound, UserNotFound, RoleNotFound,
    │   │   ApiKeyNotFound
    ├── Conflict                    conflict (409)
    │   └── InvalidTransition       invalid_transition (409)
    ├── PayloadTooLarge             payload_too_large (413)
    ├── ServiceUnavailable          unavailable (503)
    └── DeadlineExceeded            deadline_exceeded (504)

The class docstring, without its full stop, is the default message. The server side turns an
error into a rich gRPC status (`to_status`); the client side turns the status back into the
same class (`from_rpc_error`), so callers never switch on raw status codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "sinas.runtime"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldViolation:
    """One offending field: `field` is a dotted/indexed path such as `input.items[2].name`."""

    field: str
    description: str


class SinasError(Exception):
    """Internal error."""

    reason: ClassVar[str] = "internal"
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init__(
        self, message: str | None = None, *, violations: Sequence[FieldViolation] = ()
    ) -> None:
        # Docstrings end with a full stop; API messages (as upstream's) do not.
        default = (type(self).__doc__ or "").strip().rstrip(".")
        self.message = message or default or self.reason
        self.violations = tuple(violations)
        super().__init__(self.message)

    def to_status(self) -> status_pb2.Status:
        """The rich status proto that carries this error over gRPC."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        details = [_pack(info)]
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        return status_pb2.Status(
            code=self.grpc_code.value[0], message=self.message, details=details
        )


class InvalidArgument(SinasError):
    """Invalid request."""

    reason = "invalid_argument"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class SchemaViolation(InvalidArgument):
    """The request body does not match its schema."""

    reason = "schema_violation"
    http_status = 422


class ExecutionDepthExceeded(InvalidArgument):
    """Maximum execution depth exceeded."""

    reason = "execution_depth_exceeded"


class CallbackUrlRejected(InvalidArgument):
    """The callback URL is not allowed."""

    reason = "callback_url_rejected"


class Unauthenticated(SinasError):
    """Invalid or expired credentials."""

    reason = "invalid_credentials"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class MissingCredentials(Unauthenticated):
    """Missing authorization header."""

    reason = "missing_credentials"


class PermissionDenied(SinasError):
    """Not authorized."""

    reason = "permission_denied"
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class CallerRoleDenied(PermissionDenied):
    """The calling service's role may not call this method."""

    reason = "caller_role_denied"


class ExecutionTokenNotAllowed(PermissionDenied):
    """An execution token can't be used for management."""

    reason = "execution_token_not_allowed"


class NotFound(SinasError):
    """Not found."""

    reason = "not_found"
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class FunctionNotFound(NotFound):
    """Function not found."""

    reason = "function_not_found"


class ExecutionNotFound(NotFound):
    """Execution not found."""

    reason = "execution_not_found"


class UserNotFound(NotFound):
    """User not found."""

    reason = "user_not_found"


class RoleNotFound(NotFound):
    """Role not found."""

    reason = "role_not_found"


class ApiKeyNotFound(NotFound):
    """API key not found."""

    reason = "api_key_not_found"


class Conflict(SinasError):
    """The resource is in a state that does not allow this."""

    reason = "conflict"
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class AlreadyExists(Conflict):
    """Already exists."""

    reason = "already_exists"
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class InvalidTransition(Conflict):
    """The execution cannot move to that status."""

    reason = "invalid_transition"


class PayloadTooLarge(SinasError):
    """Request body too large."""

    reason = "payload_too_large"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class ServiceUnavailable(SinasError):
    """The service is unavailable; try again."""

    reason = "unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DeadlineExceeded(SinasError):
    """The request took too long."""

    reason = "deadline_exceeded"
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


def _all_error_classes(root: type[SinasError]) -> list[type[SinasError]]:
    found = [root]
    for sub in root.__subclasses__():
        found.extend(_all_error_classes(sub))
    return found


_BY_REASON: dict[str, type[SinasError]] = {
    cls.reason: cls for cls in _all_error_classes(SinasError)
}
# Errors that did not come from our own servers (a transport failure, a proxy) map by code.
_BY_CODE: dict[grpc.StatusCode, type[SinasError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: PayloadTooLarge,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def from_status(code: grpc.StatusCode, message: str, details: bytes | None) -> SinasError:
    """Rebuilds the error a server raised from its status code, message and rich details."""
    reason: str | None = None
    violations: list[FieldViolation] = []
    if details:
        status = status_pb2.Status.FromString(details)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(field=v.field, description=v.description)
                    for v in bad_request.field_violations
                )
    cls = _BY_REASON.get(reason or "") or _BY_CODE.get(code, SinasError)
    return cls(message or None, violations=violations)


_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def from_status_bytes(data: bytes) -> SinasError:
    """The error a serialized google.rpc.Status carries (one answer of several in a reply)."""
    status = status_pb2.Status.FromString(data)
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return from_status(code, status.message, data)


def from_rpc_error(error: grpc.aio.AioRpcError) -> SinasError:
    """The SinasError that a failed gRPC call carries."""
    details: bytes | None = None
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details = value
    return from_status(error.code(), error.details() or "", details)


def is_retryable(error: BaseException) -> bool:
    """The one retry predicate: only transient unavailability is worth another try."""
    return isinstance(error, ServiceUnavailable | DeadlineExceeded)

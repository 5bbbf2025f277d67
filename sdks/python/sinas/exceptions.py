"""The SDK's errors: every failure is a SinasError.

SinasError
├── SinasAPIError                 the server answered with an error status
│   ├── SinasAuthError            401
│   ├── SinasPermissionError      403
│   ├── SinasNotFoundError        404
│   ├── SinasValidationError      400, 413, 422
│   └── SinasConflictError        409
├── SinasConnectionError          no answer (after retries, for idempotent calls)
├── SinasTimeoutError             a wait ran out before the work finished
└── WebhookVerificationError      a callback's signature or timestamp is not acceptable
"""

from __future__ import annotations

from typing import Any

import httpx


class SinasError(Exception):
    """Something went wrong talking to Sinas."""


class SinasAPIError(SinasError):
    """The server answered with an error status.

    Attributes:
        message: the server's `detail` (joined field errors for a 422), else the status text.
        status_code: the HTTP status.
        response: the httpx response, or None.
        detail: the raw `detail` value of the error body (a string or a list of field errors).
        reason: the server's stable machine-readable reason, when it gave one.
    """

    def __init__(
        self, message: str, status_code: int, response: httpx.Response | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.response = response
        body = _error_body(response)
        self.detail: Any = body.get("detail", message)
        self.reason: str | None = (
            body.get("reason") if isinstance(body.get("reason"), str) else None
        )

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class SinasAuthError(SinasAPIError):
    """The credential is missing, malformed, expired or unknown (401)."""


class SinasPermissionError(SinasAPIError):
    """The caller lacks the permission (403)."""


class SinasNotFoundError(SinasAPIError):
    """No such resource, or it belongs to someone else (404)."""


class SinasValidationError(SinasAPIError):
    """The request was rejected as invalid (400, 413 or 422); `detail` names the fields."""


class SinasConflictError(SinasAPIError):
    """The request conflicts with the resource's state or an idempotency key's request (409)."""


class SinasConnectionError(SinasError):
    """The server could not be reached or dropped the connection."""


class SinasTimeoutError(SinasError, TimeoutError):
    """A wait ran out before the execution or batch finished."""


class WebhookVerificationError(SinasError):
    """A callback is not authentic: bad or missing signature, or a timestamp out of tolerance."""


_BY_STATUS: dict[int, type[SinasAPIError]] = {
    400: SinasValidationError,
    401: SinasAuthError,
    403: SinasPermissionError,
    404: SinasNotFoundError,
    409: SinasConflictError,
    413: SinasValidationError,
    422: SinasValidationError,
}


def _error_body(response: httpx.Response | None) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _message(response: httpx.Response) -> str:
    detail = _error_body(response).get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        # FastAPI-style field errors: "inputs.3.n: Field required; ..."
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(part) for part in item.get("loc", []))
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return response.reason_phrase or f"HTTP {response.status_code}"


def error_for(response: httpx.Response) -> SinasAPIError:
    """The exception for an error response, chosen by its status."""
    cls = _BY_STATUS.get(response.status_code, SinasAPIError)
    return cls(_message(response), response.status_code, response)

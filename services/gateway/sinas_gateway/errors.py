"""The one mapping from errors to HTTP responses: every body is {"detail", "reason"}."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sinas_common.errors import CallbackUrlRejected, FieldViolation, SchemaViolation, SinasError
from sinas_common.jsoncodec import dump_json

logger = logging.getLogger(__name__)

SCHEMA_VIOLATION = SchemaViolation.reason
# Upstream answers these with its message as a string `detail`, and apps read it that way.
_MESSAGE_DETAIL_REASONS = frozenset({CallbackUrlRejected.reason})
INVALID_JSON = "invalid_json"
_HTTP_REASONS = {
    400: "invalid_argument",
    401: "invalid_credentials",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
_PATH_PART = re.compile(
    r"\[(?P<index>\d+)\]|\[(?P<quote>['\"])(?P<key>.*?)(?P=quote)\]|(?P<name>[^.\[\]]+)"
)


def field_location(field: str) -> list[str | int]:
    """FastAPI's `loc` for a field path: `input.items[2].name` → body, input, items, 2, name."""
    location: list[str | int] = ["body"]
    for part in _PATH_PART.finditer(field):
        if part.group("index") is not None:
            location.append(int(part.group("index")))
        elif part.group("key") is not None:
            location.append(part.group("key"))
        else:
            location.append(part.group("name"))
    return location


def _violation_items(
    violations: Sequence[FieldViolation], reason: str, fallback_message: str
) -> list[dict[str, Any]]:
    if not violations:
        return [{"loc": ["body"], "msg": fallback_message, "type": reason}]
    return [
        {"loc": field_location(v.field), "msg": v.description, "type": reason} for v in violations
    ]


def error_response(exc: SinasError) -> JSONResponse:
    """The HTTP response for an error the scheduler (or the gateway itself) raised."""
    detail: str | list[dict[str, Any]] = exc.message
    if (exc.violations and exc.reason not in _MESSAGE_DETAIL_REASONS) or isinstance(
        exc, SchemaViolation
    ):
        detail = _violation_items(exc.violations, exc.reason, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(
        status_code=exc.http_status,
        content={"detail": detail, "reason": exc.reason},
        headers=headers,
    )


async def _on_sinas_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SinasError)
    if exc.http_status >= 500:
        logger.warning(
            "request failed on the scheduler side",
            extra={"action": request.url.path, "reason": exc.reason, "error": exc.message},
        )
    return error_response(exc)


def _json_safe(value: Any) -> bool:
    try:
        dump_json(value)
    except (TypeError, ValueError):
        return False
    return True


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 shape, plus a reason; invalid JSON says so plainly."""
    assert isinstance(exc, RequestValidationError)
    reason = SCHEMA_VIOLATION
    items: list[dict[str, Any]] = []
    for error in jsonable_encoder(exc.errors()):
        item = dict(error)
        if item.get("type") == "json_invalid":
            reason = INVALID_JSON
            cause = (item.get("ctx") or {}).get("error", "malformed document")
            item["msg"] = f"Invalid JSON in request body: {cause}"
        # Python's parser admits NaN, which can't be echoed back in a JSON response.
        if "input" in item and not _json_safe(item["input"]):
            del item["input"]
        items.append(item)
    return JSONResponse(status_code=422, content={"detail": items, "reason": reason})


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        status_code=exc.status_code,
        content={"detail": exc.detail, "reason": _HTTP_REASONS.get(exc.status_code, "http_error")},
        headers=exc.headers,
    )


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error in request", exc_info=exc, extra={"action": request.url.path})
    return JSONResponse(
        status_code=500, content={"detail": "Internal server error", "reason": SinasError.reason}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SinasError, _on_sinas_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected_error)

"""Sinas: Python SDK for the async job runtime (functions, batches, agents, signed callbacks)."""

from __future__ import annotations

from sinas import webhooks
from sinas.async_client import AsyncSinasClient
from sinas.client import SinasClient
from sinas.exceptions import (
    SinasAPIError,
    SinasAuthError,
    SinasConflictError,
    SinasConnectionError,
    SinasError,
    SinasNotFoundError,
    SinasPermissionError,
    SinasTimeoutError,
    SinasValidationError,
    WebhookVerificationError,
)

__version__ = "0.4.0"
__all__ = [
    "AsyncSinasClient",
    "SinasAPIError",
    "SinasAuthError",
    "SinasClient",
    "SinasConflictError",
    "SinasConnectionError",
    "SinasError",
    "SinasNotFoundError",
    "SinasPermissionError",
    "SinasTimeoutError",
    "SinasValidationError",
    "WebhookVerificationError",
    "__version__",
    "webhooks",
]

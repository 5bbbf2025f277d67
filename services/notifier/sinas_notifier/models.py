"""The notifier's domain values: a claimed callback and the outcome of its one attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackClaim:
    """A callback this notifier holds the only right to send."""

    execution_id: str
    callback_url: str
    webhook_id: str
    access_token: str
    payload_json: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    claims: tuple[CallbackClaim, ...]
    skipped_execution_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOutcome:
    """What happened to the one attempt: `sent` only for a 2xx answer."""

    execution_id: str
    sent: bool
    # None when no response arrived (timeout, TLS, refused, policy rejection).
    response_code: int | None
    error: str
    attempted_at: datetime

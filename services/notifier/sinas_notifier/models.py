"""The notifier's domain values: a claimed callback and the outcome of its one attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

BATCH_KEY_PREFIX = "batch:"


def callback_key(execution_id: str, batch_id: str = "") -> str:
    """One namespace for both kinds: an execution id, or `batch:` and the batch id."""
    return f"{BATCH_KEY_PREFIX}{batch_id}" if batch_id else execution_id


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackClaim:
    """A callback this notifier holds the only right to send."""

    execution_id: str
    callback_url: str
    webhook_id: str
    access_token: str
    payload_json: bytes
    # Set (and execution_id empty) for a batch-summary callback.
    batch_id: str = ""

    @property
    def key(self) -> str:
        """What identifies this callback among everything the notifier holds."""
        return callback_key(self.execution_id, self.batch_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    claims: tuple[CallbackClaim, ...]
    skipped_execution_ids: tuple[str, ...]
    skipped_batch_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOutcome:
    """What happened to the one attempt: `sent` only for a 2xx answer."""

    execution_id: str
    sent: bool
    # None when no response arrived (timeout, TLS, refused, policy rejection).
    response_code: int | None
    error: str
    attempted_at: datetime
    # Set (and execution_id empty) for a batch-summary callback.
    batch_id: str = ""

    @property
    def key(self) -> str:
        return callback_key(self.execution_id, self.batch_id)

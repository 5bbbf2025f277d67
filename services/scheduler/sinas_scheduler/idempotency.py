"""Idempotent submits: the request fingerprint, the key rule, and what a retry with a used key gets.

A key is reserved per user in the same transaction that stores the work, so of two concurrent
requests with one key exactly one stores anything; the other gets the first one's answer (same
request) or AlreadyExists (a different request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sinas_common.errors import AlreadyExists, FieldViolation, InvalidArgument

IDEMPOTENCY_KEY_MAX_LENGTH = 255
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 86400

# The endpoint is part of the fingerprint: one key can't stand for a single submit and a batch.
ENDPOINT_EXECUTE_ASYNC = "execute/async"
ENDPOINT_EXECUTE_BATCH = "execute/batch"
ENDPOINT_AGENT_EXECUTE_ASYNC = "agents/execute/async"
ENDPOINT_AGENT_CHATS_BATCH = "agents/chats/batch"

KEY_REUSED_MESSAGE = "Idempotency-Key was already used for a different request"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyReservation:
    """What a submit stores under its key, in the transaction that stores the work."""

    user_id: str
    key: str
    fingerprint: str
    response: Any
    ttl_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResponse:
    """The answer an earlier request with the same key got, and that request's fingerprint."""

    fingerprint: str
    response: Any


def check_idempotency_key(key: str) -> None:
    """1 to 255 printable ASCII characters, as an HTTP header value can carry them."""
    if not (0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH and key.isascii() and key.isprintable()):
        raise InvalidArgument(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters",
            violations=[
                FieldViolation(
                    field="idempotency_key",
                    description=f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters",
                )
            ],
        )


def request_fingerprint(endpoint: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical JSON form: sorted keys, no whitespace, numbers as given."""
    canonical = json.dumps(
        {"endpoint": endpoint, "request": dict(fields)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(stored: StoredResponse, fingerprint: str) -> Any:
    """The original answer for a retry of the same request; a different one is a conflict."""
    if stored.fingerprint != fingerprint:
        raise AlreadyExists(KEY_REUSED_MESSAGE)
    return stored.response

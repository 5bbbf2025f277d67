"""Verify Sinas callbacks: Standard Webhooks signatures over the raw body, with a timestamp window.

A callback carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, possibly
several separated by spaces while a secret rotates). The secret is the instance's
``CALLBACK_SIGNING_SECRET`` (``whsec_<base64>``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from sinas.exceptions import WebhookVerificationError

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


def signing_key(secret: str | bytes) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; raw bytes are used as they are."""
    if isinstance(secret, bytes):
        return secret
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret has the form whsec_<base64>")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be base64 after whsec_") from exc


def sign(secret: str | bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value the server sends for this message."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode('ascii')}"


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Check a callback and return its parsed JSON payload.

    Args:
        headers: the request headers (any letter case).
        body: the raw request body, exactly as received; re-serialised JSON won't verify.
        secret: the instance's ``whsec_...`` signing secret.
        tolerance: how many seconds the timestamp may differ from now, against replays.
        now: the current Unix time, for tests.

    Raises:
        WebhookVerificationError: a header is missing, the timestamp is outside the
            tolerance, no signature matches, or the body is not JSON.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    webhook_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not webhook_id or not raw_timestamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    # Compare every offered signature in constant time; any v1 match is enough.
    matched = False
    for offered in signatures.split():
        matched |= hmac.compare_digest(offered.encode(), expected)
    if not matched:
        raise WebhookVerificationError("no webhook-signature matches")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError("the callback body is not JSON") from exc

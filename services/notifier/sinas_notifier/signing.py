"""Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over id.ts.body."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"
# Shorter keys make HMAC-SHA256 guessable; the Standard Webhooks guidance is 24 to 64 bytes.
MIN_SECRET_BYTES = 16


def parse_signing_secret(value: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError when it is malformed."""
    if not value.startswith(SECRET_PREFIX):
        raise ValueError("CALLBACK_SIGNING_SECRET must have the form whsec_<base64>")
    try:
        key = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("CALLBACK_SIGNING_SECRET is not valid base64 after whsec_") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"CALLBACK_SIGNING_SECRET must hold at least {MIN_SECRET_BYTES} bytes")
    return key


class WebhookSigner:
    """Signs callback bodies with the instance's secret."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def signature(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` header value for one message."""
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return f"v1,{base64.b64encode(digest).decode('ascii')}"

    def headers(self, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers."""
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(webhook_id, timestamp, body),
        }

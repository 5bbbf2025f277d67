"""Callback verification: the SDK accepts what the notifier signs, and nothing else."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from sinas import WebhookVerificationError, webhooks
from sinas.integrations.fastapi import WebhookVerifier
from sinas_notifier.signing import WebhookSigner, parse_signing_secret

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
BODY = json.dumps({"execution_id": "e1", "status": "success", "result": {"n": 1}}).encode()


def signed_headers(body: bytes = BODY, *, timestamp: int | None = None) -> dict[str, str]:
    """Headers exactly as the notifier sends them."""
    signer = WebhookSigner(parse_signing_secret(SECRET))
    return signer.headers("e1", int(time.time()) if timestamp is None else timestamp, body)


def test_a_notifier_signed_callback_verifies_and_parses() -> None:
    headers = {name.title(): value for name, value in signed_headers().items()}
    assert webhooks.verify(headers, BODY, SECRET) == json.loads(BODY)


def test_a_rotated_secret_still_verifies_when_any_signature_matches() -> None:
    headers = signed_headers()
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    assert webhooks.verify(headers, BODY, SECRET)["execution_id"] == "e1"


# Headers are built when each case runs (not at collection), so the suite's own duration
# can never push a "fresh" timestamp outside the tolerance.
@pytest.mark.parametrize(
    ("make_headers", "body", "secret", "why"),
    [
        (lambda: signed_headers(), BODY + b" ", SECRET, "signature"),
        (
            lambda: signed_headers(),
            BODY,
            "whsec_" + base64.b64encode(b"x" * 32).decode(),
            "signature",
        ),
        (lambda: signed_headers(timestamp=int(time.time()) - 3600), BODY, SECRET, "tolerance"),
        (lambda: signed_headers(timestamp=int(time.time()) + 3600), BODY, SECRET, "tolerance"),
        (lambda: {"webhook-id": "e1"}, BODY, SECRET, "missing"),
        (lambda: signed_headers(b"not json"), b"not json", SECRET, "JSON"),
    ],
)
def test_anything_else_is_rejected(
    make_headers: Callable[[], dict[str, str]], body: bytes, secret: str, why: str
) -> None:
    with pytest.raises(WebhookVerificationError, match=why):
        webhooks.verify(make_headers(), body, secret)


def test_the_tolerance_is_configurable() -> None:
    old = int(time.time()) - 600
    assert webhooks.verify(signed_headers(timestamp=old), BODY, SECRET, tolerance=900)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(signed_headers(timestamp=old), BODY, SECRET, now=old + 301)


def test_a_malformed_secret_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        WebhookVerifier("plain-text")


async def test_the_fastapi_dependency_returns_the_payload_or_answers_401() -> None:
    received: list[Any] = []
    app = FastAPI()

    @app.post("/callbacks")
    async def callback(payload: Annotated[Any, Depends(WebhookVerifier(SECRET))]) -> None:
        received.append(payload)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver.test"
    ) as client:
        accepted = await client.post("/callbacks", content=BODY, headers=signed_headers())
        tampered = await client.post(
            "/callbacks", content=BODY.replace(b"success", b"failure"), headers=signed_headers()
        )
    assert accepted.status_code == 200
    assert tampered.status_code == 401
    assert tampered.json() == {"detail": "no webhook-signature matches"}
    assert received == [json.loads(BODY)]

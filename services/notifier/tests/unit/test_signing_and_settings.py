"""Standard Webhooks signatures and the notifier's settings validation."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from sinas_notifier.settings import NotifierSettings
from sinas_notifier.signing import WebhookSigner, parse_signing_secret

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_standard_webhooks_vector() -> None:
    signer = WebhookSigner(parse_signing_secret(VECTOR_SECRET))
    assert signer.signature(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert signer.headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_signature_covers_id_timestamp_and_body() -> None:
    signer = WebhookSigner(parse_signing_secret(VECTOR_SECRET))
    others = {
        signer.signature("msg_other", VECTOR_TIMESTAMP, VECTOR_BODY),
        signer.signature(VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY),
        signer.signature(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY + b" "),
    }
    assert VECTOR_SIGNATURE not in others
    assert len(others) == 3


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_",
    ],
)
def test_malformed_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        parse_signing_secret(secret)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., NotifierSettings]:
    """Loads settings from these environment variables (nested sections read their own)."""

    def load(**env: str) -> NotifierSettings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return NotifierSettings()

    return load


def test_callbacks_disabled_need_no_secret(settings: Callable[..., NotifierSettings]) -> None:
    loaded = settings()
    assert loaded.delivery.signing_secret is None
    assert loaded.delivery.secret_bytes() is None
    assert settings(CALLBACK_SIGNING_SECRET="", CALLBACK_CA_FILE="").delivery.ca_file is None


def test_enabled_callbacks_require_a_secret(settings: Callable[..., NotifierSettings]) -> None:
    with pytest.raises(ValidationError, match="CALLBACK_SIGNING_SECRET is required"):
        settings(CALLBACK_URL_HOSTS="example.com")
    loaded = settings(CALLBACK_URL_HOSTS="example.com", CALLBACK_SIGNING_SECRET=VECTOR_SECRET)
    assert loaded.delivery.secret_bytes() == base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    # A secret never shows in the settings' text form.
    assert VECTOR_SECRET not in repr(loaded)


def test_malformed_secret_fails_at_start(settings: Callable[..., NotifierSettings]) -> None:
    with pytest.raises(ValidationError, match="whsec_"):
        settings(CALLBACK_SIGNING_SECRET="plain-text")


def test_defaults(settings: Callable[..., NotifierSettings]) -> None:
    loaded = settings()
    assert loaded.delivery.timeout_seconds == 10.0
    assert loaded.concurrency == 64
    assert loaded.fetch_batch == 100
    assert loaded.grpc_bind == "127.0.0.1:50071"

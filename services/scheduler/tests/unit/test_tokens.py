"""Minting and verifying EdDSA tokens, and rejecting everything else."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt
import pytest

from sinas_common.errors import Unauthenticated
from sinas_common.timeconv import utcnow
from sinas_scheduler.tokens import TokenService, execution_token_lifetime, generate_signing_key


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(generate_signing_key(), [])


def mint(tokens: TokenService, **overrides: object) -> str:
    values: dict[str, object] = {
        "user_id": "user-1",
        "email": "u@example.com",
        "now": utcnow(),
        "lifetime": timedelta(minutes=5),
        "execution_id": "exec-1",
        "execution_depth": 2,
        **overrides,
    }
    return tokens.mint(**values)  # type: ignore[arg-type]


def test_round_trip_carries_the_claims(tokens: TokenService) -> None:
    token = mint(tokens)
    claims = tokens.verify(token)
    assert (claims.user_id, claims.email, claims.scope) == ("user-1", "u@example.com", "execution")
    assert (claims.execution_id, claims.execution_depth) == ("exec-1", 2)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("EdDSA", tokens.kid)
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["iss"] == "sinas" and raw["jti"] and raw["exp"] - raw["iat"] == 300


def test_an_app_verifies_a_token_with_the_published_jwks(tokens: TokenService) -> None:
    """What an app does with `/.well-known/jwks.json`: a standard library, no help from us."""
    token = mint(tokens, email="zoë@example.com")
    [jwk] = tokens.jwks()["keys"]
    key = jwt.PyJWK.from_dict(jwk)
    claims = jwt.decode(token, key, algorithms=["EdDSA"], issuer="sinas")
    assert (claims["sub"], claims["email"], claims["execution_id"]) == (
        "user-1",
        "zoë@example.com",
        "exec-1",
    )
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": tokens.kid, "typ": "JWT"}
    # Compact serialization: three base64url segments without padding.
    assert token.count(".") == 2 and "=" not in token


def test_a_tampered_signature_fails_for_apps_too(tokens: TokenService) -> None:
    token = mint(tokens)
    header, payload, signature = token.split(".")
    changed = "A" if signature[10] != "A" else "B"
    forged = f"{header}.{payload}.{signature[:10]}{changed}{signature[11:]}"
    [jwk] = tokens.jwks()["keys"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, jwt.PyJWK.from_dict(jwk), algorithms=["EdDSA"])


def test_verifies_with_an_older_key_too() -> None:
    old = generate_signing_key()
    token = mint(TokenService(old, []))
    assert TokenService(generate_signing_key(), [old]).verify(token).user_id == "user-1"


def test_rejects_expired(tokens: TokenService) -> None:
    token = mint(tokens, now=utcnow() - timedelta(hours=1))
    with pytest.raises(Unauthenticated):
        tokens.verify(token)


def test_rejects_another_key_even_with_our_kid(tokens: TokenService) -> None:
    other = TokenService(generate_signing_key(), [])
    forged = mint(other)
    with pytest.raises(Unauthenticated):
        tokens.verify(forged)
    header, payload, signature = forged.split(".")
    ours = json.loads(base64.urlsafe_b64decode(header + "=="))
    ours["kid"] = tokens.kid
    relabelled = base64.urlsafe_b64encode(json.dumps(ours).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated):
        tokens.verify(f"{relabelled}.{payload}.{signature}")


def test_rejects_alg_none_and_hmac(tokens: TokenService) -> None:
    claims = jwt.decode(mint(tokens), options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": tokens.kid})
    hmac = jwt.encode(claims, key="x" * 32, algorithm="HS256", headers={"kid": tokens.kid})
    for token in (unsigned, hmac):
        with pytest.raises(Unauthenticated):
            tokens.verify(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 5000])
def test_rejects_garbage(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        tokens.verify(garbage)


def test_rejects_missing_required_claims(tokens: TokenService) -> None:
    key = generate_signing_key()
    service = TokenService(key, [])
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.private_key_pem.encode(), None)
    now = int(utcnow().timestamp())
    token = jwt.encode(
        {"sub": "u", "iat": now, "exp": now + 60},  # no iss, no jti
        private,  # type: ignore[arg-type]
        algorithm="EdDSA",
        headers={"kid": key.kid},
    )
    with pytest.raises(Unauthenticated):
        service.verify(token)


def test_jwks_has_public_keys_only(tokens: TokenService) -> None:
    [jwk] = tokens.jwks()["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == tokens.kid
    assert "d" not in jwk


def test_execution_token_lifetime() -> None:
    assert execution_token_lifetime(
        function_timeout_seconds=300, buffer_seconds=300, max_seconds=86400
    ) == timedelta(seconds=600)
    assert execution_token_lifetime(
        function_timeout_seconds=86400, buffer_seconds=300, max_seconds=86400
    ) == timedelta(seconds=86400)

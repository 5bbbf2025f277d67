"""EdDSA (Ed25519) JWTs: signing keys, per-execution and callback tokens, verification, JWKS."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sinas_common.errors import Unauthenticated
from sinas_common.ids import uuid7
from sinas_scheduler.models import SigningKey

ALGORITHM = "EdDSA"
ISSUER = "sinas"
SCOPE_EXECUTION = "execution"
# A callback's token proves who the job ran for; only GetMe accepts it.
SCOPE_CALLBACK = "callback"
_REQUIRED_CLAIMS = ["iss", "sub", "iat", "exp", "jti"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    user_id: str
    email: str
    scope: str
    execution_id: str | None
    execution_depth: int | None
    expires_at: datetime


def generate_signing_key() -> SigningKey:
    """A fresh Ed25519 key with a random kid; the public half as a JWK."""
    private = Ed25519PrivateKey.generate()
    kid = secrets.token_urlsafe(12)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(
        kid=kid, algorithm=ALGORITHM, private_key_pem=pem, public_jwk=public_jwk(private, kid)
    )


def public_jwk(private: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return jwk


def _segment(data: bytes) -> bytes:
    """base64url without padding, as a JWS compact serialization (RFC 7515) wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def execution_token_lifetime(
    *, function_timeout_seconds: int, buffer_seconds: int, max_seconds: int
) -> timedelta:
    """The function's timeout plus the buffer, capped."""
    return timedelta(seconds=min(function_timeout_seconds + buffer_seconds, max_seconds))


class TokenService:
    """Mints with the newest key and verifies against every known, non-retired key."""

    def __init__(self, signing_key: SigningKey, verification_keys: Iterable[SigningKey]) -> None:
        self._kid = signing_key.kid
        # Every token we mint has this header. Minting writes the compact form itself: one is
        # minted per execution run, and PyJWT's encoder re-checked and re-encoded this same
        # header for each, costing more than the Ed25519 signature does.
        self._header = _segment(_compact_json({"alg": ALGORITHM, "kid": self._kid, "typ": "JWT"}))
        private = serialization.load_pem_private_key(signing_key.private_key_pem.encode(), None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError("the signing key is not an Ed25519 key")
        self._private = private
        self._public: dict[str, Ed25519PublicKey] = {}
        self._jwks: list[dict[str, Any]] = []
        for key in [signing_key, *verification_keys]:
            if key.kid in self._public:
                continue
            loaded = serialization.load_pem_private_key(key.private_key_pem.encode(), None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError("a verification key is not an Ed25519 key")
            self._public[key.kid] = loaded.public_key()
            self._jwks.append(dict(key.public_jwk))

    @property
    def kid(self) -> str:
        return self._kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def mint(
        self,
        *,
        user_id: str,
        email: str,
        now: datetime,
        lifetime: timedelta,
        scope: str = SCOPE_EXECUTION,
        execution_id: str | None = None,
        execution_depth: int | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": user_id,
            "email": email,
            "iat": int(now.timestamp()),
            "exp": int((now + lifetime).timestamp()),
            "jti": uuid7(),
            "scope": scope,
        }
        if execution_id is not None:
            claims["execution_id"] = execution_id
        if execution_depth is not None:
            claims["execution_depth"] = execution_depth
        signing_input = self._header + b"." + _segment(_compact_json(claims))
        return (signing_input + b"." + _segment(self._private.sign(signing_input))).decode()

    def verify(self, token: str) -> TokenClaims:
        """The claims of a token we signed; anything else is Unauthenticated."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated() from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or kid not in self._public:
            raise Unauthenticated()
        try:
            claims = jwt.decode(
                token,
                self._public[kid],
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated() from exc
        depth = claims.get("execution_depth")
        execution_id = claims.get("execution_id")
        if (
            not isinstance(claims.get("sub"), str)
            or (depth is not None and (not isinstance(depth, int) or depth < 0))
            or (execution_id is not None and not isinstance(execution_id, str))
        ):
            raise Unauthenticated()
        return TokenClaims(
            user_id=claims["sub"],
            email=str(claims.get("email", "")),
            scope=str(claims.get("scope", "")),
            execution_id=execution_id,
            execution_depth=depth,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=UTC),
        )

    def knows(self, kid: str) -> bool:
        return kid in self._public

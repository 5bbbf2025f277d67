"""Who is calling: API keys and signed tokens from request metadata, resolved to a Principal."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from sinas_common.errors import MissingCredentials, Unauthenticated
from sinas_scheduler.models import Principal
from sinas_scheduler.store import IdentityStore
from sinas_scheduler.tokens import SCOPE_CALLBACK, SCOPE_EXECUTION, TokenService

API_KEY_PREFIX = "sk-"
KEY_PREFIX_LENGTH = 8
# Tokens every RPC accepts; only GetMe adds callback tokens (ME_SCOPES).
DEFAULT_SCOPES = frozenset({SCOPE_EXECUTION})
ME_SCOPES = frozenset({SCOPE_EXECUTION, SCOPE_CALLBACK})


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:KEY_PREFIX_LENGTH]


def credential_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The presented credential; `x-api-key` wins over `authorization` when both are sent."""
    api_key: str | None = None
    authorization: str | None = None
    for key, value in metadata:
        text = value.decode() if isinstance(value, bytes) else value
        name = key.lower()
        if name == "x-api-key" and text.strip():
            api_key = text.strip()
        elif name == "authorization" and text.strip():
            authorization = text.strip()
    if api_key is not None:
        return api_key
    if authorization is None:
        raise MissingCredentials()
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated()
    return credential.strip()


def _looks_like_jwt(credential: str) -> bool:
    return not credential.startswith(API_KEY_PREFIX) and credential.count(".") == 2


class Authenticator:
    """Resolves credentials; permissions always come from the database, never the token."""

    def __init__(self, store: IdentityStore, tokens: TokenService) -> None:
        self._store = store
        self._tokens = tokens

    async def authenticate(
        self,
        metadata: Iterable[tuple[str, str | bytes]],
        *,
        scopes: frozenset[str] = DEFAULT_SCOPES,
    ) -> Principal:
        credential = credential_from_metadata(metadata)
        if _looks_like_jwt(credential):
            claims = self._tokens.verify(credential)
            if claims.scope not in scopes:
                raise Unauthenticated()
            return await self._principal(
                claims.user_id,
                execution_id=claims.execution_id,
                execution_depth=claims.execution_depth,
            )
        found = await self._store.user_with_permissions_for_api_key(hash_api_key(credential))
        if found is None:
            raise Unauthenticated()
        user, permissions = found
        return Principal(
            user=user, permissions=permissions, execution_id=None, execution_depth=None
        )

    async def _principal(
        self, user_id: str, *, execution_id: str | None, execution_depth: int | None
    ) -> Principal:
        found = await self._store.user_with_permissions(user_id)
        if found is None:
            raise Unauthenticated("User not found")
        user, permissions = found
        return Principal(
            user=user,
            permissions=permissions,
            execution_id=execution_id,
            execution_depth=execution_depth,
        )

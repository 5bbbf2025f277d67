"""Who is calling: API keys and signed tokens from request metadata, resolved to a Principal."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sinas_common.errors import MissingCredentials, Unauthenticated
from sinas_common.expiring import ExpiringCache
from sinas_scheduler.models import Principal, User
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


# Resolved credentials kept at most; past it the oldest makes room.
PRINCIPAL_CACHE_ENTRIES = 10_000


class Authenticator:
    """Resolves credentials; permissions always come from the database, never the token.

    With `cache_seconds` > 0, a credential's user and permissions, once read, are reused for
    that long (never past an API key's expiry), so a caller's every RPC doesn't cost a query:
    a key revoked or a role changed in the database takes effect within `cache_seconds`.
    Failures are never kept.
    """

    def __init__(
        self,
        store: IdentityStore,
        tokens: TokenService,
        *,
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._cache_seconds = cache_seconds
        self._wall_clock = wall_clock
        # ("key", key hash) or ("user", user id) -> (user, permissions)
        self._resolved: ExpiringCache[tuple[str, str], tuple[User, frozenset[str]]] = ExpiringCache(
            max_entries=PRINCIPAL_CACHE_ENTRIES, clock=clock
        )

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
            user, permissions = await self._user(claims.user_id)
            return Principal(
                user=user,
                permissions=permissions,
                execution_id=claims.execution_id,
                execution_depth=claims.execution_depth,
            )
        user, permissions = await self._key_holder(hash_api_key(credential))
        return Principal(
            user=user, permissions=permissions, execution_id=None, execution_depth=None
        )

    async def _key_holder(self, key_hash: str) -> tuple[User, frozenset[str]]:
        cached = self._resolved.get(("key", key_hash))
        if cached is not None:
            return cached
        holder = await self._store.key_holder(key_hash)
        if holder is None:
            raise Unauthenticated()
        found = (holder.user, holder.permissions)
        seconds = self._cache_seconds
        if holder.key_expires_at is not None:
            left = (holder.key_expires_at - self._wall_clock()).total_seconds()
            seconds = min(seconds, left)
        self._resolved.put(("key", key_hash), found, seconds=seconds)
        return found

    async def _user(self, user_id: str) -> tuple[User, frozenset[str]]:
        cached = self._resolved.get(("user", user_id))
        if cached is not None:
            return cached
        found = await self._store.user_with_permissions(user_id)
        if found is None:
            raise Unauthenticated("User not found")
        self._resolved.put(("user", user_id), found, seconds=self._cache_seconds)
        return found

"""Who is calling: API keys and signed tokens from request metadata, resolved to a Principal."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sinas_common.errors import ExecutionTokenNotAllowed, MissingCredentials, Unauthenticated
from sinas_common.expiring import ExpiringCache
from sinas_scheduler.models import Principal, User
from sinas_scheduler.store import IdentityStore
from sinas_scheduler.tokens import SCOPE_CALLBACK, SCOPE_EXECUTION, TokenService

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "sk-"
KEY_PREFIX_LENGTH = 8


class Access(enum.Enum):
    """What an RPC may be called with besides a user's own credential (an API key).

    The default is MANAGEMENT, so an RPC that declares nothing refuses the tokens minted for
    runs: a function's token acts only within the runtime API a function needs.
    """

    # Management (the gateway's `/api/v1/*`): an execution token is refused.
    MANAGEMENT = frozenset[str]()
    # The runtime API (execute, enqueue, batches, executions, chats, agent runs): also a run's
    # own execution token, whose depth then carries into what it submits.
    RUNTIME = frozenset({SCOPE_EXECUTION})
    # GetMe alone: also a callback's token, which proves who a job ran for and nothing more.
    ME = frozenset({SCOPE_EXECUTION, SCOPE_CALLBACK})


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

    When each API key was last used is noted in memory on every use and written in one
    statement by `flush_key_use` (see `record_key_use_forever`), never on the request's path.
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
        # key hash -> when last accepted, since the last flush. Only keys that authenticated
        # get here, so its size is bounded by the live keys, not by what callers send.
        self._key_used: dict[str, datetime] = {}

    async def authenticate(
        self,
        metadata: Iterable[tuple[str, str | bytes]],
        *,
        access: Access = Access.MANAGEMENT,
    ) -> Principal:
        """The caller, if its credential is good for `access`.

        Raises:
            MissingCredentials, Unauthenticated: no credential, a bad one, or a token of a
                scope this call never accepts (a callback token anywhere but GetMe).
            ExecutionTokenNotAllowed: an execution token on a management call.
        """
        credential = credential_from_metadata(metadata)
        if _looks_like_jwt(credential):
            claims = self._tokens.verify(credential)
            if claims.scope not in access.value:
                if claims.scope == SCOPE_EXECUTION:
                    raise ExecutionTokenNotAllowed()
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
            self._key_used[key_hash] = self._wall_clock()
            return cached
        holder = await self._store.key_holder(key_hash)
        if holder is None:
            raise Unauthenticated()
        found = (holder.user, holder.permissions)
        now = self._wall_clock()
        seconds = self._cache_seconds
        if holder.key_expires_at is not None:
            seconds = min(seconds, (holder.key_expires_at - now).total_seconds())
        self._resolved.put(("key", key_hash), found, seconds=seconds)
        self._key_used[key_hash] = now
        return found

    async def flush_key_use(self) -> None:
        """Writes when each key used since the last flush was last used; on failure the times
        are kept for the next flush (unless a newer use replaced them)."""
        if not self._key_used:
            return
        used, self._key_used = self._key_used, {}
        try:
            await self._store.record_key_use(used)
        except BaseException:
            for key_hash, when in used.items():
                self._key_used.setdefault(key_hash, when)
            raise

    async def _user(self, user_id: str) -> tuple[User, frozenset[str]]:
        cached = self._resolved.get(("user", user_id))
        if cached is not None:
            return cached
        found = await self._store.user_with_permissions(user_id)
        if found is None:
            raise Unauthenticated("User not found")
        self._resolved.put(("user", user_id), found, seconds=self._cache_seconds)
        return found


async def record_key_use_forever(auth: Authenticator, interval_seconds: float) -> None:
    """Flushes `auth`'s key use every `interval_seconds`: one write per interval, however
    often each key is used, so `last_used_at` lags by at most that much."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await auth.flush_key_use()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("recording API key use failed", extra={"action": "key_use"})

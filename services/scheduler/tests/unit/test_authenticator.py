"""The Authenticator's cache of resolved credentials: reused for its seconds, never past an API
key's expiry, failures never kept, and off at 0."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from sinas_common.errors import ServiceUnavailable, Unauthenticated
from sinas_scheduler.identity import Access, Authenticator, hash_api_key
from sinas_scheduler.models import KeyHolder, User
from sinas_scheduler.tokens import SCOPE_EXECUTION, TokenService, generate_signing_key

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
USER = User(id="user-1", email="u@example.com", roles=("Users",), created_at=NOW)
PERMISSIONS = frozenset({"sinas.functions/*/*.execute:own"})
KEY = "sk-test-key"


class Clocks:
    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return NOW + timedelta(seconds=self.seconds)


class CountingIdentityStore:
    """One key and one user; counts every read."""

    def __init__(self, *, key_expires_at: datetime | None = None) -> None:
        self.key_expires_at = key_expires_at
        self.live_keys = {hash_api_key(KEY)}
        self.key_reads = 0
        self.user_reads = 0
        self.key_use_writes: list[dict[str, datetime]] = []
        self.fail_key_use = False

    async def key_holder(self, key_hash: str) -> KeyHolder | None:
        self.key_reads += 1
        if key_hash not in self.live_keys:
            return None
        return KeyHolder(user=USER, permissions=PERMISSIONS, key_expires_at=self.key_expires_at)

    async def user_with_permissions(self, user_id: str) -> tuple[User, frozenset[str]] | None:
        self.user_reads += 1
        return (USER, PERMISSIONS) if user_id == USER.id else None

    async def record_key_use(self, last_used: Mapping[str, datetime]) -> None:
        if self.fail_key_use:
            raise ServiceUnavailable()
        self.key_use_writes.append(dict(last_used))


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(generate_signing_key(), [])


def authenticator(
    store: CountingIdentityStore, tokens: TokenService, clocks: Clocks, seconds: float
) -> Authenticator:
    return Authenticator(
        store,  # type: ignore[arg-type]
        tokens,
        cache_seconds=seconds,
        clock=clocks.monotonic,
        wall_clock=clocks.wall,
    )


async def test_an_api_key_is_read_once_per_period(tokens: TokenService) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    auth = authenticator(store, tokens, clocks, 2.0)
    for _ in range(3):
        principal = await auth.authenticate([("x-api-key", KEY)])
        assert (principal.user, principal.permissions) == (USER, PERMISSIONS)
        assert principal.execution_id is None
    assert store.key_reads == 1
    # Revoked meanwhile: still accepted within the period, refused after it.
    store.live_keys.clear()
    clocks.seconds = 1.9
    await auth.authenticate([("x-api-key", KEY)])
    clocks.seconds = 2.0
    with pytest.raises(Unauthenticated):
        await auth.authenticate([("x-api-key", KEY)])
    assert store.key_reads == 2


async def test_a_key_is_never_reused_past_its_expiry(tokens: TokenService) -> None:
    store, clocks = CountingIdentityStore(key_expires_at=NOW + timedelta(seconds=0.5)), Clocks()
    auth = authenticator(store, tokens, clocks, 60.0)
    await auth.authenticate([("x-api-key", KEY)])
    clocks.seconds = 0.4
    await auth.authenticate([("x-api-key", KEY)])
    assert store.key_reads == 1
    clocks.seconds = 0.5
    await auth.authenticate([("x-api-key", KEY)])
    assert store.key_reads == 2


async def test_failures_are_not_kept(tokens: TokenService) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    store.live_keys.clear()
    auth = authenticator(store, tokens, clocks, 60.0)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authenticate([("x-api-key", KEY)])
    assert store.key_reads == 2
    store.live_keys.add(hash_api_key(KEY))
    assert (await auth.authenticate([("x-api-key", KEY)])).user == USER


async def test_a_token_reuses_its_users_permissions_with_its_own_context(
    tokens: TokenService,
) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    auth = authenticator(store, tokens, clocks, 2.0)
    first, second = (
        tokens.mint(
            user_id=USER.id,
            email=USER.email,
            now=datetime.now(UTC),
            lifetime=timedelta(minutes=5),
            scope=SCOPE_EXECUTION,
            execution_id=f"exec-{depth + 1}",
            execution_depth=depth,
        )
        for depth in (0, 1)
    )
    one = await auth.authenticate([("authorization", f"Bearer {first}")], access=Access.RUNTIME)
    two = await auth.authenticate([("authorization", f"Bearer {second}")], access=Access.RUNTIME)
    assert (one.execution_id, one.execution_depth) == ("exec-1", 0)
    assert (two.execution_id, two.execution_depth) == ("exec-2", 1)
    assert two.permissions == PERMISSIONS
    assert store.user_reads == 1


async def test_zero_seconds_reads_every_time(tokens: TokenService) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    auth = authenticator(store, tokens, clocks, 0.0)
    for _ in range(3):
        await auth.authenticate([("x-api-key", KEY)])
    assert store.key_reads == 3


async def test_key_use_is_noted_per_request_and_written_once_per_flush(
    tokens: TokenService,
) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    auth = authenticator(store, tokens, clocks, 60.0)
    for second in range(5):
        clocks.seconds = float(second)
        await auth.authenticate([("x-api-key", KEY)])
    # Authenticating wrote nothing; the flush writes the latest use, once.
    assert store.key_use_writes == []
    await auth.flush_key_use()
    assert store.key_use_writes == [{hash_api_key(KEY): NOW + timedelta(seconds=4)}]
    # Nothing used since: the next flush writes nothing.
    await auth.flush_key_use()
    assert len(store.key_use_writes) == 1


async def test_refused_credentials_note_no_use(tokens: TokenService) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    auth = authenticator(store, tokens, clocks, 60.0)
    for credential in ("sk-unknown", "sk-other"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate([("x-api-key", credential)])
    await auth.flush_key_use()
    assert store.key_use_writes == []


async def test_a_failed_flush_keeps_the_uses_for_the_next(tokens: TokenService) -> None:
    store, clocks = CountingIdentityStore(), Clocks()
    auth = authenticator(store, tokens, clocks, 60.0)
    await auth.authenticate([("x-api-key", KEY)])
    store.fail_key_use = True
    with pytest.raises(ServiceUnavailable):
        await auth.flush_key_use()
    store.fail_key_use = False
    await auth.flush_key_use()
    assert store.key_use_writes == [{hash_api_key(KEY): NOW}]

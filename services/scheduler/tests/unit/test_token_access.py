"""Which calls take which credential: a run's token only the runtime API, never management."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sinas_common.errors import ExecutionTokenNotAllowed, PermissionDenied, Unauthenticated
from sinas_scheduler.identity import Access, Authenticator, hash_api_key
from sinas_scheduler.models import KeyHolder, User
from sinas_scheduler.tokens import (
    SCOPE_CALLBACK,
    SCOPE_EXECUTION,
    TokenService,
    generate_signing_key,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
USER = User(id="user-1", email="u@example.com", roles=("Users",), created_at=NOW)
PERMISSIONS = frozenset({"sinas.functions/*/*.execute:own"})
KEY = "sk-test-key"


class OneUserStore:
    async def key_holder(self, key_hash: str) -> KeyHolder | None:
        if key_hash != hash_api_key(KEY):
            return None
        return KeyHolder(user=USER, permissions=PERMISSIONS, key_expires_at=None)

    async def user_with_permissions(self, user_id: str) -> tuple[User, frozenset[str]] | None:
        return (USER, PERMISSIONS) if user_id == USER.id else None


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(generate_signing_key(), [])


@pytest.fixture
def auth(tokens: TokenService) -> Authenticator:
    return Authenticator(OneUserStore(), tokens)  # type: ignore[arg-type]


def bearer(tokens: TokenService, scope: str) -> list[tuple[str, str]]:
    token = tokens.mint(
        user_id=USER.id,
        email=USER.email,
        now=datetime.now(UTC),
        lifetime=timedelta(minutes=5),
        scope=scope,
        execution_id="exec-1" if scope == SCOPE_EXECUTION else None,
        execution_depth=2 if scope == SCOPE_EXECUTION else None,
    )
    return [("authorization", f"Bearer {token}")]


async def test_an_execution_token_is_refused_by_management_with_its_own_reason(
    auth: Authenticator, tokens: TokenService
) -> None:
    metadata = bearer(tokens, SCOPE_EXECUTION)
    # The default: an RPC that declares nothing is a management one.
    for call in (
        auth.authenticate(metadata),
        auth.authenticate(metadata, access=Access.MANAGEMENT),
    ):
        with pytest.raises(ExecutionTokenNotAllowed) as refused:
            await call
        assert isinstance(refused.value, PermissionDenied)
        assert refused.value.reason == "execution_token_not_allowed"
        assert refused.value.to_status().code == 7  # PERMISSION_DENIED
        assert "execution token" in refused.value.message


async def test_an_execution_token_works_on_the_runtime_api_and_me_with_its_depth(
    auth: Authenticator, tokens: TokenService
) -> None:
    metadata = bearer(tokens, SCOPE_EXECUTION)
    for access in (Access.RUNTIME, Access.ME):
        principal = await auth.authenticate(metadata, access=access)
        assert (principal.user, principal.execution_id, principal.execution_depth) == (
            USER,
            "exec-1",
            2,
        )


async def test_a_callback_token_is_good_for_me_alone(
    auth: Authenticator, tokens: TokenService
) -> None:
    metadata = bearer(tokens, SCOPE_CALLBACK)
    for access in (Access.MANAGEMENT, Access.RUNTIME):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(metadata, access=access)
    assert (await auth.authenticate(metadata, access=Access.ME)).user == USER


async def test_a_token_of_an_unknown_scope_is_unauthenticated_everywhere(
    auth: Authenticator, tokens: TokenService
) -> None:
    metadata = bearer(tokens, "admin")
    for access in Access:
        with pytest.raises(Unauthenticated):
            await auth.authenticate(metadata, access=access)


async def test_an_api_key_works_everywhere_without_a_depth(auth: Authenticator) -> None:
    for access in Access:
        principal = await auth.authenticate([("x-api-key", KEY)], access=access)
        assert (principal.user, principal.execution_depth) == (USER, None)

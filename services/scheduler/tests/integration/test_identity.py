"""Identity over gRPC: bootstrap admin, default roles, users, keys (listed, expired, revoked),
credentials and tokens."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import (
    AlreadyExists,
    ApiKeyNotFound,
    ExecutionTokenNotAllowed,
    InvalidArgument,
    MissingCredentials,
    PermissionDenied,
    RoleNotFound,
    Unauthenticated,
)
from sinas_common.grpc_client import invoke
from sinas_common.ids import uuid7
from sinas_common.timeconv import to_timestamp, utcnow
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.identity import hash_api_key
from sinas_scheduler.pg import HotPool
from sinas_scheduler.postgres_identity import PostgresIdentityStore
from sinas_scheduler.testing import RunningScheduler, bearer, stop_in_process
from sinas_scheduler.tokens import SCOPE_EXECUTION, TokenService, generate_signing_key

StartScheduler = Callable[..., Awaitable[RunningScheduler]]


async def me(scheduler: RunningScheduler, metadata: list[tuple[str, str]]) -> pb.User:
    response = await invoke(scheduler.identity.GetMe, pb.GetMeRequest(), metadata=metadata)
    user: pb.User = response.user
    return user


async def test_bootstrap_admin_holds_admins_role(scheduler: RunningScheduler) -> None:
    user = await me(scheduler, scheduler.admin)
    assert user.email == "admin@sinas.local"
    assert list(user.roles) == ["Admins"]
    assert user.HasField("created_at")
    assert not user.HasField("last_login_at")


async def test_x_api_key_works_and_wins_over_authorization(scheduler: RunningScheduler) -> None:
    user, key = await scheduler.create_user(["Users"])
    assert (await me(scheduler, [("x-api-key", key)])).id == user.id
    both = [("authorization", f"Bearer {scheduler.admin_key}"), ("x-api-key", key)]
    assert (await me(scheduler, both)).id == user.id


async def test_missing_and_bad_credentials(scheduler: RunningScheduler) -> None:
    with pytest.raises(MissingCredentials, match="Missing authorization header"):
        await me(scheduler, [])
    for metadata in (
        bearer("sk-not-a-key"),
        bearer("garbage"),
        bearer("a.b.c"),
        [("authorization", f"Basic {scheduler.admin_key}")],
    ):
        with pytest.raises(Unauthenticated, match="Invalid or expired credentials"):
            await me(scheduler, metadata)


async def test_default_roles_are_ensured_idempotently(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    async with db.connect() as conn:
        rows = dict((await conn.execute(sa.text("SELECT name, permissions FROM roles"))).all())
    assert rows["Admins"] == ["sinas.*:all"]
    assert "sinas.functions/*/*.execute:own" in rows["Users"]
    assert "sinas.executions.read:own" in rows["Users"]
    assert rows["GuestUsers"] == ["sinas.users.read:own", "sinas.users.update:own"]


async def test_replicas_starting_together_share_admin_and_signing_key(
    start_scheduler: Callable[[], Awaitable[RunningScheduler]], db: AsyncEngine
) -> None:
    first, second = await asyncio.gather(start_scheduler(), start_scheduler())
    assert (await me(first, first.admin)).id == (await me(second, second.admin)).id
    async with db.connect() as conn:
        keys = (await conn.execute(sa.text("SELECT count(*) FROM signing_keys"))).scalar()
        admins = (await conn.execute(sa.text("SELECT count(*) FROM users"))).scalar()
        api_keys = (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar()
    assert (keys, admins, api_keys) == (1, 1, 1)
    jwks_one = await invoke(first.identity.GetJwks, pb.GetJwksRequest())
    jwks_two = await invoke(second.identity.GetJwks, pb.GetJwksRequest())
    assert jwks_one.jwks_json == jwks_two.jwks_json


async def test_roles_users_and_keys(scheduler: RunningScheduler) -> None:
    role = (
        await invoke(
            scheduler.identity.CreateRole,
            pb.CreateRoleRequest(name="Runners", permissions=["sinas.functions/a/*.execute:own"]),
            metadata=scheduler.admin,
        )
    ).role
    assert list(role.permissions) == ["sinas.functions/a/*.execute:own"]
    with pytest.raises(AlreadyExists):
        await invoke(
            scheduler.identity.CreateRole,
            pb.CreateRoleRequest(name="Runners"),
            metadata=scheduler.admin,
        )
    with pytest.raises(RoleNotFound):
        await invoke(
            scheduler.identity.CreateUser,
            pb.CreateUserRequest(email="x@example.com", roles=["Nope"]),
            metadata=scheduler.admin,
        )
    user, key = await scheduler.create_user(["Runners", "Users"])
    assert sorted(user.roles) == ["Runners", "Users"]
    with pytest.raises(AlreadyExists):
        await invoke(
            scheduler.identity.CreateUser,
            pb.CreateUserRequest(email=user.email.upper(), roles=[]),
            metadata=scheduler.admin,
        )
    # A user makes keys for themself, not for others, and can't create users or roles.
    own = await invoke(
        scheduler.identity.CreateApiKey, pb.CreateApiKeyRequest(name="mine"), metadata=bearer(key)
    )
    assert own.user_id == user.id and own.key.startswith("sk-")
    assert (await me(scheduler, bearer(own.key))).id == user.id
    admin = await me(scheduler, scheduler.admin)
    with pytest.raises(PermissionDenied):
        await invoke(
            scheduler.identity.CreateApiKey,
            pb.CreateApiKeyRequest(name="theirs", user_id=admin.id),
            metadata=bearer(key),
        )
    with pytest.raises(PermissionDenied):
        await invoke(
            scheduler.identity.CreateUser,
            pb.CreateUserRequest(email="y@example.com"),
            metadata=bearer(key),
        )


async def test_api_key_is_stored_hashed(scheduler: RunningScheduler, db: AsyncEngine) -> None:
    _, key = await scheduler.create_user(["Users"])
    async with db.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT key_hash, key_prefix FROM api_keys"))).all()
    assert all(key not in (key_hash, prefix) for key_hash, prefix in rows)
    assert (key[:8]) in [prefix for _, prefix in rows]


async def test_tokens_authenticate_and_forgeries_do_not(scheduler: RunningScheduler) -> None:
    user, _ = await scheduler.create_user(["Users"])
    tokens = scheduler.app.tokens
    now = utcnow()
    good = tokens.mint(user_id=user.id, email=user.email, now=now, lifetime=timedelta(minutes=5))
    assert (await me(scheduler, bearer(good))).id == user.id

    expired = tokens.mint(
        user_id=user.id,
        email=user.email,
        now=now - timedelta(hours=2),
        lifetime=timedelta(minutes=5),
    )
    other_key = TokenService(generate_signing_key(), [])
    wrong_key = other_key.mint(
        user_id=user.id, email=user.email, now=now, lifetime=timedelta(minutes=5)
    )
    claims = jwt.decode(good, options={"verify_signature": False})
    alg_none = jwt.encode(claims, key=None, algorithm="none", headers={"kid": tokens.kid})
    for forged in (expired, wrong_key, alg_none, good[:-4] + "AAAA"):
        with pytest.raises(Unauthenticated, match="Invalid or expired credentials"):
            await me(scheduler, bearer(forged))

    ghost = tokens.mint(
        user_id=uuid7(), email="ghost@example.com", now=now, lifetime=timedelta(minutes=5)
    )
    with pytest.raises(Unauthenticated, match="User not found"):
        await me(scheduler, bearer(ghost))


async def test_jwks_verifies_minted_tokens(scheduler: RunningScheduler) -> None:
    document = json.loads((await invoke(scheduler.identity.GetJwks, pb.GetJwksRequest())).jwks_json)
    tokens = scheduler.app.tokens
    token = tokens.mint(
        user_id="u", email="e@example.com", now=utcnow(), lifetime=timedelta(minutes=1)
    )
    [jwk] = document["keys"]
    assert jwk["kid"] == tokens.kid and jwk["alg"] == "EdDSA" and "d" not in jwk
    key = jwt.PyJWK(jwk)
    decoded = jwt.decode(token, key, algorithms=["EdDSA"], issuer="sinas")
    assert decoded["sub"] == "u" and decoded["scope"] == "execution"


async def revoke(db: AsyncEngine, key: str) -> None:
    async with db.begin() as conn:
        await conn.execute(
            sa.text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"),
            {"h": hash_api_key(key)},
        )


async def test_a_revoked_key_is_refused_within_the_auth_cache_period(
    start_scheduler: StartScheduler, db: AsyncEngine
) -> None:
    scheduler = await start_scheduler(AUTH_CACHE_SECONDS=0.5)
    user, key = await scheduler.create_user(["Users"])
    assert (await me(scheduler, [("x-api-key", key)])).id == user.id
    await revoke(db, key)
    # Still the cached answer, then the database's.
    assert (await me(scheduler, [("x-api-key", key)])).id == user.id
    await asyncio.sleep(0.6)
    with pytest.raises(Unauthenticated):
        await me(scheduler, [("x-api-key", key)])


async def test_without_the_auth_cache_a_revoked_key_is_refused_at_once(
    start_scheduler: StartScheduler, db: AsyncEngine
) -> None:
    scheduler = await start_scheduler(AUTH_CACHE_SECONDS=0)
    _, key = await scheduler.create_user(["Users"])
    await me(scheduler, [("x-api-key", key)])
    await revoke(db, key)
    with pytest.raises(Unauthenticated):
        await me(scheduler, [("x-api-key", key)])


# --- API keys: listing, expiry, revocation ---------------------------------------------------


async def list_keys(
    scheduler: RunningScheduler, metadata: list[tuple[str, str]], user_id: str = ""
) -> list[pb.ApiKey]:
    response = await invoke(
        scheduler.identity.ListApiKeys, pb.ListApiKeysRequest(user_id=user_id), metadata=metadata
    )
    return list(response.api_keys)


async def revoke_key(
    scheduler: RunningScheduler, metadata: list[tuple[str, str]], key_id: str
) -> pb.ApiKey:
    response = await invoke(
        scheduler.identity.RevokeApiKey, pb.RevokeApiKeyRequest(id=key_id), metadata=metadata
    )
    api_key: pb.ApiKey = response.api_key
    return api_key


async def create_key(
    scheduler: RunningScheduler,
    metadata: list[tuple[str, str]],
    *,
    user_id: str = "",
    expires_at: datetime | None = None,
) -> pb.CreateApiKeyResponse:
    request = pb.CreateApiKeyRequest(name="laptop", user_id=user_id)
    stamp = to_timestamp(expires_at)
    if stamp is not None:
        request.expires_at.CopyFrom(stamp)
    created: pb.CreateApiKeyResponse = await invoke(
        scheduler.identity.CreateApiKey, request, metadata=metadata
    )
    return created


async def user_with_role(scheduler: RunningScheduler, permissions: list[str]) -> tuple[str, str]:
    """A user whose one role grants `permissions`; their id and the admin-made key."""
    name = f"role-{secrets.token_hex(4)}"
    await invoke(
        scheduler.identity.CreateRole,
        pb.CreateRoleRequest(name=name, permissions=permissions),
        metadata=scheduler.admin,
    )
    user, key = await scheduler.create_user([name])
    return user.id, key


async def test_a_user_lists_and_revokes_their_own_keys_never_seeing_a_secret(
    start_scheduler: StartScheduler, db: AsyncEngine
) -> None:
    scheduler = await start_scheduler(AUTH_CACHE_SECONDS=0)
    # The wildcard alone grants create, read and delete of one's own keys.
    user_id, first_key = await user_with_role(scheduler, ["sinas.api_keys.*:own"])
    expires = utcnow() + timedelta(days=1)
    created = await create_key(scheduler, bearer(first_key), expires_at=expires)
    assert created.user_id == user_id and created.prefix == created.key[:8]
    assert abs(created.expires_at.ToDatetime(tzinfo=UTC) - expires) < timedelta(milliseconds=1)

    listed = await list_keys(scheduler, bearer(first_key))
    # Newest first: the key just made, then the one the admin made.
    assert len(listed) == 2
    newest = listed[0]
    assert newest.id == created.id
    assert (newest.name, newest.user_id, newest.prefix) == ("laptop", user_id, created.prefix)
    assert newest.HasField("created_at") and newest.HasField("expires_at")
    assert not newest.HasField("revoked_at") and not newest.HasField("last_used_at")
    async with db.connect() as conn:
        hashes = (await conn.execute(sa.text("SELECT key_hash FROM api_keys"))).scalars().all()
    wire = pb.ListApiKeysResponse(api_keys=listed).SerializeToString()
    for secret in (first_key, created.key, *hashes):
        assert secret.encode() not in wire

    revoked = await revoke_key(scheduler, bearer(first_key), created.id)
    assert revoked.id == created.id and revoked.HasField("revoked_at")
    # Revoking again changes nothing and answers the same document.
    assert await revoke_key(scheduler, bearer(first_key), created.id) == revoked
    with pytest.raises(Unauthenticated):
        await me(scheduler, bearer(created.key))
    listed = await list_keys(scheduler, bearer(first_key))
    assert listed[0] == revoked and not listed[1].HasField("revoked_at")
    # The key that revoked it still works.
    assert (await me(scheduler, bearer(first_key))).id == user_id


async def test_another_users_key_is_not_found_and_admins_manage_anyones(
    scheduler: RunningScheduler,
) -> None:
    mallory, mallory_key = await scheduler.create_user(["Users"])
    alice, alice_key = await scheduler.create_user(["Users"])
    [alice_record] = await list_keys(scheduler, bearer(alice_key))
    # Whether the id exists or not, the answer is the same: key ids can't be probed.
    for key_id in (alice_record.id, uuid7(), "not-an-id", ""):
        with pytest.raises(ApiKeyNotFound):
            await revoke_key(scheduler, bearer(mallory_key), key_id)
    with pytest.raises(PermissionDenied):
        await list_keys(scheduler, bearer(mallory_key), alice.id)
    with pytest.raises(PermissionDenied):
        await create_key(scheduler, bearer(mallory_key), user_id=alice.id)
    assert (await me(scheduler, bearer(alice_key))).id == alice.id

    assert [k.id for k in await list_keys(scheduler, scheduler.admin, alice.id)] == [
        alice_record.id
    ]
    assert await list_keys(scheduler, scheduler.admin, uuid7()) == []
    revoked = await revoke_key(scheduler, scheduler.admin, alice_record.id)
    assert revoked.user_id == alice.id and revoked.HasField("revoked_at")
    # Naming oneself is the same as naming no one.
    assert await list_keys(scheduler, bearer(mallory_key), mallory.id) == await list_keys(
        scheduler, bearer(mallory_key)
    )


async def test_reading_all_keys_without_deleting_them_is_denied_not_hidden(
    scheduler: RunningScheduler,
) -> None:
    _, auditor_key = await user_with_role(scheduler, ["sinas.api_keys.read:all"])
    alice, alice_key = await scheduler.create_user(["Users"])
    [record] = await list_keys(scheduler, bearer(auditor_key), alice.id)
    with pytest.raises(PermissionDenied):
        await revoke_key(scheduler, bearer(auditor_key), record.id)
    assert (await me(scheduler, bearer(alice_key))).id == alice.id


async def test_without_the_api_keys_permissions_a_user_manages_no_keys(
    scheduler: RunningScheduler,
) -> None:
    guest, guest_key = await scheduler.create_user(["GuestUsers"])
    [own] = await list_keys(scheduler, scheduler.admin, guest.id)
    with pytest.raises(PermissionDenied):
        await list_keys(scheduler, bearer(guest_key))
    with pytest.raises(PermissionDenied):
        await create_key(scheduler, bearer(guest_key))
    with pytest.raises(PermissionDenied):
        await revoke_key(scheduler, bearer(guest_key), own.id)
    assert (await me(scheduler, bearer(guest_key))).id == guest.id


async def test_a_runs_execution_token_manages_no_keys(scheduler: RunningScheduler) -> None:
    user, key = await scheduler.create_user(["Users"])
    [record] = await list_keys(scheduler, bearer(key))
    token = scheduler.app.tokens.mint(
        user_id=user.id,
        email=user.email,
        now=utcnow(),
        lifetime=timedelta(minutes=5),
        scope=SCOPE_EXECUTION,
        execution_id=uuid7(),
        execution_depth=1,
    )
    with pytest.raises(ExecutionTokenNotAllowed):
        await list_keys(scheduler, bearer(token))
    with pytest.raises(ExecutionTokenNotAllowed):
        await revoke_key(scheduler, bearer(token), record.id)
    with pytest.raises(ExecutionTokenNotAllowed):
        await create_key(scheduler, bearer(token))
    assert not (await list_keys(scheduler, bearer(key)))[0].HasField("revoked_at")


async def test_an_expiry_in_the_past_is_refused_and_nothing_stored(
    scheduler: RunningScheduler, db: AsyncEngine
) -> None:
    _, key = await scheduler.create_user(["Users"])
    async with db.connect() as conn:
        before = (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar()
    for when in (utcnow() - timedelta(seconds=1), datetime(2000, 1, 1, tzinfo=UTC)):
        with pytest.raises(InvalidArgument) as refused:
            await create_key(scheduler, bearer(key), expires_at=when)
        assert [v.field for v in refused.value.violations] == ["expires_at"]
    async with db.connect() as conn:
        after = (await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar()
    assert after == before


async def test_an_expired_key_is_refused_even_while_cached(
    start_scheduler: StartScheduler,
) -> None:
    # A cache far longer than the key's life: the expiry still bounds it.
    scheduler = await start_scheduler(AUTH_CACHE_SECONDS=300)
    user, key = await scheduler.create_user(["Users"])
    lifetime = timedelta(seconds=1.5)
    short = await create_key(scheduler, bearer(key), expires_at=utcnow() + lifetime)
    assert (await me(scheduler, bearer(short.key))).id == user.id
    deadline = short.expires_at.ToDatetime(tzinfo=UTC) + timedelta(seconds=5)
    while True:
        try:
            await me(scheduler, bearer(short.key))
        except Unauthenticated:
            break
        assert utcnow() < deadline, "an expired key was still accepted"
        await asyncio.sleep(0.1)
    assert utcnow() >= short.expires_at.ToDatetime(tzinfo=UTC)
    [listed] = [k for k in await list_keys(scheduler, bearer(key)) if k.id == short.id]
    assert listed.HasField("expires_at") and not listed.HasField("revoked_at")


async def test_last_used_at_is_recorded_in_batches_and_never_moves_back(
    start_scheduler: StartScheduler, db: AsyncEngine, hot_pool: HotPool
) -> None:
    scheduler = await start_scheduler(API_KEY_USAGE_FLUSH_SECONDS=0.2)
    user, key = await scheduler.create_user(["Users"])
    [record] = await list_keys(scheduler, scheduler.admin, user.id)
    assert not record.HasField("last_used_at")
    started = utcnow()
    for _ in range(20):
        await me(scheduler, bearer(key))
    deadline = utcnow() + timedelta(seconds=10)
    while True:
        [record] = await list_keys(scheduler, scheduler.admin, user.id)
        if record.HasField("last_used_at"):
            break
        assert utcnow() < deadline, "last_used_at was never recorded"
        await asyncio.sleep(0.1)
    used = record.last_used_at.ToDatetime(tzinfo=UTC)
    assert started <= used <= utcnow()
    # A flush carrying an older time (another replica's) never moves it back.
    await PostgresIdentityStore(db, hot_pool).record_key_use(
        {hash_api_key(key): started - timedelta(hours=1)}
    )
    [record] = await list_keys(scheduler, scheduler.admin, user.id)
    assert record.last_used_at.ToDatetime(tzinfo=UTC) == used


async def test_key_use_noted_before_a_stop_is_written_at_the_stop(
    start_scheduler: StartScheduler, db: AsyncEngine
) -> None:
    # A flush interval no test waits for: only the stop writes it.
    scheduler = await start_scheduler(API_KEY_USAGE_FLUSH_SECONDS=3600)
    _, key = await scheduler.create_user(["Users"])
    await me(scheduler, bearer(key))
    async with db.connect() as conn:
        query = sa.text("SELECT last_used_at FROM api_keys WHERE key_hash = :h")
        assert (await conn.execute(query, {"h": hash_api_key(key)})).scalar() is None
    await stop_in_process(scheduler)
    async with db.connect() as conn:
        assert (await conn.execute(query, {"h": hash_api_key(key)})).scalar() is not None

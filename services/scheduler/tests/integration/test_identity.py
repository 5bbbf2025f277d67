"""Identity over gRPC: bootstrap admin, default roles, users, keys, credentials and tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.errors import (
    AlreadyExists,
    MissingCredentials,
    PermissionDenied,
    RoleNotFound,
    Unauthenticated,
)
from sinas_common.grpc_client import invoke
from sinas_common.ids import uuid7
from sinas_common.timeconv import utcnow
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.identity import hash_api_key
from sinas_scheduler.pg import HotPool
from sinas_scheduler.postgres_identity import PostgresIdentityStore
from sinas_scheduler.testing import RunningScheduler, bearer
from sinas_scheduler.tokens import TokenService, generate_signing_key

StartScheduler = Callable[..., Awaitable[RunningScheduler]]


async def me(scheduler: RunningScheduler, metadata: list[tuple[str, str]]) -> pb.User:
    response = await invoke(scheduler.identity.GetMe, pb.GetMeRequest(), metadata=metadata)
    user: pb.User = response.user
    return user


async def token_service(db: AsyncEngine, hot_pool: HotPool) -> TokenService:
    keys = await PostgresIdentityStore(db, hot_pool).signing_keys()
    return TokenService(keys[0], keys[1:])


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


async def test_tokens_authenticate_and_forgeries_do_not(
    scheduler: RunningScheduler, db: AsyncEngine, hot_pool: HotPool
) -> None:
    user, _ = await scheduler.create_user(["Users"])
    tokens = await token_service(db, hot_pool)
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


async def test_jwks_verifies_minted_tokens(
    scheduler: RunningScheduler, db: AsyncEngine, hot_pool: HotPool
) -> None:
    document = json.loads((await invoke(scheduler.identity.GetJwks, pb.GetJwksRequest())).jwks_json)
    tokens = await token_service(db, hot_pool)
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

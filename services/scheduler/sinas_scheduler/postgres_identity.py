"""PostgreSQL adapter of the identity port: users, roles, API keys and signing keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sinas_common.errors import AlreadyExists, RoleNotFound, UserNotFound
from sinas_common.ids import uuid7
from sinas_scheduler.models import ApiKeyRecord, KeyHolder, Role, SigningKey, User
from sinas_scheduler.pg import HotPool
from sinas_scheduler.tables import api_keys, roles, signing_keys, user_roles, users

# Serialises first-start key generation across replicas so they all share one key.
SIGNING_KEY_LOCK_ID = 0x5151A6


# A user with each of their roles, one row per role (a user without roles: one row of NULLs).
_BY_USER_ID = """
SELECT u.id, u.email, u.created_at, u.last_login_at, r.name AS role_name, r.permissions
FROM users AS u
LEFT JOIN user_roles AS ur ON ur.user_id = u.id
LEFT JOIN roles AS r ON r.id = ur.role_id
WHERE u.id = %(user_id)s
ORDER BY r.name
"""
# The same for the holder of a live key, with the key's expiry (callers cache no longer).
_BY_LIVE_API_KEY = """
SELECT u.id, u.email, u.created_at, u.last_login_at, r.name AS role_name, r.permissions,
       k.expires_at AS key_expires_at
FROM api_keys AS k
JOIN users AS u ON u.id = k.user_id
LEFT JOIN user_roles AS ur ON ur.user_id = u.id
LEFT JOIN roles AS r ON r.id = ur.role_id
WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now())
ORDER BY r.name
"""


_RECORD_KEY_USE = """
UPDATE api_keys AS k SET last_used_at = u.used_at
FROM unnest(%(hashes)s::text[], %(times)s::timestamptz[]) AS u(key_hash, used_at)
WHERE k.key_hash = u.key_hash AND (k.last_used_at IS NULL OR k.last_used_at < u.used_at)
"""

# What a listing shows of a key: never `key_hash`.
_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.user_id,
    api_keys.c.key_prefix,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
)


class PostgresIdentityStore:
    def __init__(self, engine: AsyncEngine, hot: HotPool) -> None:
        self._engine = engine
        # Authentication runs on every request: straight psycopg (see `pg`).
        self._hot = hot

    async def user_with_permissions(self, user_id: str) -> tuple[User, frozenset[str]] | None:
        async with self._hot.connection() as conn:
            rows = await (await conn.execute(_BY_USER_ID, {"user_id": user_id})).fetchall()
        return None if not rows else _user_and_permissions(rows)

    async def key_holder(self, key_hash: str) -> KeyHolder | None:
        """The key's user, permissions and expiry in one round trip; None for unknown or dead
        keys."""
        async with self._hot.connection() as conn:
            rows = await (await conn.execute(_BY_LIVE_API_KEY, {"key_hash": key_hash})).fetchall()
        if not rows:
            return None
        user, permissions = _user_and_permissions(rows)
        return KeyHolder(
            user=user, permissions=permissions, key_expires_at=rows[0]["key_expires_at"]
        )

    async def create_role(self, name: str, permissions: Sequence[str]) -> Role:
        role_id = uuid7()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    roles.insert().values(id=role_id, name=name, permissions=list(permissions))
                )
        except IntegrityError as exc:
            raise AlreadyExists(f"Role {name!r} already exists") from exc
        return Role(id=role_id, name=name, permissions=tuple(permissions))

    async def create_user(self, email: str, role_names: Sequence[str]) -> User:
        user_id = uuid7()
        try:
            async with self._engine.begin() as conn:
                role_ids = await _role_ids(conn, role_names)
                row = (
                    (
                        await conn.execute(
                            users.insert().values(id=user_id, email=email).returning(users)
                        )
                    )
                    .mappings()
                    .one()
                )
                if role_ids:
                    await conn.execute(
                        user_roles.insert(),
                        [{"user_id": user_id, "role_id": role_id} for role_id in role_ids],
                    )
        except IntegrityError as exc:
            raise AlreadyExists(f"User {email!r} already exists") from exc
        return _user(row, tuple(sorted(set(role_names))))

    async def create_api_key(
        self,
        *,
        user_id: str,
        name: str,
        key_hash: str,
        key_prefix: str,
        expires_at: datetime | None = None,
    ) -> ApiKeyRecord:
        try:
            async with self._engine.begin() as conn:
                row = (
                    (
                        await conn.execute(
                            api_keys.insert()
                            .values(
                                id=uuid7(),
                                user_id=user_id,
                                name=name,
                                key_hash=key_hash,
                                key_prefix=key_prefix,
                                expires_at=expires_at,
                            )
                            .returning(*_KEY_COLUMNS)
                        )
                    )
                    .mappings()
                    .one()
                )
        except IntegrityError as exc:
            if isinstance(exc.orig, pg_errors.ForeignKeyViolation):
                raise UserNotFound() from exc
            raise AlreadyExists("API key already exists") from exc
        return _api_key(row)

    async def list_api_keys(self, user_id: str) -> list[ApiKeyRecord]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(*_KEY_COLUMNS)
                .where(api_keys.c.user_id == user_id)
                .order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
            )
            return [_api_key(row) for row in rows.mappings()]

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(sa.select(*_KEY_COLUMNS).where(api_keys.c.id == key_id)))
                .mappings()
                .one_or_none()
            )
        return None if row is None else _api_key(row)

    async def revoke_api_key(self, key_id: str) -> ApiKeyRecord | None:
        async with self._engine.begin() as conn:
            row = (
                (
                    await conn.execute(
                        api_keys.update()
                        .where(api_keys.c.id == key_id)
                        .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, sa.func.now()))
                        .returning(*_KEY_COLUMNS)
                    )
                )
                .mappings()
                .one_or_none()
            )
        return None if row is None else _api_key(row)

    async def record_key_use(self, last_used: Mapping[str, datetime]) -> None:
        if not last_used:
            return
        hashes, times = zip(*sorted(last_used.items()), strict=True)
        # One statement for every key used since the last flush, in hash order so two
        # replicas flushing together lock the rows in the same order.
        async with self._hot.connection() as conn:
            await conn.execute(_RECORD_KEY_USE, {"hashes": list(hashes), "times": list(times)})

    async def ensure_roles(self, wanted: Mapping[str, Sequence[str]]) -> None:
        """Creates missing roles and adds missing permissions; existing grants stay."""
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(roles)
                .values(
                    [
                        {"id": uuid7(), "name": name, "permissions": list(perms)}
                        for name, perms in wanted.items()
                    ]
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            rows = (
                await conn.execute(
                    sa.select(roles.c.id, roles.c.name, roles.c.permissions)
                    .where(roles.c.name.in_(list(wanted)))
                    .with_for_update()
                )
            ).all()
            for role_id, name, current in rows:
                have = list(current or [])
                missing = [p for p in wanted[name] if p not in have]
                if missing:
                    await conn.execute(
                        roles.update()
                        .where(roles.c.id == role_id)
                        .values(permissions=have + missing)
                    )

    async def ensure_admin(
        self, *, email: str, role_name: str, key_hash: str, key_prefix: str
    ) -> None:
        """The admin user, its role and its API key exist afterwards; safe to race."""
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(users)
                .values(id=uuid7(), email=email)
                .on_conflict_do_nothing(index_elements=[sa.func.lower(sa.text("email"))])
            )
            user_id = (
                await conn.execute(
                    sa.select(users.c.id).where(sa.func.lower(users.c.email) == email.lower())
                )
            ).scalar_one()
            role_id = (await _role_ids(conn, [role_name]))[0]
            await conn.execute(
                pg_insert(user_roles)
                .values(user_id=user_id, role_id=role_id)
                .on_conflict_do_nothing()
            )
            await conn.execute(
                pg_insert(api_keys)
                .values(
                    id=uuid7(),
                    user_id=user_id,
                    name="bootstrap admin key",
                    key_hash=key_hash,
                    key_prefix=key_prefix,
                )
                .on_conflict_do_nothing(index_elements=["key_hash"])
            )

    async def ensure_signing_key(self, candidate: SigningKey) -> list[SigningKey]:
        """Stores `candidate` unless a live key exists; returns the live keys, newest first."""
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": SIGNING_KEY_LOCK_ID}
            )
            existing = await _live_keys(conn)
            if existing:
                return existing
            await conn.execute(
                signing_keys.insert().values(
                    kid=candidate.kid,
                    algorithm=candidate.algorithm,
                    private_key_pem=candidate.private_key_pem,
                    public_jwk=candidate.public_jwk,
                )
            )
            return await _live_keys(conn)

    async def signing_keys(self) -> list[SigningKey]:
        async with self._engine.connect() as conn:
            return await _live_keys(conn)

    async def reseal_signing_keys(self, reseal: Callable[[str], str | None]) -> int:
        # Under the first-start lock, so replicas starting together re-encrypt each row once.
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": SIGNING_KEY_LOCK_ID}
            )
            rows = await conn.execute(sa.select(signing_keys.c.kid, signing_keys.c.private_key_pem))
            changed = 0
            for kid, stored in rows.all():
                new = reseal(stored)
                if new is None:
                    continue
                await conn.execute(
                    signing_keys.update()
                    .where(signing_keys.c.kid == kid)
                    .values(private_key_pem=new)
                )
                changed += 1
            return changed


async def _live_keys(conn: AsyncConnection) -> list[SigningKey]:
    rows = (
        await conn.execute(
            sa.select(signing_keys)
            .where(signing_keys.c.retired_at.is_(None))
            .order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
        )
    ).mappings()
    return [
        SigningKey(
            kid=row["kid"],
            algorithm=row["algorithm"],
            private_key_pem=row["private_key_pem"],
            public_jwk=dict(row["public_jwk"]),
        )
        for row in rows
    ]


async def _role_ids(conn: AsyncConnection, names: Sequence[str]) -> list[str]:
    wanted = sorted(set(names))
    if not wanted:
        return []
    result = await conn.execute(sa.select(roles.c.name, roles.c.id).where(roles.c.name.in_(wanted)))
    found = {str(name): str(role_id) for name, role_id in result.all()}
    missing = [name for name in wanted if name not in found]
    if missing:
        raise RoleNotFound(f"Role not found: {', '.join(missing)}")
    return [found[name] for name in wanted]


def _user_and_permissions(rows: Sequence[Any]) -> tuple[User, frozenset[str]]:
    """One user from their rows (one per role), with the union of the roles' permissions."""
    permissions: set[str] = set()
    role_names: list[str] = []
    for row in rows:
        if row["role_name"] is not None:
            role_names.append(row["role_name"])
            permissions.update(str(p) for p in row["permissions"] or [])
    return _user(rows[0], tuple(role_names)), frozenset(permissions)


def _api_key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        user_id=row["user_id"],
        prefix=row["key_prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _user(row: Any, role_names: tuple[str, ...]) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        roles=role_names,
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )

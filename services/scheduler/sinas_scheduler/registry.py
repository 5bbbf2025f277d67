"""Use cases of identity and the function registry: who may do what, and function definitions."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sinas_common.errors import (
    ApiKeyNotFound,
    FieldViolation,
    FunctionNotFound,
    InvalidArgument,
    PermissionDenied,
)
from sinas_common.timeconv import utcnow
from sinas_scheduler import permissions as perms
from sinas_scheduler.identity import hash_api_key, key_prefix, new_api_key
from sinas_scheduler.models import (
    ApiKeyRecord,
    Function,
    FunctionChanges,
    FunctionSpec,
    IssuedApiKey,
    Principal,
    Role,
    User,
)
from sinas_scheduler.store import FunctionStore, IdentityStore
from sinas_scheduler.tokens import TokenService
from sinas_scheduler.validation import check_function, identifier_violations

ADMIN_EMAIL = "admin@sinas.local"
ADMIN_ROLE = "Admins"


def require(principal: Principal, permission: str, message: str | None = None) -> None:
    if not perms.has_permission(principal.permissions, permission):
        raise PermissionDenied(message)


class IdentityUseCases:
    def __init__(
        self,
        store: IdentityStore,
        tokens: TokenService,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._clock = clock

    async def bootstrap(self, admin_key: str | None) -> None:
        """Default roles, and the admin user holding `admin_key` when one is configured."""
        await self._store.ensure_roles(perms.DEFAULT_ROLES)
        if admin_key:
            await self._store.ensure_admin(
                email=ADMIN_EMAIL,
                role_name=ADMIN_ROLE,
                key_hash=hash_api_key(admin_key),
                key_prefix=key_prefix(admin_key),
            )

    def jwks(self) -> dict[str, Any]:
        return self._tokens.jwks()

    async def create_role(self, principal: Principal, name: str, permissions: list[str]) -> Role:
        require(principal, perms.ROLES_CREATE_ALL)
        name = name.strip()
        bad = [p for p in permissions if p.rpartition(":")[2] not in {"own", "all", "*"}]
        if not name or len(name) > 255:
            raise InvalidArgument(
                "Role name must be 1 to 255 characters",
                violations=[FieldViolation(field="name", description="1 to 255 characters")],
            )
        if bad:
            raise InvalidArgument(
                "Permissions must end in :own, :all or :*",
                violations=[
                    FieldViolation(field=f"permissions[{permissions.index(p)}]", description=p)
                    for p in bad
                ],
            )
        return await self._store.create_role(name, permissions)

    async def create_user(self, principal: Principal, email: str, roles: list[str]) -> User:
        require(principal, perms.USERS_CREATE_ALL)
        email = email.strip()
        local, at, domain = email.partition("@")
        if not at or not local or not domain or len(email) > 255:
            raise InvalidArgument(
                "Invalid email address",
                violations=[FieldViolation(field="email", description="not an email address")],
            )
        return await self._store.create_user(email, roles)

    async def create_api_key(
        self,
        principal: Principal,
        name: str,
        user_id: str,
        *,
        expires_at: datetime | None = None,
    ) -> IssuedApiKey:
        """A new key for the caller, or for `user_id` with `sinas.api_keys.create:all`.

        Raises:
            PermissionDenied: the caller may not create this key.
            InvalidArgument: `expires_at` is not in the future; nothing is stored.
            UserNotFound: `user_id` names no user.
        """
        target = user_id or principal.user.id
        if target == principal.user.id:
            require(principal, perms.API_KEYS_CREATE_OWN)
        else:
            require(principal, perms.API_KEYS_CREATE_ALL)
        if expires_at is not None and expires_at <= self._clock():
            raise InvalidArgument(
                "expires_at must be in the future",
                violations=[FieldViolation(field="expires_at", description="not in the future")],
            )
        key = new_api_key()
        record = await self._store.create_api_key(
            user_id=target,
            name=name.strip() or "api key",
            key_hash=hash_api_key(key),
            key_prefix=key_prefix(key),
            expires_at=expires_at,
        )
        return IssuedApiKey(record=record, key=key)

    async def list_api_keys(self, principal: Principal, user_id: str) -> list[ApiKeyRecord]:
        """The keys of the caller, or of `user_id` with `sinas.api_keys.read:all`, newest
        first, revoked and expired ones included (an unknown user has none).

        Raises:
            PermissionDenied: the caller may not read these keys.
        """
        target = user_id or principal.user.id
        if target == principal.user.id:
            require(principal, perms.API_KEYS_READ_OWN)
        else:
            require(principal, perms.API_KEYS_READ_ALL)
        return await self._store.list_api_keys(target)

    async def revoke_api_key(self, principal: Principal, key_id: str) -> ApiKeyRecord:
        """Revokes a key of the caller's (`sinas.api_keys.delete:own`) or anyone's
        (`sinas.api_keys.delete:all`); revoking a revoked key answers it unchanged.

        Raises:
            ApiKeyNotFound: no such key, or one the caller may not see, so that key ids
                can't be probed.
            PermissionDenied: a key the caller may see but not revoke.
        """
        found = await self._store.get_api_key(key_id)
        if found is None:
            raise ApiKeyNotFound()
        if found.user_id == principal.user.id:
            require(principal, perms.API_KEYS_DELETE_OWN)
        elif not perms.has_permission(principal.permissions, perms.API_KEYS_DELETE_ALL):
            if perms.has_permission(principal.permissions, perms.API_KEYS_READ_ALL):
                raise PermissionDenied()
            raise ApiKeyNotFound()
        revoked = await self._store.revoke_api_key(key_id)
        if revoked is None:
            # Its user was deleted between the two statements, taking the key along.
            raise ApiKeyNotFound()
        return revoked


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionLimits:
    default_timeout_seconds: int
    max_timeout_seconds: int


# How many live functions a scheduler remembers for submits (see `FunctionUseCases.recent`).
RECENT_FUNCTIONS = 1024


class FunctionUseCases:
    def __init__(self, store: FunctionStore, limits: FunctionLimits) -> None:
        self._store = store
        self._limits = limits
        self._recent: OrderedDict[tuple[str, str], Function] = OrderedDict()

    async def create(
        self,
        principal: Principal,
        *,
        namespace: str,
        name: str,
        spec: FunctionSpec,
    ) -> Function:
        require(principal, perms.FUNCTIONS_CREATE_ALL)
        check_function(
            namespace=namespace,
            name=name,
            spec=spec,
            max_timeout_seconds=self._limits.max_timeout_seconds,
        )
        return await self._store.create_function(
            namespace=namespace, name=name, owner_user_id=principal.user.id, spec=spec
        )

    async def get(self, principal: Principal, namespace: str, name: str) -> Function:
        function = await self._lookup(namespace, name)
        require(principal, perms.function_permission(namespace, name, "read"))
        return function

    async def update(
        self, principal: Principal, namespace: str, name: str, changes: FunctionChanges
    ) -> Function:
        require(principal, perms.function_permission(namespace, name, "update", "all"))

        def check(spec: FunctionSpec) -> None:
            check_function(
                namespace=namespace,
                name=name,
                spec=spec,
                max_timeout_seconds=self._limits.max_timeout_seconds,
            )

        return await self._store.update_function(
            namespace=namespace,
            name=name,
            changes=changes,
            check=check,
            updated_by=principal.user.id,
        )

    async def delete(self, principal: Principal, namespace: str, name: str) -> None:
        require(principal, perms.function_permission(namespace, name, "delete", "all"))
        if not await self._store.delete_function(namespace, name):
            raise FunctionNotFound()

    async def lookup(self, namespace: str, name: str) -> Function:
        return await self._lookup(namespace, name)

    async def _lookup(self, namespace: str, name: str) -> Function:
        # A name that can't exist is simply not found; no need to ask the database.
        if identifier_violations(namespace, name):
            raise FunctionNotFound()
        function = await self._store.get_function(namespace, name)
        if function is None:
            self.forget(namespace, name)
            raise FunctionNotFound()
        self._recent[(namespace, name)] = function
        self._recent.move_to_end((namespace, name))
        while len(self._recent) > RECENT_FUNCTIONS:
            self._recent.popitem(last=False)
        return function

    def recent(self, namespace: str, name: str) -> Function | None:
        """The function as this scheduler last read it, which may since have changed: only
        for a row stored on condition that its version is still the live one
        (`ExecutionStore.insert_if_current`), which then saves the read."""
        return self._recent.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self._recent.pop((namespace, name), None)

    @property
    def default_timeout_seconds(self) -> int:
        return self._limits.default_timeout_seconds

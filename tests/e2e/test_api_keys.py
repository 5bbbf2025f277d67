"""API keys through the gateway: listed without their secret, revoked in time, expired."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from sinas_devstack.stack import Stack
from sinas_scheduler.settings import SchedulerSettings

from .helpers import UserFactory

# What a revocation may take beyond AUTH_CACHE_SECONDS: a request or two through the stack.
MARGIN_SECONDS = 5.0
KEY_FIELDS = {
    "id",
    "name",
    "user_id",
    "prefix",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
}


def auth_cache_seconds(stack: Stack) -> float:
    configured = stack.role_env("scheduler").get("AUTH_CACHE_SECONDS")
    if configured is not None:
        return float(configured)
    default = SchedulerSettings.model_fields["auth_cache_seconds"].default
    assert isinstance(default, float)
    return default


async def refused_by(client: httpx.AsyncClient, key: str, deadline: float) -> int:
    """Polls `/auth/me` with `key` until it is refused; fails at the deadline."""
    while True:
        reply = await client.get("/auth/me", headers={"X-API-Key": key})
        if reply.status_code == 401:
            return reply.status_code
        assert reply.status_code == 200, reply.text
        assert time.monotonic() < deadline, "the key was still accepted past its bound"
        await asyncio.sleep(0.2)


async def test_a_user_lists_and_revokes_their_key_and_it_is_refused_in_time(
    stack: Stack, create_user: UserFactory
) -> None:
    user = await create_user(["sinas.api_keys.*:own"])
    created = await user.client.post("/api/v1/api-keys", json={"name": "laptop"})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["prefix"] == key["key"][:8] and key["expires_at"] is None
    me = await user.client.get("/auth/me", headers={"Authorization": f"Bearer {key['key']}"})
    assert me.status_code == 200 and me.json()["id"] == user.id

    listing = await user.client.get("/api/v1/api-keys")
    assert listing.status_code == 200, listing.text
    keys = listing.json()
    assert [k["id"] for k in keys][:1] == [key["id"]] and len(keys) == 2
    assert all(set(k) == KEY_FIELDS for k in keys)
    for secret in (key["key"], user.key):
        assert secret not in listing.text

    revoked = await user.client.delete(f"/api/v1/api-keys/{key['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["id"] == key["id"] and revoked.json()["revoked_at"] is not None
    again = await user.client.delete(f"/api/v1/api-keys/{key['id']}")
    assert again.status_code == 200 and again.json() == revoked.json()

    deadline = time.monotonic() + auth_cache_seconds(stack) + MARGIN_SECONDS
    assert await refused_by(user.client, key["key"], deadline) == 401
    # The key that revoked it still works, and the listing shows the revocation.
    listing = await user.client.get("/api/v1/api-keys")
    assert listing.status_code == 200
    assert {k["id"]: k["revoked_at"] for k in listing.json()}[key["id"]] is not None


async def test_an_expired_key_is_refused(stack: Stack, create_user: UserFactory) -> None:
    user = await create_user(["sinas.api_keys.*:own"])
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    created = await user.client.post(
        "/api/v1/api-keys", json={"name": "brief", "expires_at": expires_at.isoformat()}
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert datetime.fromisoformat(key["expires_at"]) == expires_at
    # Its expiry bounds any cache: refused once it passes, whatever AUTH_CACHE_SECONDS is.
    remaining = (expires_at - datetime.now(UTC)).total_seconds()
    assert await refused_by(user.client, key["key"], time.monotonic() + remaining + 5) == 401
    assert datetime.now(UTC) >= expires_at

    past = await user.client.post(
        "/api/v1/api-keys",
        json={"name": "late", "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
    )
    assert past.status_code == 422
    assert [item["loc"] for item in past.json()["detail"]] == [["body", "expires_at"]]
    names = [k["name"] for k in (await user.client.get("/api/v1/api-keys")).json()]
    assert "late" not in names and "brief" in names


async def test_another_users_key_is_not_found_and_admins_list_anyones(
    stack: Stack, admin: httpx.AsyncClient, create_user: UserFactory
) -> None:
    alice = await create_user(["sinas.api_keys.*:own"])
    mallory = await create_user(["sinas.api_keys.*:own"])
    [alices_key] = (await alice.client.get("/api/v1/api-keys")).json()

    stolen = await mallory.client.delete(f"/api/v1/api-keys/{alices_key['id']}")
    assert stolen.status_code == 404
    unknown = await mallory.client.delete("/api/v1/api-keys/00000000-0000-0000-0000-000000000000")
    assert (unknown.status_code, unknown.json()) == (404, stolen.json())
    peeking = await mallory.client.get("/api/v1/api-keys", params={"user_id": alice.id})
    assert peeking.status_code == 403
    assert (await alice.client.get("/auth/me")).status_code == 200

    by_admin = await admin.get("/api/v1/api-keys", params={"user_id": alice.id})
    assert by_admin.status_code == 200
    assert [k["id"] for k in by_admin.json()] == [alices_key["id"]]
    revoked = await admin.delete(f"/api/v1/api-keys/{alices_key['id']}")
    assert revoked.status_code == 200 and revoked.json()["user_id"] == alice.id
    deadline = time.monotonic() + auth_cache_seconds(stack) + MARGIN_SECONDS
    assert await refused_by(admin, alice.key, deadline) == 401

"""Secrets at rest: signing keys and provider keys encrypted with SINAS_ENCRYPTION_KEY, which
can be rotated; rows from before encryption are encrypted at start; a wrong key stops it."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.grpc_client import invoke
from sinas_common.timeconv import utcnow
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_scheduler.encryption import WrongEncryptionKey
from sinas_scheduler.testing import RunningScheduler, bearer, stop_in_process

from .test_agents import API_KEY, create_provider

StartScheduler = Callable[..., Awaitable[RunningScheduler]]


async def stored_secrets(db: AsyncEngine) -> list[str]:
    """Every signing key's and provider key's stored value."""
    async with db.connect() as conn:
        keys = (await conn.execute(sa.text("SELECT private_key_pem FROM signing_keys"))).all()
        providers = (
            await conn.execute(sa.text("SELECT api_key_encrypted FROM llm_providers"))
        ).all()
    return [row[0] for row in [*keys, *providers]]


def decrypts_with(key: str, token: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


async def mint_for_admin(scheduler: RunningScheduler) -> str:
    admin = (
        await invoke(scheduler.identity.GetMe, pb.GetMeRequest(), metadata=scheduler.admin)
    ).user
    return scheduler.app.tokens.mint(
        user_id=admin.id, email=admin.email, now=utcnow(), lifetime=timedelta(minutes=5)
    )


async def accepted(scheduler: RunningScheduler, token: str) -> bool:
    reply = await invoke(scheduler.identity.GetMe, pb.GetMeRequest(), metadata=bearer(token))
    return bool(reply.user.email == "admin@sinas.local")


async def test_the_signing_key_is_stored_encrypted(
    scheduler: RunningScheduler, db: AsyncEngine, encryption_key: str
) -> None:
    [stored] = await stored_secrets(db)
    assert "PRIVATE KEY" not in stored and not stored.startswith("-----BEGIN")
    plain = Fernet(encryption_key.encode()).decrypt(stored.encode()).decode()
    assert plain.startswith("-----BEGIN PRIVATE KEY-----")
    assert await accepted(scheduler, await mint_for_admin(scheduler))


async def test_a_plaintext_key_from_before_is_encrypted_at_start(
    start_scheduler: StartScheduler, db: AsyncEngine, encryption_key: str
) -> None:
    first = await start_scheduler()
    token = await mint_for_admin(first)
    await stop_in_process(first)
    # What a database written before encryption at rest holds.
    async with db.begin() as conn:
        [stored] = (await conn.execute(sa.text("SELECT private_key_pem FROM signing_keys"))).one()
        plain = Fernet(encryption_key.encode()).decrypt(stored.encode()).decode()
        await conn.execute(sa.text("UPDATE signing_keys SET private_key_pem = :p"), {"p": plain})

    second = await start_scheduler()
    [resealed] = await stored_secrets(db)
    assert not resealed.startswith("-----BEGIN")
    assert Fernet(encryption_key.encode()).decrypt(resealed.encode()).decode() == plain
    # The same key, so what it signed before still holds.
    assert await accepted(second, token)


async def test_rotation_re_encrypts_under_the_new_first_key(
    start_scheduler: StartScheduler, db: AsyncEngine, encryption_key: str
) -> None:
    old = encryption_key
    new = Fernet.generate_key().decode()
    first = await start_scheduler()
    await create_provider(first)
    token = await mint_for_admin(first)
    await stop_in_process(first)
    assert all(decrypts_with(old, value) for value in await stored_secrets(db))

    rotated = await start_scheduler(SINAS_ENCRYPTION_KEY=f"{new},{old}")
    assert await accepted(rotated, token)
    values = await stored_secrets(db)
    assert len(values) == 2
    assert all(decrypts_with(new, value) and not decrypts_with(old, value) for value in values)
    assert Fernet(new.encode()).decrypt(values[1].encode()).decode() == API_KEY
    await stop_in_process(rotated)

    # Every row is under the new key now: the old one can go.
    only_new = await start_scheduler(SINAS_ENCRYPTION_KEY=new)
    assert await accepted(only_new, token)


async def test_a_scheduler_with_the_wrong_key_fails_clearly(
    start_scheduler: StartScheduler, db: AsyncEngine
) -> None:
    first = await start_scheduler()
    await stop_in_process(first)
    before = await stored_secrets(db)
    wrong = Fernet.generate_key().decode()
    with pytest.raises(WrongEncryptionKey, match="keep the old key after the new one"):
        await start_scheduler(SINAS_ENCRYPTION_KEY=wrong)
    # The refused start's traceback holds its last database connection until collected (a
    # real scheduler exits here); this test's database can't be dropped while it is open.
    gc.collect()
    # Nothing was rewritten, and no second key was made beside the one it can't read.
    assert await stored_secrets(db) == before


def test_a_malformed_key_list_is_refused_by_the_settings(
    scheduler_settings: Callable[..., object],
) -> None:
    with pytest.raises(ValueError, match="comma-separated"):
        scheduler_settings(SINAS_ENCRYPTION_KEY=f"{Fernet.generate_key().decode()},not-a-key")

"""Fixtures for the scheduler's own tests: real schedulers in-process against this test's
database and NATS stream prefix."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sinas_common.callback_policy import Resolver
from sinas_common.settings import NatsSettings
from sinas_devstack.pytest_plugin import InternalTls
from sinas_scheduler.pg import HotPool, open_hot_pool
from sinas_scheduler.settings import SchedulerSettings
from sinas_scheduler.testing import RunningScheduler, start_in_process, stop_in_process

StartScheduler = Callable[..., Awaitable[RunningScheduler]]


@pytest.fixture
def admin_key() -> str:
    return "sk-" + secrets.token_urlsafe(32)


@pytest.fixture
def encryption_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def scheduler_settings(
    database_url: str,
    nats_settings: NatsSettings,
    admin_key: str,
    encryption_key: str,
    internal_tls: InternalTls,
) -> Callable[..., SchedulerSettings]:
    """Settings for a scheduler of this test; keyword overrides use the env variable names."""

    def build(**overrides: Any) -> SchedulerSettings:
        values: dict[str, Any] = {
            "DATABASE_URL": database_url,
            "nats": nats_settings,
            "tls": internal_tls("scheduler"),
            "SCHEDULER_GRPC_BIND": "127.0.0.1:0",
            "SINAS_BOOTSTRAP_ADMIN_KEY": admin_key,
            "SINAS_ENCRYPTION_KEY": encryption_key,
            "SCHEDULER_DB_POOL_SIZE": 5,
            "SHUTDOWN_GRACE_SECONDS": 1,
            **overrides,
        }
        return SchedulerSettings(**values)

    return build


@pytest.fixture
async def start_scheduler(
    scheduler_settings: Callable[..., SchedulerSettings],
    admin_key: str,
    internal_tls: InternalTls,
) -> AsyncIterator[StartScheduler]:
    """Starts schedulers on free ports; every one still running stops at the end."""
    running: list[RunningScheduler] = []

    async def start(*, resolver: Resolver | None = None, **overrides: Any) -> RunningScheduler:
        scheduler = await start_in_process(
            scheduler_settings(**overrides), admin_key, client_tls=internal_tls, resolver=resolver
        )
        running.append(scheduler)
        return scheduler

    yield start
    for scheduler in running:
        if scheduler.app.started:
            await stop_in_process(scheduler)


@pytest.fixture
async def scheduler(start_scheduler: StartScheduler) -> RunningScheduler:
    return await start_scheduler()


@pytest.fixture
async def hot_pool(database_url: str) -> AsyncIterator[HotPool]:
    """The psycopg pool the stores' hot paths use, on this test's database."""
    pool = await open_hot_pool(database_url, size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Direct access to this test's database, for checks the API can't make."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()

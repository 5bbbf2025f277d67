"""Pytest fixtures for real PostgreSQL, NATS and whole running stacks, isolated per test.

PostgreSQL: the schema is migrated once into a template database; each test gets its own
database cloned from it. NATS: one JetStream server; each test gets its own stream prefix.
Stacks: the real services as processes on a fresh database and stream prefix each.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sinas_common.settings import NatsSettings
from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres
from sinas_devstack.stack import Stack, StackConfig

TEMPLATE_DB = "sinas_template"


def _libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


@pytest.fixture(scope="session")
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sinas-test-"))
    # The embedded PostgreSQL runs as its own system user when we are root: let it in.
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url(scratch_root: Path) -> Iterator[str]:
    """The `postgres` database of a session-wide embedded server, with the template migrated."""
    from sinas_scheduler.migrate import upgrade_to_head

    server = EmbeddedPostgres(scratch_root / "pg")
    admin_url = server.start()
    with psycopg.connect(_libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    upgrade_to_head(_with_database(admin_url, TEMPLATE_DB))
    yield admin_url
    server.stop()


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq_url(postgres_admin_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield _with_database(postgres_admin_url, name)
    with psycopg.connect(_libpq_url(postgres_admin_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def nats_url(scratch_root: Path) -> Iterator[str]:
    server = EmbeddedNats(scratch_root / "nats")
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def nats_settings(nats_url: str) -> NatsSettings:
    """NATS settings with a stream prefix of this test's own."""
    prefix = f"T{uuid.uuid4().hex[:12].upper()}"
    return NatsSettings.model_validate({"NATS_URL": nats_url, "NATS_STREAM_PREFIX": prefix})


StackFactory = Callable[..., Stack]


def _new_stack_database(admin_url: str) -> str:
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return _with_database(admin_url, name)


@pytest.fixture(scope="session")
def stack_factory(
    postgres_admin_url: str, nats_url: str, scratch_root: Path
) -> Iterator[StackFactory]:
    """Builds stacks on fresh databases and stream prefixes; stops them all at the end."""
    built: list[Stack] = []

    def build(**extra_env: str) -> Stack:
        tag = uuid.uuid4().hex[:10]
        stack = Stack(
            StackConfig(
                database_url=_new_stack_database(postgres_admin_url),
                nats_url=nats_url,
                log_dir=scratch_root / f"logs-{tag}",
                admin_key="sk-" + secrets.token_urlsafe(32),
                nats_stream_prefix=f"E{tag.upper()}",
                extra_env=extra_env,
            )
        )
        built.append(stack)
        return stack

    yield build
    for stack in built:
        stack.stop_all()


@pytest.fixture(scope="session")
def stack(stack_factory: StackFactory) -> Stack:
    """One shared, running system for tests that don't crash anything."""
    shared = stack_factory()
    shared.start_all()
    return shared


def admin_client_for(stack: Stack) -> httpx.AsyncClient:
    """An HTTP client on the stack's gateway authenticated with its admin key."""
    return httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"X-API-Key": stack.config.admin_key},
        timeout=httpx.Timeout(60.0),
    )


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An admin HTTP client on the shared stack."""
    async with admin_client_for(stack) as client:
        yield client

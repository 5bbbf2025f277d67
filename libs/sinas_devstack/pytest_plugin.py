"""Pytest fixtures for real PostgreSQL, NATS and whole running stacks, isolated per test.

PostgreSQL: the schema is migrated once into a template database; each test gets its own
database cloned from it. NATS: one JetStream server with a user per service; each test gets
its own stream prefix, granted to those users.
Stacks: the real services as processes on a fresh database and stream prefix each.
Internal TLS: one CA and one certificate per role for the session, used by every stack and
by in-process servers and clients (`internal_pki`, `internal_tls`).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from sinas_common.settings import InternalTlsSettings, NatsSettings
from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.pki import provision_pki
from sinas_devstack.stack import Stack, StackConfig, merge_role_env

TEMPLATE_DB = "sinas_template"


def _libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}?{query}" if query else f"{base}/{name}"


@pytest.fixture(scope="session")
def scratch_root() -> Iterator[Path]:
    # 0700 from mkdtemp, as $SINAS_HOME is: the logs, keys and certificates in it are ours.
    root = Path(tempfile.mkdtemp(prefix="sinas-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def internal_pki(scratch_root: Path) -> dict[str, dict[str, str]]:
    """Role -> the INTERNAL_TLS_* (and SCHEDULER_TLS_SERVER_NAME) environment of that role,
    from one CA made for the session."""
    return provision_pki(scratch_root / "pki")


InternalTls = Callable[[str], InternalTlsSettings]


@pytest.fixture(scope="session")
def internal_tls(internal_pki: dict[str, dict[str, str]]) -> InternalTls:
    """The internal TLS settings of a role's certificate, for in-process servers and clients."""

    def settings_of(role: str) -> InternalTlsSettings:
        return InternalTlsSettings.model_validate(internal_pki[role])

    return settings_of


@pytest.fixture(scope="session")
def postgres_admin_url(scratch_root: Path) -> Iterator[str]:
    """The `postgres` database of a session-wide embedded server, with the template migrated."""
    from sinas_scheduler.migrate import upgrade_to_head

    server = EmbeddedPostgres(scratch_root / "pg", ephemeral=True)
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
def nats_server(scratch_root: Path) -> Iterator[EmbeddedNats]:
    """The session's NATS server; its users are granted each test's stream prefix as the
    test asks for it, so every test runs under the permissions `make run` has."""
    accounts = provision_nats_users(scratch_root / "nats-auth", prefixes=())
    server = EmbeddedNats(scratch_root / "nats", accounts)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return f"nats://127.0.0.1:{nats_server.port}"


NatsSettingsAs = Callable[[str], NatsSettings]


@pytest.fixture
def nats_settings_as(nats_server: EmbeddedNats, nats_url: str) -> NatsSettingsAs:
    """A stream prefix of this test's own; `nats_settings_as(role)` logs in as that
    service's NATS user (scheduler, executor or notifier) on it."""
    prefix = f"T{uuid.uuid4().hex[:12].upper()}"
    nats_server.grant(prefix)

    def settings_as(role: str) -> NatsSettings:
        return nats_server.accounts.settings(role, url=nats_url, prefix=prefix)

    return settings_as


@pytest.fixture
def nats_settings(nats_settings_as: NatsSettingsAs) -> NatsSettings:
    """NATS settings with a stream prefix of this test's own, logged in as the scheduler:
    the user that creates the streams and publishes to them."""
    return nats_settings_as("scheduler")


StackFactory = Callable[..., Stack]


def _new_stack_database(admin_url: str) -> str:
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return _with_database(admin_url, name)


@pytest.fixture(scope="session")
def stack_factory(
    postgres_admin_url: str,
    nats_server: EmbeddedNats,
    nats_url: str,
    scratch_root: Path,
    internal_pki: dict[str, dict[str, str]],
) -> Iterator[StackFactory]:
    """Builds stacks on fresh databases and stream prefixes; stops them all at the end."""
    built: list[Stack] = []

    def build(**extra_env: str) -> Stack:
        tag = uuid.uuid4().hex[:10]
        prefix = f"E{tag.upper()}"
        nats_server.grant(prefix)
        stack = Stack(
            StackConfig(
                database_url=_new_stack_database(postgres_admin_url),
                nats_url=nats_url,
                log_dir=scratch_root / f"logs-{tag}",
                admin_key="sk-" + secrets.token_urlsafe(32),
                nats_stream_prefix=prefix,
                extra_env=extra_env,
                role_env=merge_role_env(internal_pki, nats_server.accounts.role_env()),
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

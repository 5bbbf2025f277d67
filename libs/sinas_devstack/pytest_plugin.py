"""Pytest fixtures for real PostgreSQL and NATS: one server each per session, isolated per test.

PostgreSQL: the schema is migrated once into a template database; each test gets its own
database cloned from it. NATS: one JetStream server; each test gets its own stream prefix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sinas_common.settings import NatsSettings
from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres

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

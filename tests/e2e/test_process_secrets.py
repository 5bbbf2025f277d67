"""No other process reads a running service's environment or memory, and each service's
environment holds only the secrets it is meant to."""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import urlsplit

from sinas_devstack.stack import SECRET_HOLDERS, Stack

UNPRIVILEGED = 65534
# What a process holding our secrets exposes under /proc/<pid>.
SENSITIVE = ("environ", "mem", "maps")


def _prober_uid() -> int | None:
    """Who probes: as root (CI), another uid, which is what a sandboxed worker or another
    user on the host is; otherwise our own uid, kept out by non-dumpable alone (a
    non-dumpable process's /proc entries belong to root)."""
    return UNPRIVILEGED if os.geteuid() == 0 else None


def _as_prober() -> None:
    uid = _prober_uid()
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _probe(pid: int) -> dict[str, str]:
    """In a fork, as the prober, opens each of /proc/<pid>/{environ,mem,maps}; returns "read"
    or the error's name for each."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read)
            _as_prober()
            seen: dict[str, str] = {}
            for name in SENSITIVE:
                try:
                    # The kernel checks at open; reading `mem` would also need an address.
                    with open(f"/proc/{pid}/{name}", "rb") as file:
                        if name != "mem":
                            file.read(1)
                    seen[name] = "read"
                except OSError as exc:
                    seen[name] = type(exc).__name__
            os.write(write, json.dumps(seen).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = json.loads(pipe.read() or b"{}")
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(seen)


def _service_pids(stack: Stack) -> dict[str, int]:
    pids: dict[str, int] = {}
    for name in ("scheduler", "executor", "notifier", "gateway"):
        process = stack.services[name].process
        assert process is not None and process.poll() is None, name
        pids[name] = process.pid
    return pids


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as file:
        raw = file.read()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(): value.decode(errors="replace") for key, value in pairs}


def test_the_probe_reads_an_ordinary_process_of_its_own_uid() -> None:
    # The control: what keeps the probe out of a service is the service, not the probe.
    ordinary = subprocess.Popen(["sleep", "60"], preexec_fn=_as_prober)
    try:
        seen = _probe(ordinary.pid)
        # `mem` wants ptrace attach, which containers may refuse even here.
        assert (seen["environ"], seen["maps"]) == ("read", "read")
    finally:
        ordinary.kill()
        ordinary.wait()


def test_no_other_process_reads_a_service_environ_or_memory(stack: Stack) -> None:
    # As root, the other uid is kept out whatever the flag; the flag itself (root-owned /proc
    # entries, inherited by forks) is shown by tests/unit/test_hardening.py.
    for name, pid in _service_pids(stack).items():
        seen = _probe(pid)
        assert (seen["environ"], seen["mem"]) == ("PermissionError", "PermissionError"), name
        if _prober_uid() is not None:
            assert seen["maps"] == "PermissionError", name


def test_each_service_environ_holds_only_its_own_secrets(stack: Stack) -> None:
    config = stack.config
    password = urlsplit(config.database_url.split("?", 1)[0]).password
    assert password
    values = {
        "DATABASE_URL": config.database_url,
        "SINAS_BOOTSTRAP_ADMIN_KEY": config.admin_key,
        "SINAS_ENCRYPTION_KEY": config.encryption_key,
        "the database password": password,
    }
    holders = {**SECRET_HOLDERS, "the database password": frozenset({"scheduler"})}
    for role, pid in _service_pids(stack).items():
        environ = _environ(pid)
        for secret, allowed in holders.items():
            # No holders: a per-service credential (NATS_USER), each role given its own.
            if allowed and role not in allowed:
                assert secret not in environ, (role, secret)
        blob = "\0".join(f"{key}={value}" for key, value in environ.items())
        for secret, value in values.items():
            assert (value in blob) == (role in holders[secret]), (role, secret)
        # Each service's NATS password is its own.
        others = {
            env["NATS_PASSWORD"]
            for other, env in config.role_env.items()
            if other != role and env.get("NATS_PASSWORD")
        }
        assert not any(other in blob for other in others), role

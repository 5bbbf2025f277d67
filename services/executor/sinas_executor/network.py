"""A worker's own network namespace: loopback only, or outbound traffic through pasta."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import select
import shutil
import signal
import socket
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Its own network namespace, reaching out through pasta; a namespace with only its own
# loopback; or the host's network (and its loopback) as it is.
ISOLATED = "isolated"
NONE = "none"
HOST = "host"
MODES = (ISOLATED, NONE, HOST)
# Isolated where this machine can, else the host's network, warned about at start.
AUTO = "auto"
SETTING = "EXECUTOR_SANDBOX_NETWORK"
TUN_DEVICE = "/dev/net/tun"
RESOLV_CONF = "/etc/resolv.conf"
# pasta's whole environment: nothing of the zygote's, however minimal that is.
PASTA_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# How long pasta may take to configure a worker's namespace.
READY_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH14x")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NetworkUnavailable(Exception):
    """The network mode asked for can't be had on this machine: the executor must not start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """One worker's network, from its spawn message."""

    mode: str = HOST
    pasta: str | None = None
    # The host loopback ports a worker's own 127.0.0.1 forwards to (the API, a local resolver).
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()

    def to_message(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "pasta": self.pasta,
            "tcp": list(self.tcp_ports),
            "udp": list(self.udp_ports),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any] | None) -> Network:
        if message is None:
            return cls()
        return cls(
            mode=str(message["mode"]),
            pasta=message.get("pasta"),
            tcp_ports=tuple(int(port) for port in message.get("tcp", ())),
            udp_ports=tuple(int(port) for port in message.get("udp", ())),
        )

    @property
    def own_namespace(self) -> bool:
        return self.mode != HOST


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_ports(api_url: str | None) -> tuple[int, ...]:
    """The port of `api_url` when it is on the host's loopback: the one a worker may reach."""
    if not api_url:
        return ()
    parts = urlsplit(api_url)
    if parts.hostname is None or not _is_loopback(parts.hostname):
        return ()
    return (parts.port or (443 if parts.scheme == "https" else 80),)


def loopback_resolver(path: str = RESOLV_CONF) -> bool:
    """Whether names resolve through a nameserver on the host's loopback (systemd-resolved,
    dnsmasq): then a worker's own loopback must forward port 53 to it."""
    try:
        with open(path, encoding="utf-8") as conf:
            lines = conf.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and _is_loopback(fields[1]):
            return True
    return False


def pasta_unavailable() -> str | None:
    """Why pasta can't give workers a network here, or None when it can.

    pasta runs under the worker's uid (the executor's, or as root the worker's own), so the
    tun device must be open to that uid: as root, to everyone."""
    if shutil.which("pasta", path=PASTA_ENVIRONMENT["PATH"]) is None:
        return "pasta is not installed (Debian's passt package)"
    try:
        mode = os.stat(TUN_DEVICE).st_mode
    except OSError as exc:
        return f"{TUN_DEVICE}: {exc.strerror}"
    if os.geteuid() == 0:
        if mode & 0o006 != 0o006:
            return f"{TUN_DEVICE} is mode {mode & 0o777:o}, workers' uids need 0666"
    elif not os.access(TUN_DEVICE, os.R_OK | os.W_OK):
        return f"{TUN_DEVICE} can't be opened by uid {os.geteuid()} (needs mode 0666)"
    return None


def resolve(requested: str, *, namespaces: bool, api_url: str | None) -> Network:
    """The network workers get: `requested` (AUTO: isolated where available, else the host's,
    warned about), or NetworkUnavailable naming the setting."""
    if requested not in (AUTO, *MODES):
        raise NetworkUnavailable(f"{SETTING}={requested}: must be auto, {', '.join(MODES)}")
    if requested == HOST:
        return Network(mode=HOST)
    if not namespaces:
        if requested != AUTO:
            raise NetworkUnavailable(f"{SETTING}={requested} needs the sandbox's namespaces")
        return Network(mode=HOST)
    if requested == NONE:
        return Network(mode=NONE)
    reason = pasta_unavailable()
    if reason is not None:
        if requested == ISOLATED:
            raise NetworkUnavailable(f"{SETTING}=isolated is unavailable: {reason}")
        # Warned about at start and on /health (`app.sandbox_warnings`).
        return Network(mode=HOST)
    resolver = (53,) if loopback_resolver() else ()
    return Network(
        mode=ISOLATED,
        pasta=shutil.which("pasta", path=PASTA_ENVIRONMENT["PATH"]),
        tcp_ports=tuple(dict.fromkeys((*api_ports(api_url), *resolver))),
        udp_ports=resolver,
    )


def loopback_up() -> None:
    """Brings up the new network namespace's own loopback (it starts down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = _IFREQ.pack(b"lo", 0)
        _name, flags = _IFREQ.unpack(fcntl.ioctl(probe, _SIOCGIFFLAGS, request))
        fcntl.ioctl(probe, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def _ports(ports: tuple[int, ...]) -> str:
    return ",".join(str(port) for port in ports) or "none"


def pasta_command(network: Network, pid: int, ready: str) -> list[str]:
    assert network.pasta is not None
    return [
        network.pasta,
        "--quiet",
        # A child of the worker's outer process, in its session: it ends with the worker.
        # (Daemonized, this pasta would outlive it: it quits by itself only for a namespace
        # bound to a path.) Its pid file, written once the namespace is configured, is the
        # sign it is ready.
        "--foreground",
        "--pid",
        ready,
        "--config-net",
        # The gateway's address is not the host: only the ports below reach its loopback.
        "--no-map-gw",
        # Nothing from outside into the worker; from the worker, only the ports it needs.
        "--tcp-ports",
        "none",
        "--udp-ports",
        "none",
        "--tcp-ns",
        _ports(network.tcp_ports),
        "--udp-ns",
        _ports(network.udp_ports),
        str(pid),
    ]


class Pasta:
    """The pasta that configures a worker's network namespace from the host's, and then
    carries its traffic for as long as the worker lives.

    Forked before the worker unshares (it stays in the host's namespaces), it waits for
    `go()`, then becomes pasta aimed at the worker's outer process, its parent: it dies
    with that process (parent-death signal) or with its session (the zygote's kill)."""

    def __init__(self, network: Network) -> None:
        target = os.getpid()
        self._ready_read, self._ready_write = os.pipe()
        go_read, self._go_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._go_write)
            # pasta writes its pid file into this pipe, reopened through the outer's /proc.
            self._become_pasta(network, target, go_read, f"/proc/{target}/fd/{self._ready_write}")
        os.close(go_read)

    @staticmethod
    def _become_pasta(network: Network, target: int, go_read: int, ready: str) -> None:
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            with contextlib.suppress(OSError):
                _set_parent_death_signal()
                # Only stdin and stderr (the executor's log) go on into pasta.
                close_all_but(go_read)
                if os.getppid() == target and os.read(go_read, 1) == b"1":
                    os.close(go_read)
                    command = pasta_command(network, target, ready)
                    os.execve(command[0], command, PASTA_ENVIRONMENT)
        finally:
            os._exit(127)

    def go(self) -> None:
        """The namespace exists and its maps are written: pasta may enter it."""
        os.write(self._go_write, b"1")
        os.close(self._go_write)

    def cancel(self) -> None:
        for fd in (self._go_write, self._ready_read, self._ready_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def wait(self, timeout: float = READY_SECONDS) -> None:
        """Returns once pasta configured the namespace; raises when it could not."""
        exited = os.pidfd_open(self.pid)
        try:
            readable, _, _ = select.select([self._ready_read, exited], [], [], timeout)
            written = os.read(self._ready_read, 32) if self._ready_read in readable else b""
        finally:
            os.close(exited)
            os.close(self._ready_read)
            os.close(self._ready_write)
        if not written.strip().isdigit():
            os.kill(self.pid, signal.SIGKILL)
            _pid, status = os.waitpid(self.pid, 0)
            raise OSError(f"pasta could not configure the worker's network ({status:#x})")


def close_all_but(keep: int) -> None:
    """Closes every descriptor above stderr but `keep`: what a process passes on is only that."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def _set_parent_death_signal() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")

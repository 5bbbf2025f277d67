"""A worker's own PID, mount, IPC, UTS (and, unprivileged, user) namespaces and private mounts."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sinas_executor.network import Network, Pasta, close_all_but, loopback_up

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What a hidden folder is covered with: empty, and too small to be worth writing to.
_COVER_OPTIONS = "size=16k,nr_inodes=64,mode=0755"
_STATUS = struct.Struct("=i")
_TMP_INODES = 65536
# The folders of the worker's own tmpfs besides its scratch folder, where they exist.
PRIVATE_FOLDERS = tuple(path for path in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(path))

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Isolation:
    """What one worker's namespaces hold, from its spawn message."""

    scratch: str
    uid: int | None
    gid: int | None
    disk_mb: int
    hide: tuple[str, ...]
    network: Network = field(default_factory=Network)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Isolation:
        return cls(
            scratch=str(spec["scratch"]),
            uid=spec.get("uid"),
            gid=spec.get("gid"),
            disk_mb=int(spec["limits"]["disk_mb"]),
            hide=tuple(str(path) for path in spec.get("hide", ())),
            network=Network.from_message(spec.get("network")),
        )


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()),
        f"mount {target}",
    )


def write_control_file(path: str, text: str) -> None:
    """One unbuffered write, as /proc and cgroup files need (each write is one request)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@dataclass(slots=True)
class Prepared:
    """A worker's namespaces made before its run is known: its own uid (as root), user
    namespace (unprivileged), and the network pasta configures, which takes longest.

    The next worker's are made ahead this way (`spare`), so that a worker's start
    does not wait for pasta. Nothing of a run is in them yet: no scratch folder, no mounts."""

    unprivileged: bool
    pasta: Pasta | None
    network_ready: bool = False

    def await_network(self) -> None:
        """Returns once pasta configured the namespace (at once without pasta); raises when
        it could not. The outer process is non-dumpable again from then on."""
        if self.pasta is None or self.network_ready:
            return
        self.pasta.wait()
        self.network_ready = True
        _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl")


def prepare(uid: int | None, gid: int | None, network: Network) -> Prepared:
    """Called in the zygote's fresh child: the namespaces of its worker but the PID
    namespace's first process, and the pasta that configures its network (not yet waited
    for). As root, a worker with a pasta runs under its own uid from here on."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if network.own_namespace:
        flags |= CLONE_NEWNET
    # As root, a uid of its own isolates the worker; otherwise a user namespace grants the
    # rights the mounts need, inside it only, and maps just the executor's own ids.
    unprivileged = os.geteuid() != 0
    # pasta configures only a network namespace whose user namespace it may enter: as root,
    # the same path as root without CAP_SYS_ADMIN, and pasta runs under the worker's uid.
    if not unprivileged and (network.pasta is not None or _libc.unshare(flags) != 0):
        error = ctypes.get_errno()
        if uid is None or gid is None or (network.pasta is None and error != errno.EPERM):
            raise OSError(error, f"unshare: {os.strerror(error)}")
        # Root without CAP_SYS_ADMIN (a container's default set): the worker's own uid first,
        # then a user namespace like any unprivileged executor's.
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        unprivileged = True
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    pasta = Pasta(network) if network.pasta is not None else None
    if unprivileged:
        try:
            _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare")
        except OSError:
            if pasta is not None:
                pasta.cancel()
            raise
        # A non-dumpable process's /proc/self files are root's: dumpable long enough to write
        # its own maps (and for pasta to enter its namespaces). Workers can't see it from their
        # own PID namespaces, and it holds nothing the executor's uid can't read anyway (the
        # zygote's environment is minimal).
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl")
        write_control_file("/proc/self/uid_map", f"{outer_uid} {outer_uid} 1\n")
        write_control_file("/proc/self/setgroups", "deny")
        write_control_file("/proc/self/gid_map", f"{outer_gid} {outer_gid} 1\n")
        if pasta is not None:
            pasta.go()
        else:
            _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl")
    if network.own_namespace and pasta is None:
        loopback_up()
    return Prepared(unprivileged=unprivileged, pasta=pasta)


def enter(isolation: Isolation, prepared: Prepared | None = None) -> None:
    """Called in the zygote's fresh child (after `prepare`, made now when not given);
    returns only in the function's process.

    That child stays outside, waits and ends as the function's process ended, so the zygote's
    report is unchanged. Inside the new namespaces its child is PID 1: it makes the mounts,
    forks the function's process and reaps; when the function's process ends, PID 1 ends,
    and with it, by the kernel's hand, every process the function left behind. The function
    never runs as PID 1: the kernel drops signals PID 1 sends itself.
    """
    if prepared is None:
        prepared = prepare(isolation.uid, isolation.gid, isolation.network)
    # The function waits on this until its network is configured (or its worker ends).
    net_read, net_write = os.pipe()
    status_read, status_write = os.pipe()
    init = os.fork()
    if init != 0:
        os.close(net_read)
        _await_network(prepared, init)
        # An init that failed its set-up has closed its end: not a death by SIGPIPE here,
        # which would hide its exit code (SETUP_FAILED) from the zygote's report.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        with contextlib.suppress(BrokenPipeError):
            os.write(net_write, b"1")
        os.close(net_write)
        close_all_but(status_read)
        _wait_as_outer(init, status_read)
    os.close(net_write)
    os.close(status_read)
    # Forked while the outer may still be dumpable for pasta: never the init or the function.
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl")
    _set_pdeathsig()
    os.umask(0o022)
    _make_mounts(isolation)
    _check(_libc.sethostname(b"sandbox", 7), "sethostname")
    function = os.fork()
    if function == 0:
        os.close(status_write)
        _set_pdeathsig()
        if os.getppid() != 1:
            os._exit(1)
        # Never a line of the function's code before its network is what it should be.
        ready = os.read(net_read, 1)
        os.close(net_read)
        if ready != b"1":
            os._exit(1)
        if prepared.unprivileged:
            drop_capabilities()
        return
    os.close(net_read)
    close_all_but(status_write)
    _reap_as_init(function, status_write)


def _await_network(prepared: Prepared, init: int) -> None:
    """In the outer process: pasta configured the namespace, or the worker never runs."""
    try:
        prepared.await_network()
    except OSError:
        os.kill(init, signal.SIGKILL)
        raise


def _set_pdeathsig() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")


def _reap_as_init(function: int, status_write: int) -> NoReturn:
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if pid == function:
            os.write(status_write, _STATUS.pack(status))
            os._exit(0)


def _wait_as_outer(init: int, status_read: int) -> NoReturn:
    _pid, status = os.waitpid(init, 0)
    reported = os.read(status_read, _STATUS.size)
    if len(reported) == _STATUS.size:
        (status,) = _STATUS.unpack(reported)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.waitstatus_to_exitcode(status))


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        # The fifth field, with space, tab, newline and backslash octal-escaped.
        return [
            line.split()[4].encode().decode("unicode_escape").encode("latin-1").decode()
            for line in mountinfo
        ]


def _read_only_host() -> None:
    """Every mount the worker inherits becomes read-only in its namespace: what the uid may
    write outside its own tmpfs (the executor's own files, when unprivileged) it can't."""
    for path in dict.fromkeys(_mount_points()):
        try:
            kept = os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            # Out of reach (under a folder this uid can't enter): so is what it holds.
            continue
        _mount("", path, "", MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def _make_mounts(isolation: Isolation) -> None:
    if isolation.disk_mb < 1:
        # tmpfs reads size=0 as no limit at all.
        raise ValueError(f"disk limit of {isolation.disk_mb} MiB: at least 1 is needed")
    # Nothing mounted here may reach the host's namespace through shared propagation.
    _mount("", "/", "", MS_REC | MS_PRIVATE)
    _read_only_host()
    # One tmpfs holds /tmp, /var/tmp, /dev/shm and the scratch folder: one bound on them all.
    _mount(
        "sinas-tmp",
        "/tmp",
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        # A bounded inode count also lets the worker tell that a run left nothing behind.
        f"size={isolation.disk_mb}m,nr_inodes={_TMP_INODES},mode=0755",
    )
    for name in ("tmp", "var-tmp", "shm"):
        os.mkdir(f"/tmp/{name}")
        os.chmod(f"/tmp/{name}", 0o1777)
    os.mkdir("/tmp/scratch", 0o700)
    if isolation.uid is not None and isolation.gid is not None:
        os.chown("/tmp/scratch", isolation.uid, isolation.gid)
    scratch = os.open("/tmp/scratch", os.O_PATH | os.O_DIRECTORY)
    for name, target in (("var-tmp", "/var/tmp"), ("shm", "/dev/shm")):
        if target in PRIVATE_FOLDERS:
            _mount(f"/tmp/{name}", target, "", MS_BIND)
    _mount("/tmp/tmp", "/tmp", "", MS_BIND)
    covers: list[str] = []
    # Outermost first: what lies inside a covered folder is out of view already.
    for path in sorted({os.path.normpath(path) for path in isolation.hide}, key=len):
        if not any(path.startswith(folder + "/") for folder in covers) and _cover(path):
            covers.append(path)
    os.makedirs(isolation.scratch, mode=0o755, exist_ok=True)
    _mount(f"/proc/self/fd/{scratch}", isolation.scratch, "", MS_BIND)
    os.close(scratch)
    for path in covers:
        _mount("", path, "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    # A /proc of the new PID namespace: no other process's environ, cmdline or fds in view.
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _cover(path: str) -> bool:
    """Hides what `path` holds: True when that took a folder (to be made read-only once the
    scratch folder's mount point is made), False for a file or nothing there to hide."""
    try:
        is_dir = os.path.isdir(path)
        exists = is_dir or os.path.lexists(path)
    except OSError:
        return False
    if not exists:
        return False
    if is_dir:
        _mount("sinas-hidden", path, "tmpfs", MS_NOSUID | MS_NODEV, _COVER_OPTIONS)
        return True
    _mount("/dev/null", path, "", MS_BIND)
    return False


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Gives up every capability the user namespace granted: without them, the function can't
    undo the mounts that hide the host's files, or make new ones."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")

"""Hostile function code, defined by the admin and run by an ordinary user, against a real
system: with the executor as the test's own uid and, when that is root, as an unprivileged one.

Each function tries one thing a run must not be able to do, and reports what it got; each
assertion fails if the sandbox lets that thing through.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import CreatedUser, enqueue, make_function_factory, make_user_factory, wait_for_status
from .test_sandbox_isolation import PROBE, all_there, socket_dir

NOBODY = 65534
MAX_PROCESSES = 16
DISK_LIMIT_MB = 32
CPU_LIMIT_SECONDS = 2
LIMITS = {
    "EXECUTOR_MAX_PROCESSES": str(MAX_PROCESSES),
    "EXECUTOR_DISK_LIMIT_MB": str(DISK_LIMIT_MB),
    "EXECUTOR_CPU_LIMIT_SECONDS": str(CPU_LIMIT_SECONDS),
}
# Root runs the suite twice: the executor as root (workers under uids of their own) and as
# an unprivileged uid (workers in user namespaces). Otherwise it is already unprivileged.
EXECUTORS = ["as-started", "unprivileged"] if os.geteuid() == 0 else ["as-started"]


def _executor_tls_for(stack: Stack, uid: int, folder: Path) -> dict[str, str]:
    """The executor's certificate, key and CA, copied where `uid` alone may read them."""
    os.chown(folder, uid, uid)
    env = {}
    for name in ("INTERNAL_TLS_CA_FILE", "INTERNAL_TLS_CERT_FILE", "INTERNAL_TLS_KEY_FILE"):
        source = Path(stack.config.role_env["executor"][name])
        copy = folder / source.name
        shutil.copyfile(source, copy)
        copy.chmod(0o600)
        os.chown(copy, uid, uid)
        env[name] = str(copy)
    return env


@pytest.fixture(scope="module", params=EXECUTORS)
def hostile_stack(request: pytest.FixtureRequest, stack_factory: StackFactory) -> Stack:
    stack = stack_factory(**LIMITS)
    if request.param == "as-started":
        stack.start_all()
        return stack
    scheduler = stack.scheduler()
    scheduler.start()
    stack.wait_ready(scheduler, timeout=120)
    # Not in the session's scratch folder, which only root may enter.
    folder = Path(tempfile.mkdtemp(prefix="sinas-nobody-tls-"))
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    tls = _executor_tls_for(stack, NOBODY, folder)
    services = [stack.executor(run_as_uid=NOBODY, **tls), stack.notifier(), stack.gateway()]
    for service in services:
        service.start()
    for service in services:
        stack.wait_ready(service)
    return stack


@dataclass
class Attacker:
    stack: Stack
    admin: httpx.AsyncClient
    users: list[CreatedUser]

    async def run(self, code: str, *, user: int = 0, **input_data: Any) -> dict[str, Any]:
        fn = await make_function_factory(self.admin)(code)
        client = self.users[user].client
        return await wait_for_status(client, await enqueue(client, fn, input=input_data))


@pytest.fixture
async def attacker(hostile_stack: Stack) -> AsyncIterator[Attacker]:
    opened: list[httpx.AsyncClient] = []
    async with admin_client_for(hostile_stack) as admin:
        make_user = make_user_factory(admin, hostile_stack.gateway_url, opened)
        grants = ["sinas.functions/*/*.execute:own", "sinas.executions.read:own"]
        users = [await make_user(grants), await make_user(grants)]
        try:
            yield Attacker(hostile_stack, admin, users)
        finally:
            for client in opened:
                await client.aclose()


def _completed(document: dict[str, Any]) -> Any:
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    return document["output_data"]


def _sandbox(stack: Stack) -> dict[str, Any]:
    reply = httpx.get(stack.health_url("executor"), timeout=10)
    assert reply.status_code == 200, reply.text
    sandbox: dict[str, Any] = reply.json()["sandbox"]
    return sandbox


def test_the_executor_reports_its_sandbox_on_health(hostile_stack: Stack) -> None:
    sandbox = _sandbox(hostile_stack)
    assert sandbox["isolation"] == "namespaces"
    assert sandbox["max_processes"] == MAX_PROCESSES
    assert sandbox["disk_limit_mb"] == DISK_LIMIT_MB
    # `make test` installs pasta and opens /dev/net/tun: the default is then isolated.
    assert sandbox["network"] == "isolated"


async def test_no_secret_log_or_database_socket_is_in_reach(attacker: Attacker) -> None:
    """Other processes' environ and cmdline, the service logs and PostgreSQL's socket folder:
    each there for the test, none there for the function."""
    stack = attacker.stack
    pids = [s.process.pid for s in stack.services.values() if s.process is not None]
    targets = [f"/proc/{pid}/{name}" for pid in pids for name in ("environ", "cmdline")]
    targets += [str(stack.config.log_dir), str(stack.services["executor"].log_path)]
    database_socket = socket_dir(stack.config.database_url)
    if database_socket is not None:
        targets.append(database_socket)
    # The control: all of them are there for the test, which runs as root or the services' uid.
    assert all_there(targets)
    seen = _completed(await attacker.run(PROBE, paths=targets))
    assert seen["seen"] == {path: "FileNotFoundError" for path in targets}, seen["seen"]
    assert seen["pids"] == [1, 2]


FORK_AND_THREADS = """
import os, threading, time

def handler(input_data, context):
    children, fork_errno = [], None
    for _ in range(200):
        try:
            pid = os.fork()
        except OSError as exc:
            fork_errno = exc.errno
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    release, threads, thread_error = threading.Event(), 0, None
    for _ in range(200):
        try:
            threading.Thread(target=release.wait, daemon=True).start()
        except RuntimeError as exc:
            thread_error = str(exc)
            break
        threads += 1
    release.set()
    return {"forked": len(children), "errno": fork_errno, "threads": threads,
            "thread_error": thread_error}
"""


async def test_forking_or_threading_past_the_process_cap_gets_eagain(attacker: Attacker) -> None:
    seen = _completed(await attacker.run(FORK_AND_THREADS))
    assert seen["errno"] == errno.EAGAIN
    assert 0 < seen["forked"] < MAX_PROCESSES
    assert seen["thread_error"] is not None
    assert 0 < seen["threads"] < MAX_PROCESSES
    # The cap was the run's own: another user's run forks as freely right after it.
    again = _completed(await attacker.run(FORK_AND_THREADS, user=1))
    assert 0 < again["forked"] < MAX_PROCESSES


FILL_DISK = """
import os

def handler(input_data, context):
    chunk, written = b"x" * (1 << 20), 0
    for index in range(10_000):
        folder = (".", "/tmp", "/dev/shm")[index % 3]
        try:
            with open(os.path.join(folder, f"fill-{index}"), "wb") as f:
                f.write(chunk)
        except OSError as exc:
            return {"written_mb": written, "errno": exc.errno}
        written += 1
    return {"written_mb": written, "errno": None}
"""


async def test_writing_past_the_disk_cap_gets_enospc(attacker: Attacker) -> None:
    seen = _completed(await attacker.run(FILL_DISK))
    assert seen["errno"] == errno.ENOSPC
    # Scratch, /tmp and /dev/shm together: one cap, not one per folder.
    assert DISK_LIMIT_MB - 4 <= seen["written_mb"] <= DISK_LIMIT_MB


ALLOCATE = """
import os, time

def handler(input_data, context):
    try:
        bytearray(2 << 30)
    except MemoryError:
        alone = "MemoryError"
    else:
        alone = "allocated"
    children = []
    for _ in range(input_data["children"]):
        pid = os.fork()
        if pid == 0:
            held = bytearray(input_data["each_mb"] << 20)
            held[::4096] = b"x" * len(held[::4096])
            time.sleep(3)
            os._exit(0)
        children.append(pid)
    killed = sum(os.WIFSIGNALED(os.waitpid(pid, 0)[1]) for pid in children)
    return {"alone": alone, "killed": killed}
"""


async def test_memory_is_limited_per_process_and_across_the_run_where_a_cgroup_is_ours(
    attacker: Attacker,
) -> None:
    # Four processes of 300 MiB each: within the 512 MiB each may hold alone, more than the
    # run's cgroup allows all of them together.
    seen = _completed(await attacker.run(ALLOCATE, children=4, each_mb=300))
    assert seen["alone"] == "MemoryError"
    if _sandbox(attacker.stack)["memory_limit"] == "cgroup":
        assert seen["killed"] >= 1
    else:
        # No cgroup of ours (unprivileged): each process alone, times the process cap.
        assert attacker.stack.services["executor"].run_as_uid is not None or os.geteuid() != 0


async def test_a_run_past_its_cpu_time_fails_naming_the_limit(attacker: Attacker) -> None:
    document = await attacker.run(
        "def handler(input_data, context):\n    while True:\n        pass\n"
    )
    assert document["status"] == "FAILED"
    assert f"EXECUTOR_CPU_LIMIT_SECONDS={CPU_LIMIT_SECONDS}" in document["error"]


LEAVE_BEHIND = """
import os, time

def handler(input_data, context):
    own = (1, os.getpid())
    others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in own)
    if input_data.get("leave"):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        os.wait()
    return {"others": others}
"""


async def test_a_process_left_behind_is_gone_by_the_next_run(attacker: Attacker) -> None:
    fn = await make_function_factory(attacker.admin)(LEAVE_BEHIND)
    client = attacker.users[0].client
    first = await wait_for_status(client, await enqueue(client, fn, input={"leave": True}))
    assert _completed(first) == {"others": []}
    second = await wait_for_status(client, await enqueue(client, fn, input={}))
    assert _completed(second) == {"others": []}


TMP_FILES = """
import os

def handler(input_data, context):
    folders = ("/tmp", "/var/tmp", "/dev/shm")
    paths = [os.path.join(folder, input_data["name"]) for folder in folders]
    found = [path for path in paths if os.path.exists(path)]
    if input_data.get("write"):
        for path in paths:
            with open(path, "w") as f:
                f.write("a secret of the first run")
    return {"found": found}
"""


async def test_tmp_and_shm_files_reach_no_later_run(attacker: Attacker) -> None:
    fn = await make_function_factory(attacker.admin)(TMP_FILES)
    name = f"left-{uuid.uuid4().hex}"
    for user, body in (
        (0, {"name": name, "write": True}),
        (0, {"name": name}),
        (1, {"name": name}),
    ):
        client = attacker.users[user].client
        assert _completed(await wait_for_status(client, await enqueue(client, fn, input=body))) == {
            "found": []
        }


WITHOUT_CREDENTIALS = """
import socket, ssl

def _nats(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.recv(4096)
            sock.sendall(b'CONNECT {"verbose":false}\\r\\nPING\\r\\n')
            return sock.recv(4096).decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__

def _scheduler(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw) as sock:
                sock.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes(9))
                return "answered" if sock.recv(4096) else "closed"
    except OSError as exc:
        return type(exc).__name__

def handler(input_data, context):
    return {"nats": _nats(input_data["nats"]), "scheduler": _scheduler(input_data["scheduler"])}
"""


async def test_the_scheduler_and_nats_refuse_a_function_without_credentials(
    attacker: Attacker,
) -> None:
    nats_port = urlsplit(attacker.stack.config.nats_url).port
    seen = _completed(
        await attacker.run(
            WITHOUT_CREDENTIALS, nats=nats_port, scheduler=attacker.stack.scheduler_port
        )
    )
    # Unreachable from the run's own network, or, reached, refused for want of credentials.
    assert "PONG" not in seen["nats"]
    assert seen["scheduler"] != "answered"
    if _sandbox(attacker.stack)["network"] == "isolated":
        # Its 127.0.0.1 is its own: nothing of the host's listens there.
        assert seen == {"nats": "ConnectionRefusedError", "scheduler": "ConnectionRefusedError"}


CALL_THE_API = """
import json, socket, urllib.request

def _connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError as exc:
        return type(exc).__name__
    return "connected"

def handler(input_data, context):
    request = urllib.request.Request(
        context["api_url"] + "/auth/me",
        headers={"Authorization": "Bearer " + context["access_token"]},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        me = json.load(reply)
    return {"me": me["id"], "database": _connect(input_data["database"])}
"""


async def test_a_function_calls_the_api_as_its_user_and_reaches_no_other_host_port(
    attacker: Attacker,
) -> None:
    """The seed's worked example through the isolated network: the API's port of the host's
    loopback is forwarded into the run; PostgreSQL's, beside it, is not."""
    database_port = urlsplit(attacker.stack.config.database_url).port
    seen = _completed(await attacker.run(CALL_THE_API, database=database_port))
    assert seen["me"] == attacker.users[0].id
    assert seen["database"] == "ConnectionRefusedError"


PTRACE = """
import ctypes, os

def handler(input_data, context):
    libc = ctypes.CDLL(None, use_errno=True)
    seen = {}
    for pid in input_data["pids"]:
        result = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
        seen[str(pid)] = "attached" if result == 0 else os.strerror(ctypes.get_errno())
    return seen
"""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(child) for child in (task / "children").read_text().split())
    return found


async def test_a_function_can_not_ptrace_the_zygote_or_the_executor(attacker: Attacker) -> None:
    executor = attacker.stack.services["executor"].process
    assert executor is not None
    zygotes = _children(executor.pid)
    # The control: the executor has its zygote.
    assert zygotes
    workers = [worker for zygote in zygotes for worker in _children(zygote)]
    seen = _completed(await attacker.run(PTRACE, pids=[executor.pid, *zygotes, *workers]))
    assert "attached" not in seen.values()


@pytest.fixture(autouse=True)
def _no_leftover_sandbox(hostile_stack: Stack) -> Iterator[None]:
    yield
    assert hostile_stack.services["executor"].alive, hostile_stack.services["executor"].log_tail()

"""Hostile functions against a worker's network: the host's loopback, the API's port, none."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sinas_executor import network
from sinas_executor.models import RunRequest
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool

MakeRequest = Callable[..., RunRequest]
GREETING = b"the host's own listener"

CONNECT = textwrap.dedent("""
    import socket

    def handler(input_data, context):
        found = {}
        for port in input_data["ports"]:
            try:
                with socket.create_connection((input_data["host"], port), timeout=2) as conn:
                    found[str(port)] = conn.recv(64).decode()
            except OSError as exc:
                found[str(port)] = type(exc).__name__
        return found
""")


@pytest.fixture
def listeners() -> Iterator[tuple[int, int]]:
    """Two listeners on the host's loopback answering GREETING: the API's port, another."""
    # On every address: the host's own non-loopback address must not lead to them either.
    servers = [socket.create_server(("0.0.0.0", 0)) for _ in range(2)]
    stop = False

    def serve(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not stop:
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = server.accept()
                with conn:
                    conn.sendall(GREETING)

    import threading

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield servers[0].getsockname()[1], servers[1].getsockname()[1]
    finally:
        stop = True
        for thread in threads:
            thread.join()
        for server in servers:
            server.close()


@contextlib.asynccontextmanager
async def _pool(mode: str, api_port: int) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(
        PoolLimits(
            concurrency=2,
            max_runs=50,
            memory_mb=256,
            cpu_seconds=60,
            network=mode,
            api_url=f"http://127.0.0.1:{api_port}",
        )
    )
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


def _isolated_available() -> bool:
    return network.pasta_unavailable() is None


async def _connect(
    pool: WorkerPool, make_request: MakeRequest, *ports: int, host: str = "127.0.0.1"
) -> dict[str, str]:
    request = make_request(CONNECT, input_data={"ports": ports, "host": host})
    result = await SandboxRunner(pool).run(request)
    assert result.error is None, result.traceback
    return dict(result.output)


async def test_isolated_reaches_only_the_apis_port_of_the_hosts_loopback(
    listeners: tuple[int, int], make_request: MakeRequest
) -> None:
    api, other = listeners
    assert _isolated_available(), network.pasta_unavailable()
    async with _pool("isolated", api) as pool:
        assert pool.network.mode == network.ISOLATED
        found = await _connect(pool, make_request, api, other)
        # pasta gives the worker the host's address as its own: it leads back into the worker.
        outside = await _connect(pool, make_request, api, other, host=_outside_address())
    assert found[str(api)] == GREETING.decode()
    # Its own loopback: nothing listens there.
    assert found[str(other)] == "ConnectionRefusedError"
    assert outside == {str(api): "ConnectionRefusedError", str(other): "ConnectionRefusedError"}


# A public address standing for the internet (Cloudflare's resolver, HTTPS).
PUBLIC = ("1.1.1.1", 443)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=5).close()
    except OSError:
        return False
    return True


async def test_isolated_reaches_what_the_host_reaches(make_request: MakeRequest) -> None:
    """Out through pasta: the worker reaches a public address exactly when the host does."""
    reach = textwrap.dedent("""
        import socket

        def handler(input_data, context):
            try:
                socket.create_connection(tuple(input_data["address"]), timeout=5).close()
            except OSError as exc:
                return type(exc).__name__
            return "connected"
    """)
    async with _pool("isolated", 1) as pool:
        result = await SandboxRunner(pool).run(make_request(reach, input_data={"address": PUBLIC}))
    assert result.error is None, result.traceback
    assert (result.output == "connected") == _reachable(PUBLIC), result.output


def _outside_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "the test needs an address besides loopback"
    return address


async def test_none_has_no_route_anywhere(
    listeners: tuple[int, int], make_request: MakeRequest
) -> None:
    api, _other = listeners
    probe = textwrap.dedent("""
        import socket

        def handler(input_data, context):
            found = {}
            for host in ("127.0.0.1", input_data["outside"]):
                try:
                    socket.create_connection((host, input_data["port"]), timeout=2).close()
                    found[host] = "connected"
                except OSError as exc:
                    found[host] = type(exc).__name__
            return found
    """)
    outside = _outside_address()
    async with _pool("none", api) as pool:
        assert pool.network.mode == network.NONE
        result = await SandboxRunner(pool).run(
            make_request(probe, input_data={"port": api, "outside": outside})
        )
    assert result.error is None, result.traceback
    assert result.output["127.0.0.1"] == "ConnectionRefusedError"
    assert result.output[outside] == "OSError"


async def test_host_shares_the_hosts_loopback(
    listeners: tuple[int, int], make_request: MakeRequest
) -> None:
    api, other = listeners
    async with _pool("host", api) as pool:
        assert pool.network.mode == network.HOST
        found = await _connect(pool, make_request, other)
    assert found[str(other)] == GREETING.decode()


async def test_isolated_and_unavailable_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "TUN_DEVICE", "/nonexistent/tun")
    pool = WorkerPool(PoolLimits(concurrency=1, network="isolated"))
    with pytest.raises(network.NetworkUnavailable, match="EXECUTOR_SANDBOX_NETWORK=isolated"):
        await pool.start()
    # Auto falls back to the host's network, and says so.
    auto = WorkerPool(PoolLimits(concurrency=1))
    await auto.start()
    try:
        assert auto.network.mode == network.HOST
    finally:
        await auto.close()


def _failing_pasta(folder: Path) -> Path:
    failing = folder / "pasta"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    folder.chmod(0o755)
    return failing


async def test_a_failed_pasta_never_runs_the_function(
    tmp_path: Path, make_request: MakeRequest
) -> None:
    """A worker whose network can't be configured is a set-up failure, not an unnetworked run."""
    pool = WorkerPool(PoolLimits(concurrency=1, network="isolated"))
    failing = _failing_pasta(tmp_path)
    real = network.resolve
    broken = network.Network(mode=network.ISOLATED, pasta=str(failing))

    def resolve(*args: object, **kwargs: object) -> network.Network:
        real(*args, **kwargs)  # type: ignore[arg-type]
        return broken

    import sinas_executor.pool as pool_module

    original = pool_module.resolve_network
    pool_module.resolve_network = resolve  # type: ignore[assignment]
    try:
        with pytest.raises(Exception, match="no sandboxed worker could start"):
            await pool.start()
    finally:
        pool_module.resolve_network = original
        await pool.close()


def _pastas() -> dict[int, int]:
    """Live pasta processes: pid -> the pid of the worker they serve (their last argument)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            args = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if args and os.path.basename(args[0]) == b"pasta" and args[-1].isdigit():
            found[int(name)] = int(args[-1])
    return found


def _idle_workers(pool: WorkerPool) -> dict[str, int]:
    """The pool's idle workers: user -> pid."""
    return {w.key.user_id: w.pid for entries in pool._idle.values() for _, w in entries}


async def _run_as(pool: WorkerPool, make_request: MakeRequest, user: str) -> None:
    input_data = {"ports": [], "host": "127.0.0.1"}
    result = await SandboxRunner(pool).run(
        make_request(CONNECT, user_id=user, input_data=input_data)
    )
    assert result.error is None, result.traceback


def _served_children(pool: WorkerPool) -> set[int]:
    """The children of this pool's zygote that have a pasta (another pool's are not)."""
    assert pool._zygote._process is not None
    zygote = pool._zygote._process.pid
    return {pid for pid in _pastas().values() if _parent(pid) == zygote}


def _parent(pid: int) -> int | None:
    try:
        # The fields after the command's closing parenthesis: state, then ppid.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


async def _spare(pool: WorkerPool) -> int:
    """The pid of the zygote's spare: the one child with a pasta that is no worker."""
    for _ in range(100):
        served = _served_children(pool) - set(_idle_workers(pool).values())
        if len(served) == 1:
            return served.pop()
        # The worker before may still be ending, its pasta with it.
        await asyncio.sleep(0.05)
    raise AssertionError(f"no one spare: {served}")


async def test_no_pasta_outlives_its_worker(make_request: MakeRequest) -> None:
    async with _pool("isolated", 1) as pool:
        for user in ("a", "b", "c"):
            await _run_as(pool, make_request, user)
        workers = set(_idle_workers(pool).values())
        assert workers <= set(_pastas().values()), "each live worker has its pasta"
        spare = await _spare(pool)
    # Gone with their workers (and the spare), at once: no pasta quits by itself for a
    # namespace given by pid.
    assert not (workers | {spare}) & set(_pastas().values())


async def test_a_new_worker_is_the_spare_its_network_was_made_for_ahead(
    make_request: MakeRequest,
) -> None:
    async with _pool("isolated", 1) as pool:
        # Made at start, after the sandbox check: configured before any run asked for it.
        first = await _spare(pool)
        await _run_as(pool, make_request, "a")
        assert _idle_workers(pool) == {"a": first}
        # Taken, it is replaced at once by the next one.
        second = await _spare(pool)
        assert second != first
        if os.geteuid() == 0:
            # As root the spare holds a uid of its own, given to no live worker meanwhile.
            assert _uid(second) != _uid(first)
        await _run_as(pool, make_request, "b")
        assert _idle_workers(pool) == {"a": first, "b": second}


async def test_without_a_spare_each_worker_makes_its_network_when_asked(
    make_request: MakeRequest,
) -> None:
    pool = WorkerPool(PoolLimits(concurrency=1, network="isolated", spare_worker=False))
    await pool.start()
    try:
        await asyncio.sleep(0.2)
        assert not _served_children(pool)
        await _run_as(pool, make_request, "a")
        assert _served_children(pool) == set(_idle_workers(pool).values())
    finally:
        await pool.close()


async def test_a_spare_that_ended_is_made_afresh_by_the_next_start(
    make_request: MakeRequest,
) -> None:
    async with _pool("isolated", 1) as pool:
        spare = await _spare(pool)
        os.kill(spare, signal.SIGKILL)
        # Reaped by the zygote. (Killed in the instant a start takes it, it fails that run
        # as a worker killed then would.)
        for _ in range(500):
            if _parent(spare) is None:
                break
            await asyncio.sleep(0.01)
        await _run_as(pool, make_request, "a")
        worker = _idle_workers(pool)["a"]
        # Made afresh, networked like any other: and the next spare is made after it.
        assert worker != spare
        assert worker in _pastas().values()
        assert await _spare(pool) not in (spare, worker)


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_the_network_holds_for_an_unprivileged_executor(
    rerun_unprivileged: Callable[..., str],
) -> None:
    """This module again, with the executor (so the zygote, and pasta) under uid 65534."""
    rerun_unprivileged(__file__, "nobody", deselected=1)

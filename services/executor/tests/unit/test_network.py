"""Hostile functions against a worker's network: the host's loopback, the API's port, none."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
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


async def test_no_pasta_outlives_its_worker(make_request: MakeRequest) -> None:
    async with _pool("isolated", 1) as pool:
        runner = SandboxRunner(pool)
        for user in ("a", "b", "c"):
            result = await runner.run(
                make_request(CONNECT, user_id=user, input_data={"ports": [], "host": "127.0.0.1"})
            )
            assert result.error is None, result.traceback
        workers = {worker.pid for entries in pool._idle.values() for _, worker in entries}
        assert workers <= set(_pastas().values()), "each live worker has its pasta"
    # Gone with their workers, at once: no pasta quits by itself for a namespace given by pid.
    assert not workers & set(_pastas().values())


def test_the_network_holds_for_an_unprivileged_executor() -> None:
    """This module again, with the executor (so the zygote, and pasta) under uid 65534."""
    completed = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("unprivileged.py")),
            "nobody",
            "-m",
            "pytest",
            str(Path(__file__)),
            "-k",
            "not unprivileged_executor",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "running as uid 65534" in completed.stdout or os.geteuid() != 0

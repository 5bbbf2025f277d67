"""`python -m sinas_gateway` starts, logs its URL, serves, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import httpx

from .fake_scheduler import FakeScheduler


async def _listening_url(stream: asyncio.StreamReader) -> str:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError("the gateway exited before logging its URL")
        entry = json.loads(line)
        if entry["message"] == "gateway listening":
            assert entry["service"] == "gateway"
            return str(entry["url"])


async def test_module_entry_point(
    fake_scheduler: FakeScheduler, internal_pki: dict[str, dict[str, str]]
) -> None:
    env = {
        **os.environ,
        **internal_pki["gateway"],
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": "0",
        "SCHEDULER_ADDR": fake_scheduler.address,
        "LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sinas_gateway",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(60):
            url = await _listening_url(process.stderr)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            health = await http.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await process.stderr.read()
            returncode = await process.wait()
        assert returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_listening_socket_disables_nagle_for_keep_alive_responses() -> None:
    from sinas_gateway.app import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()

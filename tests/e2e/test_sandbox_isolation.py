"""A function run by an ordinary user sees only its own processes, and none of the service logs
or the database's socket."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sinas_devstack.stack import Stack

from .conftest import admin_client_for
from .helpers import run_once_as_new_user

PROBE = """
import os

def handler(input_data, context):
    seen = {}
    for path in input_data["paths"]:
        try:
            if os.path.isdir(path):
                seen[path] = sorted(os.listdir(path))
            else:
                with open(path, "rb") as f:
                    seen[path] = f.read(64).decode(errors="replace")
        except OSError as exc:
            seen[path] = type(exc).__name__
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    return {"seen": seen, "pids": pids}
"""


def socket_dir(database_url: str) -> str | None:
    hosts = parse_qs(urlsplit(database_url).query).get("host", [])
    return next((host for host in hosts if host.startswith("/")), None)


async def _probe_as_user(stack: Stack, paths: list[str]) -> dict[str, Any]:
    async with admin_client_for(stack) as admin:
        document = await run_once_as_new_user(
            admin, stack.gateway_url, PROBE, input={"paths": paths}
        )
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    output: dict[str, Any] = document["output_data"]
    return output


def all_there(paths: list[str]) -> bool:
    return all(os.path.exists(path) for path in paths)


def _not_empty(path: Path) -> bool:
    return path.stat().st_size > 0


async def test_a_function_sees_no_logs_no_database_socket_and_no_other_process(
    stack: Stack,
) -> None:
    logs = stack.config.log_dir
    executor_log = stack.services["executor"].log_path
    targets = [str(logs), str(executor_log)]
    database_socket = socket_dir(stack.config.database_url)
    if database_socket is not None:
        targets.append(database_socket)
    # The control: all of them are there for the test, which runs as the services' user.
    assert all_there(targets) and _not_empty(executor_log)

    seen = await _probe_as_user(stack, targets)

    assert seen["seen"] == {path: "FileNotFoundError" for path in targets}, seen["seen"]
    # Its namespace's init and itself: none of the services' processes.
    assert seen["pids"] == [1, 2]

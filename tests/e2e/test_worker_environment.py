"""A function's environment is scrubbed: nothing of the executor's, no variable that looks like
a URL, key, secret, token or password, and its scratch folder as HOME, TMPDIR and cwd."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

import pytest

from sinas_devstack.stack import Stack

from .conftest import StackFactory, admin_client_for
from .helpers import run_once_as_new_user

pytestmark = pytest.mark.slow

# A name or a value a function must never find in its environment.
SECRET_LOOKING = re.compile(r"://|key|secret|token|passw|credential|auth|dsn", re.IGNORECASE)
WORKER_VARIABLES = {"PATH", "HOME", "TMPDIR", "LANG"}

# Its own environment as Python sees it and as the kernel keeps it, and the environ of every
# process it can see (or why it could not read it).
PROBE = """
import os, tempfile

def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__

def handler(input_data, context):
    procs = {pid: _read(f"/proc/{pid}/environ") for pid in os.listdir("/proc") if pid.isdigit()}
    return {
        "env": dict(os.environ),
        "self": _read("/proc/self/environ"),
        "procs": procs,
        "cwd": os.getcwd(),
        "tempdir": tempfile.gettempdir(),
        "writable": os.access(os.getcwd(), os.W_OK),
    }
"""


@pytest.fixture
def canary() -> str:
    return f"canary-{secrets.token_hex(12)}"


@pytest.fixture
def secret_stack(stack_factory: StackFactory, canary: str) -> Stack:
    """A stack whose every service, the executor included, starts with fake secrets in its
    environment: set before the processes start, so they are in /proc/<pid>/environ too."""
    stack = stack_factory(
        SINAS_TEST_API_TOKEN=canary,
        SINAS_TEST_SERVICE_URL=f"https://robot:{canary}@example.invalid/",
    )
    stack.start_all()
    return stack


async def _probe_as_user(stack: Stack) -> dict[str, Any]:
    async with admin_client_for(stack) as admin:
        document = await run_once_as_new_user(admin, stack.gateway_url, PROBE)
    assert document["status"] == "COMPLETED", (document["error"], document["traceback"])
    output: dict[str, Any] = document["output_data"]
    return output


def _stack_secrets(stack: Stack, canary: str) -> dict[str, str]:
    config = stack.config
    password = urlsplit(config.database_url.split("?", 1)[0]).password
    assert password
    found = {
        "canary": canary,
        "admin key": config.admin_key,
        "encryption key": config.encryption_key,
        "database password": password,
    }
    for role, env in config.role_env.items():
        if env.get("NATS_PASSWORD"):
            found[f"{role}'s NATS password"] = env["NATS_PASSWORD"]
    return found


async def test_environment_is_scrubbed(secret_stack: Stack, canary: str) -> None:
    executor = secret_stack.services["executor"]
    # The control: the executor does hold the canary, in the kernel's copy of its environment.
    assert executor.process is not None
    with open(f"/proc/{executor.process.pid}/environ", "rb") as environ:  # noqa: ASYNC230
        assert canary.encode() in environ.read()

    seen = await _probe_as_user(secret_stack)

    env = seen["env"]
    assert set(env) == WORKER_VARIABLES, env
    for name, value in env.items():
        assert not SECRET_LOOKING.search(name) and not SECRET_LOOKING.search(value), (name, value)
    scratch = env["HOME"]
    assert env["TMPDIR"] == seen["cwd"] == seen["tempdir"] == scratch
    assert seen["writable"]
    blob = json.dumps(seen)
    for what, value in _stack_secrets(secret_stack, canary).items():
        assert value not in blob, f"the function read the {what}"
    readable = [pid for pid, text in seen["procs"].items() if not _is_error(text)]
    print(f"/proc environs the function could read: {len(readable)} of {len(seen['procs'])}")


def _is_error(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z]+Error", text) is not None

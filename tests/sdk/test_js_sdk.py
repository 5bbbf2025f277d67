"""The JavaScript SDK's node:test suites and the js_ingest example, against a real stack."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sinas_devstack.callback_receiver import ReceiverCertificates
from sinas_devstack.embedded import free_port
from sinas_devstack.llm_stub import LlmStub
from sinas_devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "sdks" / "js"
EXAMPLE_DIR = ROOT / "examples" / "js_ingest"
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
# npm ci, tsc and the suites themselves, on a noisy machine.
NODE_TIMEOUT = 480


@dataclass(frozen=True, slots=True, kw_only=True)
class JsStack:
    """A running system that signs callbacks and accepts HTTPS ones on two known ports."""

    stack: Stack
    certificates: ReceiverCertificates
    llm_url: str
    sdk_callback_port: int
    example_callback_port: int


@pytest.fixture(scope="module")
def js_stack(stack_factory: Callable[..., Stack], scratch_root: Path) -> Iterator[JsStack]:
    certificates = ReceiverCertificates.create(scratch_root / f"js-certs-{uuid.uuid4().hex[:8]}")
    sdk_port, example_port = free_port(), free_port()
    with LlmStub() as llm:
        stack = stack_factory(
            CALLBACK_URL_HOSTS="localhost",
            CALLBACK_URL_PORTS=f"{sdk_port},{example_port}",
            CALLBACK_ALLOW_PRIVATE_NETWORKS="1",
            CALLBACK_CA_FILE=str(certificates.ca_file),
            CALLBACK_SIGNING_SECRET=SECRET,
        )
        stack.start_all()
        yield JsStack(
            stack=stack,
            certificates=certificates,
            llm_url=llm.base_url,
            sdk_callback_port=sdk_port,
            example_callback_port=example_port,
        )


def _node_env(**extra: str) -> dict[str, str]:
    """The environment for node and npm; fails (never skips) without them."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the JavaScript SDK needs Node 18+", False)
    return {**os.environ, "NO_UPDATE_NOTIFIER": "1", "npm_config_fund": "false", **extra}


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Runs a node tool; a failure fails the test with everything it printed."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=NODE_TIMEOUT
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} in {cwd.name} exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}",
            False,
        )
    return done.stdout


def _build_sdk(env: dict[str, str]) -> None:
    if not (SDK_DIR / "node_modules").is_dir():
        _run(["npm", "ci", "--no-audit"], SDK_DIR, env)
    _run(["npm", "run", "build"], SDK_DIR, env)


@pytest.mark.timeout(NODE_TIMEOUT + 60)
def test_the_js_sdk_suites_pass_against_the_running_system(js_stack: JsStack) -> None:
    env = _node_env(
        SINAS_BASE_URL=js_stack.stack.gateway_url,
        SINAS_API_KEY=js_stack.stack.config.admin_key,
        SINAS_WEBHOOK_SECRET=SECRET,
        SINAS_TEST_CALLBACK_PORT=str(js_stack.sdk_callback_port),
        SINAS_TEST_TLS_CERT=str(js_stack.certificates.cert_file),
        SINAS_TEST_TLS_KEY=str(js_stack.certificates.key_file),
        SINAS_TEST_LLM_URL=js_stack.llm_url,
    )
    _build_sdk(env)
    output = _run(["npm", "test"], SDK_DIR, env)
    counts = dict(
        line.removeprefix("# ").split(" ", 1)
        for line in output.splitlines()
        if line.startswith(("# tests ", "# pass ", "# fail ", "# skipped ", "# todo "))
    )
    assert (counts["fail"], counts["skipped"], counts["todo"]) == ("0", "0", "0"), output
    # Every suite ran: the webhook, transport, system, callback and agent files.
    assert counts["pass"] == counts["tests"], output
    assert int(counts["pass"]) >= 26, output


def _create_ingest_user(stack: Stack) -> tuple[str, str]:
    """Registers the example's function and a user allowed to run it: (ref, the user's key)."""
    namespace = f"docs_{uuid.uuid4().hex[:8]}"
    with httpx.Client(
        base_url=stack.gateway_url,
        headers={"X-API-Key": stack.config.admin_key},
        timeout=60.0,
    ) as admin:

        def post(path: str, body: dict[str, object]) -> dict[str, object]:
            reply = admin.post(path, json=body)
            assert reply.status_code == 201, reply.text
            document: dict[str, object] = reply.json()
            return document

        post(
            "/api/v1/functions",
            {
                "namespace": namespace,
                "name": "ingest",
                "code": (EXAMPLE_DIR / "ingest_function.py").read_text(),
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "title": {"type": "string"},
                        "text": {"type": "string"},
                    },
                    "required": ["id", "title", "text"],
                },
                "output_schema": {"type": "object"},
            },
        )
        role = f"ingesters_{uuid.uuid4().hex[:8]}"
        permissions = [
            f"sinas.functions/{namespace}/ingest.execute:own",
            "sinas.executions.read:own",
        ]
        post("/api/v1/roles", {"name": role, "permissions": permissions})
        user = post("/api/v1/users", {"email": f"{role}@example.com", "roles": [role]})
        key = post("/api/v1/api-keys", {"name": "ingest app", "user_id": user["id"]})
    return f"{namespace}/ingest", str(key["key"])


def _wait_for_line(process: subprocess.Popen[str], prefix: str) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        assert line, f"the example ended before printing {prefix!r}: {lines}"
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines


@pytest.mark.timeout(NODE_TIMEOUT + 60)
def test_the_js_ingest_example_ingests_50_documents_with_verified_callbacks(
    js_stack: JsStack,
) -> None:
    ref, user_key = _create_ingest_user(js_stack.stack)
    port = js_stack.example_callback_port
    env = _node_env(
        SINAS_BASE_URL=js_stack.stack.gateway_url,
        SINAS_API_KEY=user_key,
        SINAS_WEBHOOK_SECRET=SECRET,
        INGEST_FUNCTION=ref,
        CALLBACK_PORT=str(port),
        TLS_CERT_FILE=str(js_stack.certificates.cert_file),
        TLS_KEY_FILE=str(js_stack.certificates.key_file),
        INGEST_TIMEOUT_SECONDS="240",
    )
    _build_sdk(env)
    if not (EXAMPLE_DIR / "node_modules").is_dir():
        _run(["npm", "ci", "--no-audit"], EXAMPLE_DIR, env)

    process = subprocess.Popen(
        ["node", "ingest.mjs"],
        cwd=EXAMPLE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        head = _wait_for_line(process, "listening on ")
        # A forged callback (no valid signature) must be refused by the example's receiver.
        forged = httpx.post(
            f"https://localhost:{port}/callbacks/document",
            content=b'{"execution_id": "forged", "status": "success"}',
            headers={
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode(),
            },
            verify=ssl.create_default_context(cafile=js_stack.certificates.ca_file),
            timeout=30.0,
        )
        assert forged.status_code == 401
        stdout, stderr = process.communicate(timeout=NODE_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    lines = head + stdout.splitlines()
    assert process.returncode == 0, "\n".join([*lines, "--- stderr ---", stderr])

    assert "progress 50/50 documents (50 indexed, 0 failed)" in lines, lines
    (done,) = [line for line in lines if line.startswith("done ")]
    result = json.loads(done.removeprefix("done "))
    assert result["total"] == 50
    assert (result["completed"], result["failed"], result["status"]) == (50, 0, "completed")
    assert result["verified_document_callbacks"] == 50
    assert result["batch_callback_status"] == "completed"
    assert result["rejected_callbacks"] == 1
    assert result["failed_documents"] == []
    assert result["user"].startswith("ingesters_")

    with httpx.Client(
        base_url=js_stack.stack.gateway_url,
        headers={"Authorization": f"Bearer {user_key}"},
        timeout=60.0,
    ) as user:
        batch = user.get(f"/batches/{result['batch_id']}").json()
    assert (batch["status"], batch["batch_callback_status"]) == ("completed", "sent")

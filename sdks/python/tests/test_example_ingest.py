"""examples/python_ingest runs against a real system: 50 documents, every callback verified."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import uuid
from pathlib import Path

from sinas_devstack.callback_receiver import ReceiverCertificates
from sinas_devstack.embedded import free_port
from sinas_devstack.pytest_plugin import StackFactory

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "python_ingest" / "ingest.py"


async def test_the_example_ingests_50_documents_and_verifies_every_callback(
    stack_factory: StackFactory, scratch_root: Path
) -> None:
    certificates = ReceiverCertificates.create(scratch_root / f"ingest-{uuid.uuid4().hex[:8]}")
    port = free_port()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    stack = stack_factory(
        CALLBACK_URL_HOSTS="localhost",
        CALLBACK_URL_PORTS=str(port),
        CALLBACK_ALLOW_PRIVATE_NETWORKS="1",
        CALLBACK_CA_FILE=str(certificates.ca_file),
        CALLBACK_SIGNING_SECRET=secret,
    )
    stack.start_all()
    env = os.environ | {
        "SINAS_BASE_URL": stack.gateway_url,
        "SINAS_ADMIN_KEY": stack.config.admin_key,
        "SINAS_WEBHOOK_SECRET": secret,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--port",
        str(port),
        "--cert-file",
        str(certificates.cert_file),
        "--key-file",
        str(certificates.key_file),
        "--timeout",
        "100",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=115)
    text = output.decode()
    assert process.returncode == 0, text
    assert "submitted batch" in text, text
    assert "progress 50/50 documents (0 failed)" in text, text
    assert "done: 50 documents ingested, 0 failed, 51 verified callbacks, batch completed" in text

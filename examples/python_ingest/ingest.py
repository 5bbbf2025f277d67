"""Ingest documents for a user through one Sinas batch, verifying every signed callback.

The app submits one batch of documents with a per-document callback and a batch summary
callback, serves both over HTTPS, checks each callback's signature with the SDK, and reports
progress until the summary arrives. With SINAS_ADMIN_KEY set it first creates what it needs:
the `docs/ingest` function, a role allowed to run it, a user holding that role and an API key
for the user; the batch is then submitted as that user.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from sinas import AsyncSinasClient
from sinas.integrations.fastapi import WebhookVerifier

log = logging.getLogger("python_ingest")

NAMESPACE, FUNCTION = "docs", "ingest"
INGEST_CODE = """
def handler(input_data, context):
    words = input_data["text"].split()
    return {"document_id": input_data["document_id"], "words": len(words)}
"""
INPUT_SCHEMA = {
    "type": "object",
    "properties": {"document_id": {"type": "string"}, "text": {"type": "string"}},
    "required": ["document_id", "text"],
}


@dataclass
class Progress:
    """What the callbacks have told us so far; webhook-ids make redeliveries count once."""

    total: int
    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    summary: dict[str, Any] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def record_child(self, payload: dict[str, Any]) -> None:
        execution_id = str(payload["execution_id"])
        target = self.succeeded if payload["status"] == "success" else self.failed
        target.add(execution_id)
        done = len(self.succeeded) + len(self.failed)
        log.info("progress %d/%d documents (%d failed)", done, self.total, len(self.failed))

    def record_summary(self, payload: dict[str, Any]) -> None:
        self.summary = payload
        log.info("batch %s finished: %s", payload["batch_id"], payload["status"])
        self.finished.set()


async def verified_callback(request: Request) -> Any:
    """The callback's payload once the SDK has verified its signature (else a 401)."""
    verifier: WebhookVerifier = request.app.state.verifier
    return await verifier(request)


# Module level, so FastAPI can resolve it from this module's globals.
Callback = Annotated[dict[str, Any], Depends(verified_callback)]


def build_app(progress: Progress, secret: str) -> FastAPI:
    """The HTTPS callback receiver: a request that fails verification is answered 401."""
    app = FastAPI()
    app.state.verifier = WebhookVerifier(secret)

    @app.post("/callbacks/document")
    async def document_done(payload: Callback) -> None:
        progress.record_child(payload)

    @app.post("/callbacks/batch")
    async def batch_done(payload: Callback) -> None:
        progress.record_summary(payload)

    return app


async def provision_user(base_url: str, admin_key: str) -> str:
    """Creates the function, a role, a user and their API key; returns the key."""
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": admin_key}, timeout=30.0
    ) as admin:
        reply = await admin.get(f"/api/v1/functions/{NAMESPACE}/{FUNCTION}")
        if reply.status_code == 404:
            reply = await admin.post(
                "/api/v1/functions",
                json={
                    "namespace": NAMESPACE,
                    "name": FUNCTION,
                    "code": INGEST_CODE,
                    "input_schema": INPUT_SCHEMA,
                    "output_schema": {"type": "object"},
                },
            )
        reply.raise_for_status()
        role = f"ingesters-{tag}"
        permissions = [
            f"sinas.functions/{NAMESPACE}/{FUNCTION}.execute:own",
            "sinas.executions.read:own",
        ]
        reply = await admin.post("/api/v1/roles", json={"name": role, "permissions": permissions})
        reply.raise_for_status()
        reply = await admin.post(
            "/api/v1/users", json={"email": f"ingest-{tag}@example.com", "roles": [role]}
        )
        reply.raise_for_status()
        reply = await admin.post(
            "/api/v1/api-keys", json={"name": "ingest example", "user_id": reply.json()["id"]}
        )
        reply.raise_for_status()
        return str(reply.json()["key"])


def documents(count: int) -> list[dict[str, Any]]:
    return [
        {"document_id": f"doc-{i:03d}", "text": " ".join(["word"] * (i + 1))} for i in range(count)
    ]


async def report_while_waiting(client: AsyncSinasClient, batch_id: str, progress: Progress) -> None:
    """Polls the aggregate now and then, so progress shows even if a callback is slow."""
    while not progress.finished.is_set():
        batch = await client.batches.get(batch_id)
        log.info(
            "batch %s: %d completed, %d failed, %d running, %d queued",
            batch_id,
            batch["completed"],
            batch["failed"],
            batch["running"],
            batch["queued"],
        )
        try:
            await asyncio.wait_for(progress.finished.wait(), timeout=2.0)
        except TimeoutError:
            continue


async def report_missing_callbacks(client: AsyncSinasClient, batch_id: str) -> None:
    """Says what the server recorded about callbacks that never arrived."""
    batch = await client.batches.get(batch_id)
    log.error(
        "no batch callback: %s %s",
        batch["batch_callback_status"],
        batch["batch_callback_error"],
    )
    first = await client.executions.get(
        batch["execution_ids"][0]
        if "execution_ids" in batch
        else (await client.batches.list_executions(batch_id, limit=1))[0]["execution_id"]
    )
    log.error("first document's callback: %s %s", first["callback_status"], first["callback_error"])


async def run(args: argparse.Namespace) -> int:
    base_url = os.environ["SINAS_BASE_URL"]
    secret = os.environ["SINAS_WEBHOOK_SECRET"]
    admin_key = os.environ.get("SINAS_ADMIN_KEY")
    user_key = await provision_user(base_url, admin_key) if admin_key else None

    progress = Progress(total=args.documents)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(progress, secret),
            host=args.listen,
            port=args.port,
            ssl_certfile=args.cert_file,
            ssl_keyfile=args.key_file,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            return 1
        await asyncio.sleep(0.05)
    public = f"https://{args.host}:{args.port}"
    try:
        async with AsyncSinasClient(base_url=base_url, api_key=user_key) as client:
            me = await client.auth.get_me()
            submitted = await client.functions.submit_batch(
                NAMESPACE,
                FUNCTION,
                documents(args.documents),
                trigger_id_prefix="ingest",
                callback_url=f"{public}/callbacks/document",
                batch_callback_url=f"{public}/callbacks/batch",
                idempotency_key=f"ingest-{uuid.uuid4()}",
            )
            batch_id = submitted["batch_id"]
            log.info(
                "submitted batch %s of %d documents for %s",
                batch_id,
                submitted["total"],
                me["email"],
            )
            try:
                await asyncio.wait_for(
                    report_while_waiting(client, batch_id, progress), timeout=args.timeout
                )
            except TimeoutError:
                await report_missing_callbacks(client, batch_id)
                return 1
            # The summary can overtake the last per-document callbacks: give them a moment.
            for _ in range(100):
                if len(progress.succeeded) + len(progress.failed) >= progress.total:
                    break
                await asyncio.sleep(0.1)
    finally:
        server.should_exit = True
        await serving
    summary = progress.summary or {}
    log.info(
        "done: %d documents ingested, %d failed, %d verified callbacks, batch %s",
        len(progress.succeeded),
        len(progress.failed),
        len(progress.succeeded) + len(progress.failed) + 1,
        summary.get("status"),
    )
    complete = summary.get("status") == "completed" and len(progress.succeeded) == args.documents
    return 0 if complete else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument("--host", default="localhost", help="the name callbacks are sent to")
    parser.add_argument("--listen", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--cert-file", required=True, help="PEM certificate chain for --host")
    parser.add_argument("--key-file", required=True, help="PEM private key")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    # One line per HTTP request would drown the progress report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())

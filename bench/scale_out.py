"""`make bench BENCH_ARGS=--scale-out`: batch drain rate with 1 and 2 executors on R3 streams.

A 3-node NATS cluster and one embedded PostgreSQL; per round a fresh database, one scheduler,
one gateway and N executors; one 1,000-child batch of a no-op function. Executions/s come from
the database's own timestamps: children / (last completed_at - first started_at).
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from sinas_devstack.embedded import EmbeddedNatsCluster, EmbeddedPostgres
from sinas_devstack.nats_auth import provision_nats_users
from sinas_devstack.pki import provision_pki
from sinas_devstack.stack import Stack, StackConfig, merge_role_env
from sinas_devstack.supervisor import ensure_database

NOOP = "def handler(input_data, context):\n    return {}\n"


async def drain_batch(stack: Stack, children: int) -> float:
    headers = {"X-API-Key": stack.config.admin_key}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60) as client:
        body = {
            "namespace": "bench",
            "name": "noop",
            "code": NOOP,
            "input_schema": {"type": "object"},
            "output_schema": {"type": "object"},
        }
        (await client.post("/api/v1/functions", json=body)).raise_for_status()
        reply = await client.post(
            "/functions/bench/noop/execute/batch", json={"inputs": [{}] * children}
        )
        reply.raise_for_status()
        batch_id = reply.json()["batch_id"]
    libpq = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with psycopg.connect(libpq) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'),"
                " extract(epoch FROM max(completed_at) - min(started_at))"
                " FROM executions WHERE batch_id = %s",
                (batch_id,),
            ).fetchone()
        assert row is not None
        if row[0] == children:
            return children / float(row[1])
        await asyncio.sleep(0.5)
    raise TimeoutError("the batch did not drain within 600 s")


def main(children: int = 1000) -> None:
    root = Path(tempfile.mkdtemp(prefix="sinas-bench-scale-"))
    root.chmod(0o755)
    postgres = EmbeddedPostgres(root / "postgres", ephemeral=True)
    prefixes = [f"SCALE{executors}" for executors in (1, 2)]
    cluster = EmbeddedNatsCluster(
        root / "nats", provision_nats_users(root / "nats-auth", prefixes=prefixes)
    )
    admin_url = postgres.start()
    nats_url = cluster.start()
    pki = provision_pki(root / "pki")
    rates: dict[int, float] = {}
    try:
        for executors in (1, 2):
            stack = Stack(
                StackConfig(
                    database_url=ensure_database(admin_url, f"bench_scale_{executors}"),
                    nats_url=nats_url,
                    log_dir=root / f"logs-{executors}",
                    admin_key="sk-" + secrets.token_urlsafe(32),
                    nats_stream_prefix=f"SCALE{executors}",
                    extra_env={"NATS_STREAM_REPLICAS": "3"},
                    role_env=merge_role_env(pki, cluster.accounts.role_env()),
                )
            )
            try:
                scheduler = stack.scheduler()
                scheduler.start()
                stack.wait_ready(scheduler, timeout=120)
                services = [stack.gateway()]
                services += [stack.executor(name=f"executor-{i}") for i in range(executors)]
                for service in services:
                    service.start()
                for service in services:
                    stack.wait_ready(service, timeout=120)
                rates[executors] = asyncio.run(drain_batch(stack, children))
            finally:
                stack.stop_all()
    finally:
        cluster.stop()
        postgres.stop()
    print(f"scale-out ({children}-child batch, 3-node NATS, R3 streams)")
    for executors, rate in rates.items():
        print(f"  {executors} executor(s): {rate:>8.1f} executions/s")
    print(f"  speed-up: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()

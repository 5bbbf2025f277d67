"""REST load on the gateway with aiohttp: at 32 requests in flight httpx, not the gateway, would
set the figure on a small machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

NOOP = "def handler(input_data, context):\n    return {}\n"
NAMESPACE = "bench"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; `fraction` in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True, slots=True)
class Timed:
    """One accepted request: the execution (or batch) id and the client-side latency."""

    id: str
    seconds: float


class Gateway:
    """An aiohttp session on the gateway with the admin key."""

    def __init__(self, base_url: str, admin_key: str) -> None:
        self._base = base_url
        self._session = aiohttp.ClientSession(
            headers={"X-API-Key": admin_key},
            # Below uvicorn's 5 s keep-alive: a connection idle that long is not reused, or
            # the server's close would race the next request on it.
            connector=aiohttp.TCPConnector(limit=128, limit_per_host=128, keepalive_timeout=2),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._session.post(self._base + path, json=body) as reply:
            if reply.status >= 300:
                raise RuntimeError(f"POST {path}: {reply.status} {await reply.text()}")
            answer: dict[str, Any] = await reply.json()
            return answer

    async def _get(self, path: str) -> dict[str, Any]:
        async with self._session.get(self._base + path) as reply:
            if reply.status >= 300:
                raise RuntimeError(f"GET {path}: {reply.status} {await reply.text()}")
            answer: dict[str, Any] = await reply.json()
            return answer

    async def create_noop(self, name: str) -> None:
        body = {
            "namespace": NAMESPACE,
            "name": name,
            "code": NOOP,
            "input_schema": {"type": "object"},
            "output_schema": {"type": "object"},
        }
        await self._post("/api/v1/functions", body)

    async def enqueue(self, name: str, **options: Any) -> Timed:
        started = time.perf_counter()
        reply = await self._post(
            f"/functions/{NAMESPACE}/{name}/execute/async", {"input": {}, **options}
        )
        return Timed(str(reply["execution_id"]), time.perf_counter() - started)

    async def batch(self, name: str, size: int, **options: Any) -> Timed:
        body = {"inputs": [{"i": i} for i in range(size)], **options}
        started = time.perf_counter()
        reply = await self._post(f"/functions/{NAMESPACE}/{name}/execute/batch", body)
        return Timed(str(reply["batch_id"]), time.perf_counter() - started)

    async def read_batch(self, batch_id: str) -> float:
        started = time.perf_counter()
        document = await self._get(f"/batches/{batch_id}")
        elapsed = time.perf_counter() - started
        if document["batch_id"] != batch_id:
            raise RuntimeError(f"GET /batches/{batch_id} answered another batch")
        return elapsed

    async def enqueue_closed_loop(
        self, name: str, count: int, concurrency: int, **options: Any
    ) -> tuple[list[Timed], float]:
        """`count` enqueues from `concurrency` clients, each sending its next request when its
        previous one is answered; returns the requests and the wall time they took."""
        results: list[Timed] = []
        tickets: Iterator[int] = iter(range(count))

        async def client() -> None:
            for _ in tickets:
                results.append(await self.enqueue(name, **options))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return results, time.perf_counter() - started

    async def enqueue_spread(
        self, name: str, count: int, window: float, **options: Any
    ) -> list[str]:
        """`count` enqueues on a fixed schedule spread evenly over `window` seconds (a slow
        answer never delays the next request); returns the execution ids."""

        async def one(index: int, start: float) -> str:
            await asyncio.sleep(max(0.0, start + index * window / count - time.perf_counter()))
            return (await self.enqueue(name, **options)).id

        start = time.perf_counter()
        return list(await asyncio.gather(*(one(i, start) for i in range(count))))

"""The HTTPS sender of callbacks: httpx clients kept per validated address and name.

A connection is reused only for the same resolved address, port, TLS name and Host, so one
host's request never travels over another host's TLS session; reuse spares a TLS handshake
per callback, which cost more than everything else a delivery does.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import httpx

from sinas_notifier.delivery import PinnedRequest

# Idle connections are dropped after this: below the keep-alive timeouts servers commonly use
# (5 s for uvicorn and Node), so a request rarely meets a connection the server just closed.
KEEPALIVE_SECONDS = 2.0
# Per destination; past it, requests wait for a free connection within their own deadline.
MAX_CONNECTIONS_PER_DESTINATION = 64
# Destinations idle this long give their client up when the table is full.
IDLE_CLIENT_SECONDS = 30.0
MAX_CLIENTS = 256
# A receiver's answer body is read (and thrown away) up to this size to keep the connection.
MAX_DRAINED_BODY_BYTES = 64 * 1024


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trusted CAs, plus one more for local development and tests."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


async def _drain_small_body(response: httpx.Response) -> None:
    """Reads a short answer to its end, so its connection can serve the next callback; a long
    one is cut off (closing the response then drops the connection, never reads it all)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > MAX_DRAINED_BODY_BYTES:
            return


@dataclass(slots=True)
class _Destination:
    client: httpx.AsyncClient
    in_flight: int = 0
    last_used: float = 0.0


class HttpxSender:
    """CallbackSender over httpx, with keep-alive connections per destination."""

    def __init__(self, context: ssl.SSLContext, *, timeout_seconds: float) -> None:
        self._context = context
        self._timeout = timeout_seconds
        self._destinations: dict[tuple[str, str, str], _Destination] = {}

    async def send(self, request: PinnedRequest) -> int:
        extensions = {} if request.sni_hostname is None else {"sni_hostname": request.sni_hostname}
        destination = await self._destination(request)
        destination.in_flight += 1
        try:
            built = destination.client.build_request(
                "POST",
                request.url,
                headers=request.headers,
                content=request.body,
                extensions=extensions,
            )
            # The whole attempt, connect to status line, shares one deadline.
            async with asyncio.timeout(self._timeout):
                response = await destination.client.send(built, stream=True)
                try:
                    await _drain_small_body(response)
                finally:
                    await response.aclose()
            return response.status_code
        finally:
            destination.in_flight -= 1
            destination.last_used = time.monotonic()

    async def close(self) -> None:
        destinations = list(self._destinations.values())
        self._destinations.clear()
        for destination in destinations:
            await destination.client.aclose()

    async def _destination(self, request: PinnedRequest) -> _Destination:
        origin = httpx.URL(request.url)
        key = (
            f"{origin.host}:{origin.port}",
            request.sni_hostname or "",
            request.headers.get("host", ""),
        )
        found = self._destinations.get(key)
        if found is None:
            await self._forget_idle()
            found = self._destinations[key] = _Destination(client=self._client())
        return found

    def _client(self) -> httpx.AsyncClient:
        # trust_env=False: a proxy from the environment would connect to a name, not the
        # validated address.
        return httpx.AsyncClient(
            verify=self._context,
            follow_redirects=False,
            # The connect phase (TCP and TLS handshake) ends a little before the overall
            # deadline so httpx closes a stalled handshake itself: cancelling one from outside
            # leaves its socket open.
            timeout=httpx.Timeout(self._timeout, connect=self._timeout * 0.9),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS_PER_DESTINATION,
                max_keepalive_connections=MAX_CONNECTIONS_PER_DESTINATION,
                keepalive_expiry=KEEPALIVE_SECONDS,
            ),
            trust_env=False,
        )

    async def _forget_idle(self) -> None:
        if len(self._destinations) < MAX_CLIENTS:
            return
        cutoff = time.monotonic() - IDLE_CLIENT_SECONDS
        idle = [
            key
            for key, destination in self._destinations.items()
            if destination.in_flight == 0 and destination.last_used < cutoff
        ]
        for key in idle:
            # Its connections expired long ago: closing waits on nothing remote.
            await self._destinations.pop(key).client.aclose()

"""The HTTPS sender of callbacks: aiohttp sessions kept per validated address and name.

A connection is reused only for the same resolved address, port, TLS name and Host, so one
host's request never travels over another host's TLS session; reuse spares a TLS handshake
per callback, which cost more than everything else a delivery does.

aiohttp rather than httpx: on a small machine httpx's connection pool spent more CPU per
callback than everything else the notifier does (about 3 ms), capping one notifier near 300
callbacks/s; aiohttp sends the same request for a fraction of that.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from sinas_notifier.delivery import PinnedRequest

# Idle connections are dropped after this: below the keep-alive timeouts servers commonly use
# (5 s for uvicorn and Node), so a request rarely meets a connection the server just closed.
KEEPALIVE_SECONDS = 2.0
# Per destination; past it, requests wait for a free connection within their own deadline.
MAX_CONNECTIONS_PER_DESTINATION = 64
# Destinations idle this long give their session up when the table is full.
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


async def _drain_small_body(response: aiohttp.ClientResponse) -> None:
    """Reads a short answer to its end, so its connection can serve the next callback; a long
    one is cut off (releasing an unfinished response drops its connection, never reads it)."""
    read = 0
    while chunk := await response.content.readany():
        read += len(chunk)
        if read > MAX_DRAINED_BODY_BYTES:
            return


@dataclass(slots=True)
class _Destination:
    session: aiohttp.ClientSession
    in_flight: int = 0
    last_used: float = 0.0


class HttpsSender:
    """CallbackSender over aiohttp, with keep-alive connections per destination."""

    def __init__(self, context: ssl.SSLContext, *, timeout_seconds: float) -> None:
        self._context = context
        self._timeout = timeout_seconds
        self._destinations: dict[tuple[str, str, str], _Destination] = {}

    async def send(self, request: PinnedRequest) -> int:
        url = URL(request.url, encoded=True)
        destination = await self._destination(url, request)
        destination.in_flight += 1
        try:
            # The whole attempt, connect to status line, shares one deadline.
            async with (
                asyncio.timeout(self._timeout),
                destination.session.post(
                    url,
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                    server_hostname=request.sni_hostname,
                ) as response,
            ):
                await _drain_small_body(response)
                return response.status
        finally:
            destination.in_flight -= 1
            destination.last_used = time.monotonic()

    async def close(self) -> None:
        destinations = list(self._destinations.values())
        self._destinations.clear()
        for destination in destinations:
            await destination.session.close()

    async def _destination(self, url: URL, request: PinnedRequest) -> _Destination:
        key = (
            f"{url.host}:{url.port}",
            request.sni_hostname or "",
            request.headers.get("host", ""),
        )
        found = self._destinations.get(key)
        if found is None:
            await self._forget_idle()
            found = self._destinations[key] = _Destination(session=self._session())
        return found

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            ssl=self._context,
            limit=MAX_CONNECTIONS_PER_DESTINATION,
            limit_per_host=MAX_CONNECTIONS_PER_DESTINATION,
            keepalive_timeout=KEEPALIVE_SECONDS,
            # The URL names the validated address: nothing is looked up.
            use_dns_cache=False,
        )
        # trust_env=False: a proxy from the environment would connect to a name, not the
        # validated address. No cookie jar: one callback's cookies are no other's business.
        # Bodies are thrown away, so they are never decompressed.
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
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
            await self._destinations.pop(key).session.close()

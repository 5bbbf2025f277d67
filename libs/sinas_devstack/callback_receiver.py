"""Local HTTPS callback receivers for tests and development: a throwaway CA, a certificate for
`localhost`, a server that records every request, and a listener that stalls TLS handshakes.

The receiver picks its answer from the request path: `/status/<code>/...` answers that code
(302 with a Location), `/hang/<seconds>/...` waits that long before answering 200, anything
else answers 200. Each runs its own event loop in a thread, so a test that blocks (starting
processes, sleeping) never stalls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sinas_devstack.pki import key_usage

T = TypeVar("T")

REASONS = {200: "OK", 204: "No Content", 302: "Found", 500: "Internal Server Error"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverCertificates:
    """PEM files: a CA to trust (CALLBACK_CA_FILE) and the server's chain and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, *, hostname: str = "localhost") -> ReceiverCertificates:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sinas test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                key_usage(signs_certificates=True),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        certs = cls(
            ca_file=directory / "ca.pem",
            cert_file=directory / "server.pem",
            key_file=directory / "server-key.pem",
        )
        certs.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        certs.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        certs.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return certs

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRequest:
    method: str
    target: str
    # Lower-case names; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes
    received_at: float
    # Which TLS connection carried it (numbered in accept order): keep-alive shows as reuse.
    connection: int = 0


class _ThreadLoop:
    """An event loop of its own in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self, server: asyncio.Server | None) -> None:
        self.run(self._close(server))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @staticmethod
    async def _close(server: asyncio.Server | None) -> None:
        if server is not None:
            server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class CallbackReceiver:
    """An HTTPS server on 127.0.0.1 that records each request before it answers."""

    def __init__(self, certificates: ReceiverCertificates) -> None:
        self._context = certificates.server_context()
        self._thread = _ThreadLoop("callback-receiver")
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._connections = 0
        self.port = 0

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, prefix: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.target.startswith(prefix)]

    def url(self, path: str, *, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def start(self) -> CallbackReceiver:
        self._thread.start()
        self._server = self._thread.run(self._listen())
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self._context, backlog=1024
        )

    def stop(self) -> None:
        self._thread.stop(self._server)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
            connection = self._connections
        try:
            # HTTP/1.1 keep-alive: requests follow each other until the client closes or asks
            # to with `connection: close`.
            while await self._serve_one(reader, writer, connection):
                pass
        except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # Stopping with a kept-alive connection open: drop it at once rather than wait
            # for the client's TLS goodbye.
            writer.transport.abort()
            raise
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> bool:
        """Answers one request; True when the connection stays open for another."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        with self._lock:
            self._requests.append(
                ReceivedRequest(
                    method=method,
                    target=target,
                    headers=headers,
                    body=body,
                    received_at=time.monotonic(),
                    connection=connection,
                )
            )
        status, extra = await self._answer(target)
        keep_alive = headers.get("connection", "").lower() != "close"
        reply = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        reply += [*extra, "content-length: 0"]
        reply += ["", ""] if keep_alive else ["connection: close", "", ""]
        writer.write("\r\n".join(reply).encode("latin-1"))
        await writer.drain()
        return keep_alive

    async def _answer(self, target: str) -> tuple[int, list[str]]:
        parts = target.split("/")
        if len(parts) > 2 and parts[1] == "hang":
            await asyncio.sleep(float(parts[2]))
        if len(parts) > 2 and parts[1] == "status":
            status = int(parts[2])
            extra = ["location: https://localhost/elsewhere"] if 300 <= status < 400 else []
            return status, extra
        return 200, []


class StallingListener:
    """Accepts TCP connections and never speaks: a TLS handshake to it never completes."""

    def __init__(self) -> None:
        self._thread = _ThreadLoop("stalling-listener")
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()
        self.connections = 0
        self.port = 0

    def start(self) -> StallingListener:
        self._thread.start()
        self._server = self._thread.run(self._listen())
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._hold, "127.0.0.1", 0)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            with contextlib.suppress(OSError):
                await reader.read()
        finally:
            writer.close()

    def stop(self) -> None:
        self._thread.stop(self._server)


@contextlib.contextmanager
def running_receiver(certificates: ReceiverCertificates) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(certificates).start()
    try:
        yield receiver
    finally:
        receiver.stop()

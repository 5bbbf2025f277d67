"""Mutual TLS between our services: role identities, credentials from files, peer roles."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sinas_common.settings import InternalTlsSettings

logger = logging.getLogger(__name__)

ROLES = ("scheduler", "gateway", "executor", "notifier")
TRUST_DOMAIN = "sinas"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
SCHEDULER_SERVER_NAME = "sinas-scheduler"


def role_dns_name(role: str) -> str:
    """The DNS name (and CN) a role's certificate carries: `sinas-<role>`."""
    return f"sinas-{role}"


def role_spiffe_id(role: str) -> str:
    """The URI SAN a role's certificate carries: `spiffe://sinas/<role>`."""
    return f"{SPIFFE_PREFIX}{role}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Where one service's CA bundle, certificate and key are."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_settings(cls, settings: InternalTlsSettings) -> TlsFiles:
        """The three paths; raises ValueError naming the first variable that is unset."""
        paths: dict[str, str | None] = {
            "INTERNAL_TLS_CA_FILE": settings.ca_file,
            "INTERNAL_TLS_CERT_FILE": settings.cert_file,
            "INTERNAL_TLS_KEY_FILE": settings.key_file,
        }
        for variable, value in paths.items():
            if value is None:
                raise ValueError(f"{variable} is required when INTERNAL_TLS=mtls")
        ca, cert, key = (Path(str(value)) for value in paths.values())
        return cls(ca=ca, cert=cert, key=key)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """The CA bundle, certificate chain and key; raises ValueError naming a bad file."""
        contents = []
        for variable, path in (
            ("INTERNAL_TLS_CA_FILE", self.ca),
            ("INTERNAL_TLS_CERT_FILE", self.cert),
            ("INTERNAL_TLS_KEY_FILE", self.key),
        ):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"{variable}={path} cannot be read: {exc.strerror}") from exc
            if b"-----BEGIN " not in data:
                raise ValueError(f"{variable}={path} is not a PEM file")
            contents.append(data)
        ca, cert, key = contents
        return ca, cert, key

    def fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        """Changes whenever a file is replaced or rewritten (a renewal, a Secret update)."""
        stats = (os.stat(path) for path in (self.ca, self.cert, self.key))
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


def warn_if_off(settings: InternalTlsSettings, what: str) -> None:
    """Logs, at every start, that `what` runs without mutual TLS or role checks."""
    if not settings.enabled:
        logger.warning(
            "INTERNAL_TLS=off: internal gRPC without TLS or caller roles; safe only behind a "
            "mesh enforcing mutual TLS and the role policy",
            extra={"action": "internal_tls_off", "component": what},
        )


class _ReloadingServerCertificates:
    """The fetcher grpc calls before each handshake: new files are served from the next
    connection on, so a renewed certificate needs no restart."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._seen = files.fingerprint()

    def initial(self) -> Any:
        ca, cert, key = self._files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> Any:
        try:
            seen = self._files.fingerprint()
            if seen == self._seen:
                return None
            configuration = self.initial()
        except (OSError, ValueError):
            # Mid-rotation (one file swapped, not yet the other): keep serving the last one.
            logger.warning(
                "internal TLS files unreadable; keeping the loaded certificate",
                extra={"action": "tls_reload_failed"},
            )
            return None
        self._seen = seen
        logger.info("internal TLS certificate reloaded", extra={"action": "tls_reload"})
        return configuration


def server_credentials(settings: InternalTlsSettings) -> grpc.ServerCredentials:
    """Credentials that refuse a handshake without a client certificate from our CA, and pick
    up renewed files on disk for new connections. Raises ValueError on a missing file."""
    files = TlsFiles.from_settings(settings)
    certificates = _ReloadingServerCertificates(files)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial(), certificates, require_client_authentication=True
    )


def channel_credentials(settings: InternalTlsSettings) -> grpc.ChannelCredentials:
    """Credentials that present this service's certificate and trust only our CA."""
    ca, cert, key = TlsFiles.from_settings(settings).read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def role_from_auth_context(auth: Mapping[str, Sequence[bytes]]) -> str | None:
    """The role a verified peer certificate names, or None.

    The URI SAN `spiffe://sinas/<role>` decides; a certificate without one falls back to its
    CN `sinas-<role>`. A certificate naming two of our identities names none.
    """
    uris = {*auth.get("peer_spiffe_id", ()), *auth.get("peer_uri", ())}
    ours = {
        uri.decode(errors="replace")
        for uri in uris
        if uri.decode(errors="replace").startswith(SPIFFE_PREFIX)
    }
    if ours:
        if len(ours) != 1:
            return None
        role = ours.pop().removeprefix(SPIFFE_PREFIX)
        return role if role in ROLES else None
    names = auth.get("x509_common_name", ())
    if len(names) != 1:
        return None
    common_name = names[0].decode(errors="replace")
    return next((role for role in ROLES if common_name == role_dns_name(role)), None)


def peer_role(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The role of the caller of this RPC, from its verified TLS certificate."""
    auth = context.auth_context()
    # Only a TLS peer has a verified certificate; anything else has no role.
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    return role_from_auth_context(auth)

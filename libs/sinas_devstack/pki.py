"""A private CA and one mutual-TLS certificate per service role, made once and then reused."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sinas_common.tls import ROLES, SCHEDULER_SERVER_NAME, role_dns_name, role_spiffe_id

logger = logging.getLogger(__name__)

CA_NAME = "sinas-internal-ca"
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
# A certificate that expires sooner than this is made again at the next start.
RENEW_BEFORE = datetime.timedelta(days=30)
# Tolerates a little clock skew between the machine that signs and the ones that verify.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Authority:
    """The CA's key and certificate, loaded or just made."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def provision_pki(directory: Path) -> dict[str, dict[str, str]]:
    """Creates (first time) or reuses the CA and one key and certificate per role.

    A leaf that is missing, unreadable, not signed by the CA or expiring within RENEW_BEFORE
    is made again; a new CA makes every leaf again. Keys are 0600 in a 0700 folder.

    Returns:
        Role -> the environment that points that role's processes at its files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    authority, renewed = _load_or_create_authority(directory)
    environments: dict[str, dict[str, str]] = {}
    for role in ROLES:
        key_path, cert_path = directory / f"{role}.key", directory / f"{role}.crt"
        if renewed or not _leaf_is_current(cert_path, key_path, authority):
            _write_leaf(role, key_path, cert_path, authority)
            logger.info("issued a service certificate", extra={"action": "pki_issue", "role": role})
        environments[role] = {
            "INTERNAL_TLS": "mtls",
            "INTERNAL_TLS_CA_FILE": str(directory / "ca.crt"),
            "INTERNAL_TLS_CERT_FILE": str(cert_path),
            "INTERNAL_TLS_KEY_FILE": str(key_path),
            "SCHEDULER_TLS_SERVER_NAME": SCHEDULER_SERVER_NAME,
        }
    return environments


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load_or_create_authority(directory: Path) -> tuple[Authority, bool]:
    """The CA under `directory`, and whether it was just made."""
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        pass
    else:
        if (
            isinstance(key, ec.EllipticCurvePrivateKey)
            and certificate.public_key() == key.public_key()
            and certificate.not_valid_after_utc - _now() > RENEW_BEFORE
        ):
            return Authority(key=key, certificate=certificate), False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    logger.info("created the internal CA", extra={"action": "pki_ca"})
    return Authority(key=key, certificate=certificate), True


def key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only (ECDSA keys encipher nothing), and certificates too for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_is_current(cert_path: Path, key_path: Path, authority: Authority) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        certificate.verify_directly_issued_by(authority.certificate)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return (
        certificate.public_key() == key.public_key()
        and certificate.not_valid_after_utc - _now() > RENEW_BEFORE
    )


def _write_leaf(role: str, key_path: Path, cert_path: Path, authority: Authority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_key_id = authority.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role_dns_name(role))]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(signs_certificates=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        # No IP addresses: a certificate valid for 127.0.0.1 would let any role's holder pose
        # as the scheduler there; clients check the scheduler's DNS name instead.
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(role_dns_name(role)),
                    x509.UniformResourceIdentifier(role_spiffe_id(role)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    # Key first: a crash between the two leaves a mismatch, which the next start repairs.
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, certificate.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    _write_atomically(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_atomically(path, data, 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Writes through a temporary file created with `mode`, so a reader (a running service
    reloading its certificate) never sees half a file and a key is never briefly readable."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    # The umask may have narrowed `mode`; certificates must stay readable as asked.
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> None:
    """`python -m sinas_devstack.pki DIR`: provisions DIR (Docker Compose's one-shot step)."""
    parser = argparse.ArgumentParser(prog="sinas_devstack.pki", description=main.__doc__)
    parser.add_argument("directory", type=Path)
    provision_pki(parser.parse_args(argv).directory)


if __name__ == "__main__":
    main()

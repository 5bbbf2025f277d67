"""The local CA and service certificates: identities, file modes, reuse and renewal."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sinas_common.tls import ROLES
from sinas_devstack import pki
from sinas_devstack.pki import provision_pki


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_role_gets_its_identity_and_nothing_else(tmp_path: Path) -> None:
    env = provision_pki(tmp_path / "pki")
    ca = certificate(tmp_path / "pki" / "ca.crt")
    assert set(env) == set(ROLES)
    for role in ROLES:
        leaf = certificate(Path(env[role]["INTERNAL_TLS_CERT_FILE"]))
        leaf.verify_directly_issued_by(ca)
        [common_name] = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert common_name.value == f"sinas-{role}"
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [f"sinas-{role}"]
        assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://sinas/{role}"
        ]
        # No IP address: the scheduler is recognised by its name, never by 127.0.0.1.
        assert names.get_values_for_type(x509.IPAddress) == []
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert env[role]["INTERNAL_TLS"] == "mtls"
        assert env[role]["SCHEDULER_TLS_SERVER_NAME"] == "sinas-scheduler"
        assert env[role]["INTERNAL_TLS_CA_FILE"] == str(tmp_path / "pki" / "ca.crt")


def test_keys_are_private_and_the_folder_too(tmp_path: Path) -> None:
    env = provision_pki(tmp_path / "pki")
    assert mode(tmp_path / "pki") == 0o700
    assert mode(tmp_path / "pki" / "ca.key") == 0o600
    for role in ROLES:
        assert mode(Path(env[role]["INTERNAL_TLS_KEY_FILE"])) == 0o600
        assert mode(Path(env[role]["INTERNAL_TLS_CERT_FILE"])) == 0o644


def test_a_second_start_reuses_everything(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    provision_pki(directory)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    provision_pki(directory)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


def test_a_missing_or_broken_leaf_is_made_again_alone(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    provision_pki(directory)
    ca, gateway = (directory / "ca.crt").read_bytes(), (directory / "gateway.crt").read_bytes()
    (directory / "executor.key").unlink()
    (directory / "notifier.crt").write_text("not a certificate")
    provision_pki(directory)
    assert (directory / "ca.crt").read_bytes() == ca
    assert (directory / "gateway.crt").read_bytes() == gateway
    for role in ("executor", "notifier"):
        certificate(directory / f"{role}.crt").verify_directly_issued_by(
            certificate(directory / "ca.crt")
        )


def test_a_leaf_expiring_soon_is_renewed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "pki"
    provision_pki(directory)
    old = certificate(directory / "executor.crt")
    # Eleven months on, the leaves are within RENEW_BEFORE of their end; the CA is not.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=340)
    monkeypatch.setattr(pki, "_now", lambda: later)
    provision_pki(directory)
    new = certificate(directory / "executor.crt")
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > old.not_valid_after_utc


def test_a_new_ca_reissues_every_leaf(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    provision_pki(directory)
    (directory / "ca.key").unlink()
    provision_pki(directory)
    ca = certificate(directory / "ca.crt")
    for role in ROLES:
        certificate(directory / f"{role}.crt").verify_directly_issued_by(ca)

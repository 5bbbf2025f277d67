"""The role a peer's certificate names, and how missing TLS settings are reported."""

from __future__ import annotations

import logging

import pytest

from sinas_common.settings import InternalTlsSettings
from sinas_common.tls import TlsFiles, role_from_auth_context, warn_if_off
from sinas_scheduler.caller_roles import ALLOWED_ROLES, allowed_roles


def auth(**entries: list[bytes]) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], **entries}


def test_the_spiffe_uri_names_the_role() -> None:
    # What grpcio reports for one of our certificates (seen by experiment, grpcio 1.85).
    context = auth(
        x509_common_name=[b"sinas-executor"],
        x509_subject_alternative_name=[b"sinas-executor", b"spiffe://sinas/executor"],
        peer_dns=[b"sinas-executor"],
        peer_uri=[b"spiffe://sinas/executor"],
        peer_spiffe_id=[b"spiffe://sinas/executor"],
    )
    assert role_from_auth_context(context) == "executor"


def test_the_uri_wins_over_the_common_name() -> None:
    context = auth(x509_common_name=[b"sinas-gateway"], peer_uri=[b"spiffe://sinas/executor"])
    assert role_from_auth_context(context) == "executor"


def test_without_a_uri_the_common_name_names_the_role() -> None:
    assert role_from_auth_context(auth(x509_common_name=[b"sinas-notifier"])) == "notifier"


@pytest.mark.parametrize(
    "context",
    [
        auth(),
        auth(x509_common_name=[b"sinas-admin"]),
        auth(x509_common_name=[b"executor"]),
        auth(peer_uri=[b"spiffe://sinas/admin"]),
        auth(peer_uri=[b"spiffe://sinas/executor/extra"]),
        # Two of our identities in one certificate name none.
        auth(peer_uri=[b"spiffe://sinas/executor", b"spiffe://sinas/gateway"]),
        auth(x509_common_name=[b"sinas-executor", b"sinas-gateway"]),
    ],
)
def test_anything_else_names_no_role(context: dict[str, list[bytes]]) -> None:
    assert role_from_auth_context(context) is None


def test_another_trust_domain_falls_back_to_the_common_name() -> None:
    context = auth(x509_common_name=[b"sinas-gateway"], peer_uri=[b"spiffe://other/executor"])
    assert role_from_auth_context(context) == "gateway"


@pytest.mark.parametrize(
    ("missing", "present"),
    [
        ("INTERNAL_TLS_CA_FILE", {"INTERNAL_TLS_CERT_FILE": "c", "INTERNAL_TLS_KEY_FILE": "k"}),
        ("INTERNAL_TLS_CERT_FILE", {"INTERNAL_TLS_CA_FILE": "a", "INTERNAL_TLS_KEY_FILE": "k"}),
        ("INTERNAL_TLS_KEY_FILE", {"INTERNAL_TLS_CA_FILE": "a", "INTERNAL_TLS_CERT_FILE": "c"}),
    ],
)
def test_a_missing_file_setting_is_named(missing: str, present: dict[str, str]) -> None:
    settings = InternalTlsSettings.model_validate({**present, missing: ""})
    with pytest.raises(ValueError, match=missing):
        TlsFiles.from_settings(settings)


def test_an_unreadable_file_is_named() -> None:
    settings = InternalTlsSettings.model_validate(
        {
            "INTERNAL_TLS_CA_FILE": "/nonexistent/ca.crt",
            "INTERNAL_TLS_CERT_FILE": "/nonexistent/x.crt",
            "INTERNAL_TLS_KEY_FILE": "/nonexistent/x.key",
        }
    )
    with pytest.raises(ValueError, match=r"INTERNAL_TLS_CA_FILE=/nonexistent/ca\.crt"):
        TlsFiles.from_settings(settings).read()


def test_mtls_is_the_default_and_off_is_explicit() -> None:
    assert InternalTlsSettings.model_validate({}).enabled
    assert not InternalTlsSettings.model_validate({"INTERNAL_TLS": "off"}).enabled
    with pytest.raises(ValueError):
        InternalTlsSettings.model_validate({"INTERNAL_TLS": "plaintext"})


@pytest.mark.parametrize(
    ("method", "roles"),
    [
        ("/sinas.scheduler.v1.WorkerService/ClaimExecutions", {"executor"}),
        ("/sinas.scheduler.v1.NotifierService/ClaimCallbacks", {"notifier"}),
        ("/sinas.scheduler.v1.IdentityService/CreateApiKey", {"gateway"}),
        ("/grpc.health.v1.Health/Check", {"scheduler", "gateway", "executor", "notifier"}),
        ("/sinas.scheduler.v1.WorkerService", set()),
        ("/sinas.scheduler.v1.Unknown/Method", set()),
        ("", set()),
    ],
)
def test_allowed_roles_by_method(method: str, roles: set[str]) -> None:
    assert allowed_roles(method) == roles


def test_no_service_is_open_to_every_role_but_health() -> None:
    open_to_all = [name for name, roles in ALLOWED_ROLES.items() if len(roles) > 1]
    assert open_to_all == ["grpc.health.v1.Health"]


def test_off_is_warned_about_and_mtls_is_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sinas_common.tls"):
        warn_if_off(InternalTlsSettings.model_validate({}), "grpc_server")
        assert not caplog.records
        warn_if_off(InternalTlsSettings.model_validate({"INTERNAL_TLS": "off"}), "grpc_server")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.__dict__["action"] == "internal_tls_off"

"""Gateway settings come from the environment with the documented defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sinas_gateway.settings import GatewaySettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GATEWAY_HOST",
        "GATEWAY_PORT",
        "MAX_REQUEST_BODY_BYTES",
        "SYNC_EXECUTE_DEFAULT_TIMEOUT",
        "SCHEDULER_ADDR",
    ):
        monkeypatch.delenv(name, raising=False)

    settings = GatewaySettings()

    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_request_body_bytes == 1048576
    assert settings.sync_execute_default_timeout == 300
    assert settings.scheduler.scheduler_addr == "127.0.0.1:50051"


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOST", "127.0.0.1")
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    monkeypatch.setenv("MAX_REQUEST_BODY_BYTES", "2048")
    monkeypatch.setenv("SYNC_EXECUTE_DEFAULT_TIMEOUT", "15")
    monkeypatch.setenv("SCHEDULER_ADDR", "scheduler:50051")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")

    settings = GatewaySettings()

    assert (settings.host, settings.port) == ("127.0.0.1", 9000)
    assert settings.max_request_body_bytes == 2048
    assert settings.sync_execute_default_timeout == 15
    assert settings.scheduler.scheduler_addr == "scheduler:50051"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "70000"),
        ("MAX_REQUEST_BODY_BYTES", "0"),
        ("SYNC_EXECUTE_DEFAULT_TIMEOUT", "x"),
    ],
)
def test_bad_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        GatewaySettings()

"""A real HTTPS receiver for `localhost`, trusted through a throwaway CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates


@pytest.fixture(scope="session")
def certificates(scratch_root: Path) -> ReceiverCertificates:
    return ReceiverCertificates.create(scratch_root / "notifier-certs")


@pytest.fixture(scope="session")
def receiver(certificates: ReceiverCertificates) -> Iterator[CallbackReceiver]:
    running = CallbackReceiver(certificates).start()
    yield running
    running.stop()

"""The executor's `GET /health` (on its metrics port): up, and how its runs are isolated."""

from __future__ import annotations

import threading
from http import HTTPStatus
from typing import Any


class ExecutorHealth:
    """Starting until the sandbox was checked; then what it is, with any warning about it.

    Called from the metrics server's threads while the event loop sets it: a lock keeps a
    reader from seeing half of a report.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sandbox: dict[str, Any] | None = None
        self._warnings: list[str] = []

    def sandbox_ready(self, sandbox: dict[str, Any], warnings: list[str]) -> None:
        with self._lock:
            self._sandbox = dict(sandbox)
            self._warnings = list(warnings)

    def stopped(self) -> None:
        with self._lock:
            self._sandbox = None

    def __call__(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self._sandbox is None:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable"}
            return HTTPStatus.OK, {
                "status": "ok",
                "sandbox": dict(self._sandbox),
                "warnings": list(self._warnings),
            }

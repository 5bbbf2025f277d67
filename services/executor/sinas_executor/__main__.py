"""`python -m sinas_executor`: builds settings once and runs the executor."""

from __future__ import annotations

import asyncio
import logging

from sinas_common.hardening import make_non_dumpable
from sinas_common.logs import configure_logging
from sinas_common.metrics import MetricsServer
from sinas_executor.app import run_executor
from sinas_executor.health import ExecutorHealth
from sinas_executor.network import NetworkUnavailable
from sinas_executor.sandbox import SandboxUnavailable
from sinas_executor.settings import ExecutorSettings

logger = logging.getLogger("sinas_executor")
# What a supervisor sees when the machine can't sandbox runs as configured (sysexits' CONFIG).
REFUSED_EXIT_CODE = 78


def main() -> None:
    # First of all: from here on no other process of our uid reads our environ or memory.
    make_non_dumpable()
    settings = ExecutorSettings()
    configure_logging("executor", settings.log_level)
    health = ExecutorHealth()
    metrics = MetricsServer.start(settings.metrics_bind, settings.metrics_port, health=health)
    try:
        asyncio.run(run_executor(settings, health))
    except (SandboxUnavailable, NetworkUnavailable) as refused:
        # Never a silent downgrade: no run is taken here until the operator decides.
        logger.error(
            "executor refuses to start", extra={"action": "refused", "error": str(refused)}
        )
        raise SystemExit(REFUSED_EXIT_CODE) from None
    finally:
        metrics.close()


if __name__ == "__main__":
    main()

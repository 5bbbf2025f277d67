"""`python -m sinas_gateway`: read the settings once and serve the REST API."""

from __future__ import annotations

import asyncio

from sinas_common.hardening import make_non_dumpable
from sinas_common.logs import configure_logging
from sinas_common.metrics import MetricsServer
from sinas_gateway.app import serve
from sinas_gateway.settings import GatewaySettings


def main() -> None:
    # First of all: from here on no other process of our uid reads our environ or memory.
    make_non_dumpable()
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    metrics = MetricsServer.start(settings.metrics_bind, settings.metrics_port)
    try:
        asyncio.run(serve(settings))
    finally:
        metrics.close()


if __name__ == "__main__":
    main()

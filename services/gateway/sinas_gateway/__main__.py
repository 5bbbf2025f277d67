"""`python -m sinas_gateway`: read the settings once and serve the REST API."""

from __future__ import annotations

import asyncio

from sinas_common.logs import configure_logging
from sinas_gateway.app import serve
from sinas_gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

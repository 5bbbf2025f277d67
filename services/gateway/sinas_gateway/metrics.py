"""The gateway's Prometheus metrics: HTTP requests by method, route template and status."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sinas_common.metrics import LATENCY_BUCKETS

HTTP_REQUESTS = Counter(
    "sinas_http_requests_total",
    "HTTP requests served, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "sinas_http_request_seconds",
    "Time to serve one HTTP request, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
# Paths that match no route share one label, so scanners can't grow the series without bound.
UNMATCHED_ROUTE = "unmatched"


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request once its response has started."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            route = route_template(scope)
            method = str(scope["method"])
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            HTTP_SECONDS.labels(method=method, route=route).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/executions/{execution_id}`), not the raw path."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE

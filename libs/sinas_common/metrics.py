"""Prometheus metrics shared by every service: the scrape server, gRPC counters, sampling."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from socketserver import ThreadingMixIn
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import make_wsgi_app, start_http_server

logger = logging.getLogger(__name__)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scrape never holds up a probe."""

    daemon_threads = True


# Seconds from fractions of a millisecond (a claim) to minutes (a slow callback or lag).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10_000, 100_000)

GRPC_REQUESTS = Counter(
    "sinas_grpc_requests_total", "gRPC calls served, by method and status code", ["method", "code"]
)
GRPC_SECONDS = Histogram(
    "sinas_grpc_request_seconds",
    "Time to serve one gRPC call, by method",
    ["method"],
    buckets=LATENCY_BUCKETS,
)


# A service's own health: an HTTP status and a JSON body, asked at every request.
HealthReport = Callable[[], tuple[int, dict[str, Any]]]


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per request: the scrape and probe interval would fill the log."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def _with_health(metrics: Any, health: HealthReport) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/health":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        status, body = health()
        payload = json.dumps(body).encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


class MetricsServer:
    """The `/metrics` HTTP endpoint on its own port, served from a daemon thread."""

    def __init__(self, server: WSGIServer, thread: Thread) -> None:
        self._server = server
        self._thread = thread

    @classmethod
    def start(
        cls,
        bind: str,
        port: int,
        *,
        registry: CollectorRegistry = REGISTRY,
        health: HealthReport | None = None,
    ) -> MetricsServer:
        """`health`, where given, answers `GET /health` on the same port with its report."""
        if health is None:
            server, thread = start_http_server(port, addr=bind, registry=registry)
        else:
            app = _with_health(make_wsgi_app(registry), health)
            server = make_server(bind, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
            thread = Thread(target=server.serve_forever, name="metrics", daemon=True)
            thread.start()
        started = cls(server, thread)
        logger.info(
            "metrics endpoint listening",
            extra={"action": "start", "bind": bind, "port": started.port},
        )
        return started

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts unary calls by method and final status code and times them.

    Placed before the ErrorInterceptor, so a SinasError has already become an abort with its
    code by the time this one sees the call end. Being first, it also keeps the wrapped
    handler of each method: a server's handlers are fixed once it starts, and building the
    chain again cost every call a noticeable share of its CPU."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        known = self._handlers.get(method)
        if known is not None:
            return known
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        seconds = GRPC_SECONDS.labels(method=method)

        async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                GRPC_REQUESTS.labels(method=method, code=_code_name(code)).inc()
                seconds.observe(time.perf_counter() - started)

        wrapped = grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = wrapped
        return wrapped


def _code_name(code: object) -> str:
    # context.code() gives a StatusCode after abort(), or a bare int on some grpc versions.
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return "UNKNOWN"


async def sample_forever(
    sample: Callable[[], Awaitable[float]], gauge: Gauge, *, interval_seconds: float
) -> None:
    """Sets `gauge` from `sample()` every interval; a failed sample is logged and skipped."""
    while True:
        try:
            gauge.set(await sample())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("metrics sample failed", exc_info=True, extra={"action": "sample"})
        await asyncio.sleep(interval_seconds)

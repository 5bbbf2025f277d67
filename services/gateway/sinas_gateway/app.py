"""Wires the gateway together: the FastAPI app, the scheduler client and the HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from sinas_common.grpc_client import open_scheduler_channel
from sinas_gateway.body_limit import BodySizeLimit
from sinas_gateway.errors import install_error_handlers
from sinas_gateway.metrics import RequestMetrics
from sinas_gateway.routes import (
    agent_management,
    agents,
    auth,
    batches,
    chats,
    executions,
    functions,
    health,
    interaction,
    management,
)
from sinas_gateway.scheduler_client import GrpcSchedulerClient, SchedulerClient
from sinas_gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def create_app(settings: GatewaySettings, scheduler: SchedulerClient) -> FastAPI:
    """The REST application; it owns nothing and asks `scheduler` for everything."""
    app = FastAPI(
        title="Sinas runtime",
        version="1.0.0",
        summary="Run functions on behalf of users: enqueue, wait, poll; manage the registry.",
        # Requests are counted and timed by our own Prometheus middleware; FastAPI's
        # OpenTelemetry hooks looked up the environment and the tracer on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.scheduler = scheduler
    for module in (
        functions,
        batches,
        agents,
        chats,
        executions,
        interaction,
        auth,
        management,
        agent_management,
        health,
    ):
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes)
    # Outermost, so requests the body limit rejects are counted too.
    app.add_middleware(RequestMetrics)
    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound before the server starts, so port 0 yields a known port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn leaves Nagle on for sockets it is handed; accepted connections inherit this, and
    # without it every keep-alive response after the first waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    """The URL a local client reaches the bound socket at."""
    host, port = sock.getsockname()[:2]
    host = _WILDCARD_HOSTS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _GatewayServer(uvicorn.Server):
    """uvicorn, except that SIGINT/SIGTERM end in a clean exit.

    Stock uvicorn re-raises the stop signal once it has drained, which kills the process
    before `serve` can close the scheduler channel (and turns SIGINT into a traceback).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        for sig in stop_signals:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in stop_signals:
                loop.remove_signal_handler(sig)


def build_server(app: FastAPI, settings: GatewaySettings) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",
        # The C parser: h11, the pure-Python default, cost ~40% of the CPU of a request.
        http="httptools",
        log_config=None,
        # One line per request cost ~5% of a request's CPU; the request metrics count and
        # time every route and status instead. Errors are logged either way.
        access_log=settings.access_log,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
    )
    return _GatewayServer(config)


async def serve(settings: GatewaySettings) -> None:
    """Runs the gateway until SIGINT/SIGTERM, then closes the scheduler channel."""
    channel = open_scheduler_channel(settings.scheduler, tls=settings.tls)
    try:
        client = GrpcSchedulerClient(
            channel,
            rpc_timeout_seconds=settings.scheduler.rpc_timeout_seconds,
            submit_calls_in_flight=settings.submit_calls_in_flight,
        )
        server = build_server(create_app(settings, client), settings)
        sock = bind_socket(settings.host, settings.port)
        logger.info(
            "gateway listening",
            extra={"url": base_url(sock), "scheduler_addr": settings.scheduler.scheduler_addr},
        )
        await server.serve(sockets=[sock])
    finally:
        await channel.close()

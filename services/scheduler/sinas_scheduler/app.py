"""Wires the scheduler's concrete parts together; the only module that names them all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.grpc_server import GrpcServer
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler.dispatch import DispatchLoop, JetStreamDispatcher
from sinas_scheduler.identity import Authenticator
from sinas_scheduler.notifications import PostgresListener
from sinas_scheduler.postgres_executions import PostgresExecutionStore
from sinas_scheduler.postgres_functions import PostgresFunctionStore
from sinas_scheduler.postgres_identity import PostgresIdentityStore
from sinas_scheduler.reaper import run_reaper
from sinas_scheduler.registry import FunctionLimits, FunctionUseCases, IdentityUseCases
from sinas_scheduler.scheduler import ExecutionLimits, ExecutionUseCases, WorkerUseCases
from sinas_scheduler.server import (
    SERVICE_NAMES,
    ExecutionServicer,
    FunctionServicer,
    IdentityServicer,
    WorkerServicer,
)
from sinas_scheduler.settings import SchedulerSettings
from sinas_scheduler.store import create_engine
from sinas_scheduler.tokens import TokenService, generate_signing_key

logger = logging.getLogger(__name__)

LISTEN_READY_TIMEOUT_SECONDS = 30.0


class SchedulerApp:
    """The running scheduler: gRPC server, LISTEN connection, dispatcher and reaper loops."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self._settings = settings
        self._engine: AsyncEngine | None = None
        self._server: GrpcServer | None = None
        self._dispatcher: JetStreamDispatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the scheduler is not started")
        return int(self._server.port)

    @property
    def started(self) -> bool:
        return self._engine is not None

    @property
    def dispatching(self) -> bool:
        return self._dispatcher is not None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self._settings
        self._engine = engine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size
        )
        identity_store = PostgresIdentityStore(engine)
        function_store = PostgresFunctionStore(engine)
        execution_store = PostgresExecutionStore(engine)

        keys = await identity_store.ensure_signing_key(generate_signing_key())
        tokens = TokenService(keys[0], keys[1:])
        identity = IdentityUseCases(identity_store, tokens)
        admin_key = settings.bootstrap_admin_key
        await identity.bootstrap(admin_key.get_secret_value() if admin_key else None)

        listener = PostgresListener(settings.database_url)
        self._spawn(listener.run(), "listener")
        await asyncio.wait_for(listener.listening.wait(), LISTEN_READY_TIMEOUT_SECONDS)

        limits = ExecutionLimits(
            max_depth=settings.max_execution_depth,
            max_attempts=settings.execution_max_attempts,
            lease_seconds=settings.execution_lease_seconds,
            token_buffer_seconds=settings.execution_token_buffer_seconds,
            max_token_seconds=settings.max_execution_token_seconds,
        )
        functions = FunctionUseCases(
            function_store,
            FunctionLimits(
                default_timeout_seconds=settings.default_function_timeout_seconds,
                max_timeout_seconds=settings.max_function_timeout_seconds,
            ),
        )
        executions = ExecutionUseCases(
            executions=execution_store, functions=functions, signals=listener, limits=limits
        )
        worker = WorkerUseCases(
            executions=execution_store, functions=function_store, tokens=tokens, limits=limits
        )
        auth = Authenticator(identity_store, tokens)

        if settings.dispatcher_enabled:
            self._dispatcher = await JetStreamDispatcher.connect(settings.nats)
            loop = DispatchLoop(
                store=execution_store,
                dispatcher=self._dispatcher,
                wakeup=listener.dispatch_wakeup,
                batch_size=settings.dispatch_batch,
            )
            self._spawn(loop.run(), "dispatcher")
        self._spawn(run_reaper(worker, settings.reaper_interval_seconds), "reaper")

        self._server = GrpcServer(
            bind=settings.grpc_bind,
            registrars=[
                lambda s: pb_grpc.add_IdentityServiceServicer_to_server(
                    IdentityServicer(auth, identity), s
                ),
                lambda s: pb_grpc.add_FunctionServiceServicer_to_server(
                    FunctionServicer(auth, functions), s
                ),
                lambda s: pb_grpc.add_ExecutionServiceServicer_to_server(
                    ExecutionServicer(auth, executions), s
                ),
                lambda s: pb_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(worker), s),
            ],
            service_names=SERVICE_NAMES,
        )
        await self._server.start()
        logger.info(
            "scheduler listening",
            extra={
                "action": "start",
                "port": self._server.port,
                "dispatcher_enabled": settings.dispatcher_enabled,
            },
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=f"scheduler-{name}"))

    async def stop(self) -> None:
        """Stops serving (in-flight calls get the grace period), then the loops and pools."""
        if self._server is not None:
            await self._server.stop(self._settings.shutdown_grace_seconds)
            self._server = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._dispatcher is not None:
            with contextlib.suppress(Exception):
                await self._dispatcher.close()
            self._dispatcher = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        logger.info("scheduler stopped", extra={"action": "stop"})

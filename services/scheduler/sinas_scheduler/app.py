"""Wires the scheduler's concrete parts together; the only module that names them all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine

from sinas_common.callback_policy import CallbackPolicy, Resolver, SystemResolver
from sinas_common.grpc_server import GrpcServer
from sinas_common.jobstream import ensure_job_stream
from sinas_common.metrics import sample_forever
from sinas_common.nats_connect import connect_nats
from sinas_common.pull import while_jetstream_settles
from sinas_common.tasks import cancel_and_wait
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler.agent_runs import AgentRunLimits, AgentRunUseCases
from sinas_scheduler.agent_server import AgentServicer
from sinas_scheduler.agents import AgentLimits, AgentUseCases
from sinas_scheduler.batches import BatchLimits, BatchUseCases
from sinas_scheduler.callback_urls import PolicyCallbackUrlCheck
from sinas_scheduler.callbacks import CallbackLimits, CallbackUseCases
from sinas_scheduler.caller_roles import CallerRoleInterceptor
from sinas_scheduler.control import HeartbeatOnlyControl, NatsControlPublisher
from sinas_scheduler.dispatch import DispatchLoop, JetStreamDispatcher
from sinas_scheduler.encryption import MISSING_KEY_MESSAGE, FernetCipher, WrongEncryptionKey
from sinas_scheduler.events import EventOutboxLoop, JetStreamEventPublisher
from sinas_scheduler.identity import Authenticator, record_key_use_forever
from sinas_scheduler.interaction import Control, InteractionUseCases
from sinas_scheduler.metrics import QUEUE_DEPTH, QUEUE_SAMPLE_SECONDS
from sinas_scheduler.notifications import PostgresListener
from sinas_scheduler.pg import HotPool, open_hot_pool
from sinas_scheduler.postgres_agents import PostgresAgentStore
from sinas_scheduler.postgres_batches import PostgresBatchStore
from sinas_scheduler.postgres_callbacks import PostgresBatchCallbackStore, PostgresCallbackStore
from sinas_scheduler.postgres_chats import PostgresChatStore
from sinas_scheduler.postgres_executions import PostgresExecutionStore
from sinas_scheduler.postgres_functions import PostgresFunctionStore
from sinas_scheduler.postgres_idempotency import PostgresIdempotencyStore
from sinas_scheduler.postgres_identity import PostgresIdentityStore
from sinas_scheduler.postgres_interaction import PostgresInteractionStore
from sinas_scheduler.postgres_retention import PostgresRetentionStore
from sinas_scheduler.prompt_dispatch import PromptDispatch
from sinas_scheduler.reaper import run_reaper
from sinas_scheduler.registry import FunctionLimits, FunctionUseCases, IdentityUseCases
from sinas_scheduler.retention import SECONDS_PER_DAY, Retention, RetentionPolicy, run_retention
from sinas_scheduler.scheduler import ExecutionLimits, ExecutionUseCases, WorkerUseCases
from sinas_scheduler.server import (
    SERVICE_NAMES,
    BatchServicer,
    ExecutionServicer,
    FunctionServicer,
    IdentityServicer,
    NotifierServicer,
    WorkerServicer,
)
from sinas_scheduler.settings import SchedulerSettings
from sinas_scheduler.store import create_engine
from sinas_scheduler.tokens import TokenService, generate_signing_key

logger = logging.getLogger(__name__)

LISTEN_READY_TIMEOUT_SECONDS = 30.0
# At stop, how long the last write of API key use may take before it is given up (a database
# that is gone must not hold the stop up).
KEY_USE_FLUSH_ON_STOP_SECONDS = 5.0


async def _open_signing_keys(store: PostgresIdentityStore, cipher: FernetCipher) -> TokenService:
    """The token service over the stored signing keys, decrypted. The first start stores a new
    key encrypted; any row not yet under the first encryption key (plaintext from before
    encryption at rest, or an older key after rotation) is re-encrypted first."""
    candidate = generate_signing_key()
    sealed = replace(candidate, private_key_pem=cipher.encrypt(candidate.private_key_pem))
    try:
        resealed = await store.reseal_signing_keys(cipher.reseal)
        stored = await store.ensure_signing_key(sealed)
        keys = [replace(key, private_key_pem=cipher.decrypt(key.private_key_pem)) for key in stored]
    except WrongEncryptionKey as exc:
        raise WrongEncryptionKey(
            "the stored signing keys were encrypted with a key SINAS_ENCRYPTION_KEY doesn't "
            "list: after a rotation, keep the old key after the new one until a start has "
            "re-encrypted them"
        ) from exc
    if resealed:
        logger.info(
            "signing keys re-encrypted under the first encryption key",
            extra={"action": "reseal", "count": resealed},
        )
    return TokenService(keys[0], keys[1:])


class SchedulerApp:
    """The running scheduler: gRPC server, LISTEN connection, dispatcher, event publisher and
    reaper loops. `resolver` answers the submit-time callback host lookups (tests pass a fake)."""

    def __init__(self, settings: SchedulerSettings, *, resolver: Resolver | None = None) -> None:
        self._settings = settings
        self._resolver: Resolver = resolver or SystemResolver()
        self._engine: AsyncEngine | None = None
        self._hot: HotPool | None = None
        self._server: GrpcServer | None = None
        self._nats: NatsClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._auth: Authenticator | None = None
        self._tokens: TokenService | None = None

    @property
    def tokens(self) -> TokenService:
        """What this scheduler mints and verifies tokens with (tests mint their own with it)."""
        if self._tokens is None:
            raise RuntimeError("the scheduler is not started")
        return self._tokens

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
        return self._nats is not None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self._settings
        if settings.encryption_key is None:
            raise ValueError(MISSING_KEY_MESSAGE)
        cipher = FernetCipher(settings.encryption_key.get_secret_value())
        self._engine = engine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size
        )
        self._hot = hot = await open_hot_pool(settings.database_url, size=settings.db_pool_size)
        identity_store = PostgresIdentityStore(engine, hot)
        function_store = PostgresFunctionStore(engine, hot)
        execution_store = PostgresExecutionStore(engine, hot)
        callback_store = PostgresCallbackStore(engine)
        batch_callback_store = PostgresBatchCallbackStore(engine)
        # Fails fast on a malformed CALLBACK_URL_PORTS.
        policy = CallbackPolicy.from_settings(settings.callbacks)

        tokens = await _open_signing_keys(identity_store, cipher)
        self._tokens = tokens
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
            idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        )
        functions = FunctionUseCases(
            function_store,
            FunctionLimits(
                default_timeout_seconds=settings.default_function_timeout_seconds,
                max_timeout_seconds=settings.max_function_timeout_seconds,
            ),
        )
        # Active once NATS is connected below; until then (or on an API-only replica) new rows
        # wake the dispatch loops instead.
        prompt = PromptDispatch(marks=execution_store, fallback=listener.dispatch_wakeup)
        executions = ExecutionUseCases(
            executions=execution_store,
            functions=functions,
            signals=listener,
            limits=limits,
            callback_urls=PolicyCallbackUrlCheck(policy, self._resolver),
            idempotency=PostgresIdempotencyStore(engine),
            prompt=prompt,
        )
        agent_store = PostgresAgentStore(engine)
        chat_store = PostgresChatStore(engine)
        resealed = await agent_store.reseal_provider_keys(cipher.reseal)
        if resealed:
            logger.info(
                "provider keys re-encrypted under the first encryption key",
                extra={"action": "reseal", "count": resealed},
            )
        agent_runs = AgentRunUseCases(
            agents=agent_store,
            chats=chat_store,
            identity=identity_store,
            cipher=cipher,
            tokens=tokens,
            limits=AgentRunLimits(
                run_timeout_seconds=settings.agent_run_timeout_seconds,
                max_depth=settings.max_execution_depth,
                token_buffer_seconds=settings.execution_token_buffer_seconds,
                max_token_seconds=settings.max_execution_token_seconds,
            ),
        )
        worker = WorkerUseCases(
            executions=execution_store,
            functions=function_store,
            tokens=tokens,
            limits=limits,
            agent_runs=agent_runs,
        )
        agents = AgentUseCases(
            agents=agent_store,
            chats=chat_store,
            cipher=cipher,
            limits=AgentLimits(
                default_provider=settings.default_llm_provider,
                default_max_turns=settings.default_agent_max_turns,
                max_depth=settings.max_execution_depth,
                max_batch_size=settings.max_batch_size,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
            ),
            callback_urls=PolicyCallbackUrlCheck(policy, self._resolver),
            idempotency=PostgresIdempotencyStore(engine),
        )
        batch_store = PostgresBatchStore(engine, hot)
        batches = BatchUseCases(
            batches=batch_store,
            functions=functions,
            limits=BatchLimits(
                max_batch_size=settings.max_batch_size,
                max_depth=settings.max_execution_depth,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
            ),
            callback_urls=PolicyCallbackUrlCheck(policy, self._resolver),
            idempotency=PostgresIdempotencyStore(engine),
        )
        callbacks = CallbackUseCases(
            callbacks=callback_store,
            tokens=tokens,
            limits=CallbackLimits(
                claim_timeout_seconds=settings.callback_claim_timeout_seconds,
                token_seconds=settings.callback_token_seconds,
            ),
            batch_callbacks=batch_callback_store,
        )
        auth = Authenticator(identity_store, tokens, cache_seconds=settings.auth_cache_seconds)
        self._auth = auth

        # Both outboxes publish to NATS, so an API-only replica runs neither.
        dispatch_loop: DispatchLoop | None = None
        event_loop: EventOutboxLoop | None = None
        if settings.dispatcher_enabled:
            self._nats = client = await connect_nats(settings.nats, name="sinas-scheduler")
            dispatcher = JetStreamDispatcher(
                client,
                await while_jetstream_settles(
                    lambda: ensure_job_stream(client.jetstream(), settings.nats)
                ),
            )
            prompt.attach(dispatcher)
            dispatch_loop = DispatchLoop(
                store=execution_store,
                dispatcher=dispatcher,
                wakeup=listener.dispatch_wakeup,
                batch_size=settings.dispatch_batch,
            )
            event_loop = EventOutboxLoop(
                store=callback_store,
                publisher=await JetStreamEventPublisher.create(client, settings.nats),
                wakeup=listener.events_wakeup,
                batch_size=settings.dispatch_batch,
                batch_store=batch_callback_store,
            )

        # Without NATS (an API-only replica) executors still learn of cancels and continues
        # from their heartbeats, only later.
        control: Control = (
            HeartbeatOnlyControl()
            if self._nats is None
            else NatsControlPublisher(self._nats, settings.nats)
        )
        interaction = InteractionUseCases(
            store=PostgresInteractionStore(engine),
            executions=execution_store,
            batches=batch_store,
            control=control,
            input_timeout_seconds=settings.execution_input_timeout_seconds,
        )

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
                    ExecutionServicer(auth, executions, interaction), s
                ),
                lambda s: pb_grpc.add_WorkerServiceServicer_to_server(
                    WorkerServicer(worker, interaction, agent_runs), s
                ),
                lambda s: pb_grpc.add_NotifierServiceServicer_to_server(
                    NotifierServicer(callbacks), s
                ),
                lambda s: pb_grpc.add_BatchServiceServicer_to_server(
                    BatchServicer(auth, batches, interaction), s
                ),
                lambda s: pb_grpc.add_AgentServiceServicer_to_server(
                    AgentServicer(auth, agents), s
                ),
            ],
            service_names=SERVICE_NAMES,
            tls=settings.tls,
            # With INTERNAL_TLS=off there is no certificate to read a role from: the mesh's
            # authorization policy enforces the same table (deploy/README.md).
            interceptors=[CallerRoleInterceptor()] if settings.tls.enabled else [],
        )
        await self._server.start()
        # Publish only once claims can be served: a job published earlier reaches an executor
        # whose claim fails, and comes back as a needless redelivery.
        if dispatch_loop is not None and event_loop is not None:
            self._spawn(dispatch_loop.run(), "dispatcher")
            self._spawn(prompt.run(), "prompt-dispatch")
            self._spawn(event_loop.run(), "events")
        self._spawn(
            run_reaper(worker, callbacks, interaction, settings.reaper_interval_seconds), "reaper"
        )
        retention = Retention(
            PostgresRetentionStore(engine),
            RetentionPolicy(
                retention_seconds=settings.retention_days * SECONDS_PER_DAY,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
                chunk_size=settings.retention_chunk_size,
            ),
        )
        self._spawn(run_retention(retention, settings.retention_interval_seconds), "retention")
        self._spawn(record_key_use_forever(auth, settings.api_key_usage_flush_seconds), "key-use")
        self._spawn(
            sample_forever(
                execution_store.count_due, QUEUE_DEPTH, interval_seconds=QUEUE_SAMPLE_SECONDS
            ),
            "queue-depth",
        )
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
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._auth is not None and self._hot is not None:
            # The uses noted since the last flush would otherwise be lost with this process.
            try:
                async with asyncio.timeout(KEY_USE_FLUSH_ON_STOP_SECONDS):
                    await self._auth.flush_key_use()
            except Exception:
                logger.exception("recording API key use failed", extra={"action": "key_use"})
            self._auth = None
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.drain()
            self._nats = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if self._hot is not None:
            await self._hot.close()
            self._hot = None
        logger.info("scheduler stopped", extra={"action": "stop"})

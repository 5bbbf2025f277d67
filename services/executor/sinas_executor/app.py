"""Wires the executor together: NATS, the scheduler client, the sandbox pool, health server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from sinas_common.control import control_subject
from sinas_common.grpc_client import open_scheduler_channel
from sinas_common.grpc_server import GrpcServer
from sinas_common.nats_connect import connect_nats
from sinas_executor import network
from sinas_executor.agent import AgentLimits, ChatAgentRunner
from sinas_executor.consumer import AGENT_JOB_KIND, ConsumerOptions, ExecutionConsumer, subscribe
from sinas_executor.health import ExecutorHealth
from sinas_executor.llm import HttpxChatModel
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool
from sinas_executor.scheduler_client import GrpcSchedulerClient
from sinas_executor.settings import ExecutorSettings, SandboxSettings

logger = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = "sinas.executor.v1.Executor"


def pool_limits(settings: SandboxSettings, api_url: str | None = None) -> PoolLimits:
    return PoolLimits(
        concurrency=settings.concurrency,
        max_runs=settings.worker_max_runs,
        idle_seconds=settings.worker_idle_seconds,
        memory_mb=settings.memory_limit_mb,
        cpu_seconds=settings.cpu_limit_seconds,
        file_size_mb=settings.file_size_limit_mb,
        open_files=settings.open_files_limit,
        root=settings.root,
        uid_base=settings.uid_base,
        uid_count=settings.uid_count,
        disk_mb=settings.disk_limit_mb,
        max_processes=settings.max_processes,
        namespaces=settings.isolation == "namespaces",
        network=settings.network,
        api_url=api_url,
        hide_paths=tuple(path for path in settings.hide_paths.split(os.pathsep) if path),
    )


def _options(settings: ExecutorSettings, *, concurrency: int, prefetch: int = 0) -> ConsumerOptions:
    return ConsumerOptions(
        worker_id=settings.executor_id,
        api_url=settings.api_url,
        concurrency=concurrency,
        prefetch=prefetch,
        fetch_batch=settings.fetch_batch,
        ack_wait_seconds=settings.ack_wait_seconds,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
    )


def sandbox_warnings(pool: WorkerPool) -> list[str]:
    """What an operator must hear about the sandbox: logged at start, listed on /health."""
    warnings = []
    if not pool.limits.namespaces:
        warnings.append(
            "EXECUTOR_SANDBOX=unsafe-none: functions run without namespaces; they can see "
            "the host's processes, files and network as the executor's uid"
        )
    elif pool.network.mode == network.HOST and pool.limits.network == network.AUTO:
        warnings.append(
            f"{network.SETTING}=auto: the isolated network is unavailable "
            f"({network.pasta_unavailable()}); workers share the host's network and loopback"
        )
    for warning in warnings:
        logger.warning(warning, extra={"action": "sandbox_unsafe"})
    return warnings


async def run_executor(settings: ExecutorSettings, health_report: ExecutorHealth) -> None:
    """Runs until SIGTERM/SIGINT, then finishes or hands back in-flight work."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    health = GrpcServer(
        bind=settings.grpc_bind,
        registrars=[],
        service_names=[HEALTH_SERVICE_NAME],
        tls=settings.tls,
    )
    channel = open_scheduler_channel(settings.scheduler, tls=settings.tls)
    pool = WorkerPool(pool_limits(settings.sandbox, settings.api_url))
    await pool.start()
    health_report.sandbox_ready(pool.sandbox_report(), sandbox_warnings(pool))
    nc = await connect_nats(settings.nats, name=f"executor-{settings.executor_id}")
    model = HttpxChatModel()
    try:
        scheduler = GrpcSchedulerClient(
            channel, timeout_seconds=settings.scheduler.rpc_timeout_seconds
        )
        runner = SandboxRunner(pool)
        js = nc.jetstream()
        consumer = ExecutionConsumer(
            subscription=await subscribe(
                js, settings.nats, ack_wait_seconds=settings.ack_wait_seconds
            ),
            scheduler=scheduler,
            runner=runner,
            options=_options(
                settings, concurrency=settings.concurrency, prefetch=settings.prefetch
            ),
        )
        agent_consumer = ExecutionConsumer(
            subscription=await subscribe(
                js,
                settings.nats,
                ack_wait_seconds=settings.ack_wait_seconds,
                kind=AGENT_JOB_KIND,
            ),
            scheduler=scheduler,
            runner=runner,
            # Agent runs wait on models and tools for seconds: never claimed ahead.
            options=_options(settings, concurrency=settings.agent_concurrency),
            agents=ChatAgentRunner(
                model=model,
                scheduler=scheduler,
                limits=AgentLimits(call_timeout_seconds=settings.llm_timeout_seconds),
                worker_id=settings.executor_id,
            ),
        )
        # Core NATS, not JetStream: news of cancels and continues for the executions held here.
        await nc.subscribe(control_subject(settings.nats), cb=consumer.on_control)
        await health.start()
        logger.info(
            "executor started",
            extra={"action": "start", "worker_id": settings.executor_id, "port": health.port},
        )
        consuming = [
            asyncio.create_task(consumer.run(), name="executor-consumer"),
            asyncio.create_task(agent_consumer.run(), name="executor-agent-consumer"),
        ]
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([*consuming, stopped], return_when=asyncio.FIRST_COMPLETED)
        logger.info("executor stopping", extra={"action": "stop"})
        consumer.stop()
        agent_consumer.stop()
        await asyncio.gather(*consuming)
        stopped.cancel()
    finally:
        await health.stop(settings.shutdown_grace_seconds)
        await nc.close()
        await channel.close()
        await model.close()
        await pool.close()
    logger.info("executor stopped", extra={"action": "stopped"})

"""Wires the notifier together: policy, signer, HTTPS sender, NATS, scheduler client, health."""

from __future__ import annotations

import asyncio
import logging
import signal

from sinas_common.callback_policy import CallbackPolicy, system_resolver
from sinas_common.grpc_client import open_scheduler_channel
from sinas_common.grpc_server import GrpcServer
from sinas_common.nats_connect import connect_nats
from sinas_notifier.consumer import CallbackConsumer, ConsumerOptions, subscribe
from sinas_notifier.delivery import CallbackDeliverer
from sinas_notifier.scheduler_client import GrpcCallbackScheduler
from sinas_notifier.sender import HttpsSender, ssl_context
from sinas_notifier.settings import NotifierSettings
from sinas_notifier.signing import WebhookSigner

logger = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = "sinas.notifier.v1.Notifier"
# Longer than one attempt (10 s by default) plus recording; in-progress acks extend it.
ACK_WAIT_SECONDS = 60.0


def build_deliverer(settings: NotifierSettings, sender: HttpsSender) -> CallbackDeliverer:
    """The delivery side from settings; raises on a bad CA file or port list."""
    policy = CallbackPolicy.from_settings(settings.callback)
    key = settings.delivery.secret_bytes()
    timeout = settings.delivery.timeout_seconds
    return CallbackDeliverer(
        policy=policy,
        resolver=system_resolver(settings.delivery.dns_cache_seconds),
        sender=sender,
        signer=None if key is None else WebhookSigner(key),
        timeout_seconds=timeout,
    )


async def run_notifier(settings: NotifierSettings) -> None:
    """Runs until SIGTERM/SIGINT, then finishes in-flight deliveries within the grace."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    if settings.callback.allow_private_networks:
        logger.warning(
            "CALLBACK_ALLOW_PRIVATE_NETWORKS is on: callbacks may reach private addresses; "
            "for local development and tests only",
            extra={"action": "start"},
        )
    sender = HttpsSender(
        ssl_context(settings.delivery.ca_file), timeout_seconds=settings.delivery.timeout_seconds
    )
    deliverer = build_deliverer(settings, sender)
    health = GrpcServer(
        bind=settings.grpc_bind,
        registrars=[],
        service_names=[HEALTH_SERVICE_NAME],
        tls=settings.tls,
    )
    channel = open_scheduler_channel(settings.scheduler, tls=settings.tls)
    nc = await connect_nats(settings.nats, name=f"notifier-{settings.notifier_id}")
    try:
        subscription = await subscribe(
            nc.jetstream(), settings.nats, ack_wait_seconds=ACK_WAIT_SECONDS
        )
        consumer = CallbackConsumer(
            subscription=subscription,
            scheduler=GrpcCallbackScheduler(
                channel, timeout_seconds=settings.scheduler.rpc_timeout_seconds
            ),
            deliverer=deliverer,
            options=ConsumerOptions(
                notifier_id=settings.notifier_id,
                concurrency=settings.concurrency,
                fetch_batch=settings.fetch_batch,
                ack_wait_seconds=ACK_WAIT_SECONDS,
                shutdown_grace_seconds=settings.shutdown_grace_seconds,
            ),
        )
        await health.start()
        logger.info(
            "notifier started",
            extra={"action": "start", "notifier_id": settings.notifier_id, "port": health.port},
        )
        consuming = asyncio.create_task(consumer.run(), name="notifier-consumer")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([consuming, stopped], return_when=asyncio.FIRST_COMPLETED)
        logger.info("notifier stopping", extra={"action": "stop"})
        consumer.stop()
        await consuming
        stopped.cancel()
    finally:
        await health.stop(settings.shutdown_grace_seconds)
        await nc.close()
        await channel.close()
        await sender.close()
    logger.info("notifier stopped", extra={"action": "stopped"})

"""The callback use cases: what a notifier claims (payload and token), records, and what the
reaper fails when a notifier is lost."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sinas_common.jsoncodec import dump_json
from sinas_common.timeconv import utcnow
from sinas_scheduler.models import (
    NOTIFIER_LOST_ERROR,
    BatchCallbackRow,
    CallbackClaim,
    CallbackDelivery,
    CallbackOutcome,
    CallbackRow,
    ExecutionStatus,
)
from sinas_scheduler.store import BatchCallbackStore, CallbackStore
from sinas_scheduler.tokens import SCOPE_CALLBACK, TokenService

logger = logging.getLogger(__name__)

WEBHOOK_ID_PREFIX = "msg_"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackLimits:
    claim_timeout_seconds: float
    token_seconds: int


def webhook_id(execution_id: str) -> str:
    """The Standard Webhooks `webhook-id`: stable per execution, so a receiver can dedupe."""
    return f"{WEBHOOK_ID_PREFIX}{execution_id}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def callback_status_of(row: CallbackRow) -> str:
    """success | failure | timeout, as the payload's `status` reports the execution's end."""
    if row.status is ExecutionStatus.COMPLETED:
        return "success"
    if row.timed_out:
        return "timeout"
    return "failure"


def callback_payload(row: CallbackRow) -> dict[str, Any]:
    """The callback body, in upstream's shape with UTC timestamps that carry their offset."""
    status = callback_status_of(row)
    succeeded = status == "success"
    return {
        "execution_id": row.execution_id,
        "trigger_id": row.trigger_id,
        "function": {"namespace": row.namespace, "name": row.name},
        "status": status,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.completed_at),
        "duration_ms": row.duration_ms,
        "result": row.output if succeeded else None,
        "error": None if succeeded else (row.error or f"Execution ended {row.status.value}"),
    }


def batch_callback_payload(row: BatchCallbackRow) -> dict[str, Any]:
    """The batch-summary body: upstream's shape plus `cancelled`, with the final counts."""
    batch = row.batch
    return {
        "batch_id": batch.id,
        "kind": batch.kind,
        "target": {"namespace": batch.namespace, "name": batch.name},
        "status": batch.status.value,
        "total": batch.total,
        "completed": batch.counts.completed,
        "failed": batch.counts.failed,
        "cancelled": batch.counts.cancelled,
        "started_at": _iso(batch.started_at or batch.created_at),
        "finished_at": _iso(batch.finished_at),
        "trigger_id_prefix": batch.trigger_id_prefix,
    }


class CallbackUseCases:
    """What notifiers ask, one storage statement per list; and the stale-claim reaper pass.

    `batch_callbacks` serves batch-summary callbacks; without it none are claimed.
    """

    def __init__(
        self,
        *,
        callbacks: CallbackStore,
        tokens: TokenService,
        limits: CallbackLimits,
        batch_callbacks: BatchCallbackStore | None = None,
    ) -> None:
        self._callbacks = callbacks
        self._batch_callbacks = batch_callbacks
        self._tokens = tokens
        self._limits = limits

    async def claim(self, notifier_id: str, execution_ids: Sequence[str]) -> CallbackClaim:
        """Claims pending callbacks of ended executions; the rest comes back as skipped."""
        rows = await self._callbacks.claim_callbacks(execution_ids)
        now = utcnow()
        lifetime = timedelta(seconds=self._limits.token_seconds)
        deliveries = tuple(
            CallbackDelivery(
                execution_id=row.execution_id,
                callback_url=row.callback_url,
                webhook_id=webhook_id(row.execution_id),
                access_token=self._tokens.mint(
                    user_id=row.user_id,
                    email=row.user_email,
                    now=now,
                    lifetime=lifetime,
                    scope=SCOPE_CALLBACK,
                ),
                payload=dump_json(callback_payload(row)),
            )
            for row in rows
        )
        claimed = {d.execution_id for d in deliveries}
        skipped = tuple(dict.fromkeys(i for i in execution_ids if i not in claimed))
        if deliveries or skipped:
            logger.info(
                "callbacks claimed",
                extra={
                    "action": "claim_callbacks",
                    "notifier_id": notifier_id,
                    "claimed": len(deliveries),
                    "skipped": len(skipped),
                },
            )
        return CallbackClaim(deliveries=deliveries, skipped=skipped)

    async def record(self, outcomes: Sequence[CallbackOutcome]) -> list[str]:
        """Records outcomes of in-flight claims; any other row is left as it is."""
        return await self._callbacks.record_callback_outcomes(outcomes)

    async def claim_batches(self, notifier_id: str, batch_ids: Sequence[str]) -> CallbackClaim:
        """Claims pending summary callbacks of finished batches; the rest comes back skipped."""
        if self._batch_callbacks is None or not batch_ids:
            return CallbackClaim(deliveries=(), skipped=tuple(dict.fromkeys(batch_ids)))
        rows = await self._batch_callbacks.claim_batch_callbacks(batch_ids)
        now = utcnow()
        lifetime = timedelta(seconds=self._limits.token_seconds)
        deliveries = tuple(
            CallbackDelivery(
                execution_id="",
                batch_id=row.batch.id,
                callback_url=row.batch.batch_callback_url or "",
                webhook_id=webhook_id(row.batch.id),
                access_token=self._tokens.mint(
                    user_id=row.batch.user_id,
                    email=row.user_email,
                    now=now,
                    lifetime=lifetime,
                    scope=SCOPE_CALLBACK,
                ),
                payload=dump_json(batch_callback_payload(row)),
            )
            for row in rows
        )
        claimed = {d.batch_id for d in deliveries}
        skipped = tuple(dict.fromkeys(i for i in batch_ids if i not in claimed))
        logger.info(
            "batch callbacks claimed",
            extra={
                "action": "claim_batch_callbacks",
                "notifier_id": notifier_id,
                "claimed": len(deliveries),
                "skipped": len(skipped),
            },
        )
        return CallbackClaim(deliveries=deliveries, skipped=skipped)

    async def record_batches(self, outcomes: Sequence[CallbackOutcome]) -> list[str]:
        """Records outcomes of in-flight batch claims (outcomes carry `batch_id`)."""
        if self._batch_callbacks is None or not outcomes:
            return []
        return await self._batch_callbacks.record_batch_callback_outcomes(outcomes)

    async def reap(self) -> list[str]:
        """Fails claims whose notifier never reported, so no callback stays in flight."""
        failed = await self._callbacks.fail_stale_claims(
            claim_timeout_seconds=self._limits.claim_timeout_seconds, error=NOTIFIER_LOST_ERROR
        )
        for execution_id in failed:
            logger.warning(
                "callback failed: notifier lost",
                extra={"action": "reap_callback", "execution_id": execution_id},
            )
        if self._batch_callbacks is not None:
            failed_batches = await self._batch_callbacks.fail_stale_batch_claims(
                claim_timeout_seconds=self._limits.claim_timeout_seconds,
                error=NOTIFIER_LOST_ERROR,
            )
            for batch_id in failed_batches:
                logger.warning(
                    "batch callback failed: notifier lost",
                    extra={"action": "reap_callback", "batch_id": batch_id},
                )
        return failed

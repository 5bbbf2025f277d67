"""The scheduler port the notifier needs, and its gRPC adapter over NotifierService."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

import grpc

from sinas_common.grpc_client import invoke
from sinas_common.timeconv import to_timestamp
from sinas_notifier.models import CallbackClaim, ClaimResult, DeliveryOutcome, callback_key
from sinas_proto.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CallbackSchedulerPort(Protocol):
    """What the notifier asks of the scheduler; every call takes a whole batch."""

    async def claim_callbacks(
        self, notifier_id: str, execution_ids: Sequence[str], batch_ids: Sequence[str] = ()
    ) -> ClaimResult: ...

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> list[str]:
        """Records outcomes; returns the keys (`CallbackClaim.key`) of those applied."""
        ...


def _outcome_to_proto(outcome: DeliveryOutcome) -> scheduler_pb2.CallbackOutcome:
    message = scheduler_pb2.CallbackOutcome(
        execution_id=outcome.execution_id,
        batch_id=outcome.batch_id,
        sent=outcome.sent,
        error=outcome.error,
        attempted_at=to_timestamp(outcome.attempted_at),
    )
    if outcome.response_code is not None:
        message.response_code = outcome.response_code
    return message


class GrpcCallbackScheduler:
    """CallbackSchedulerPort over the scheduler's NotifierService; every call has a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float = 30.0) -> None:
        self._stub = scheduler_pb2_grpc.NotifierServiceStub(channel)
        self._timeout = timeout_seconds

    async def claim_callbacks(
        self, notifier_id: str, execution_ids: Sequence[str], batch_ids: Sequence[str] = ()
    ) -> ClaimResult:
        request = scheduler_pb2.ClaimCallbacksRequest(
            notifier_id=notifier_id, execution_ids=list(execution_ids), batch_ids=list(batch_ids)
        )
        response: scheduler_pb2.ClaimCallbacksResponse = await invoke(
            self._stub.ClaimCallbacks, request, timeout=self._timeout
        )
        return ClaimResult(
            claims=tuple(
                CallbackClaim(
                    execution_id=d.execution_id,
                    callback_url=d.callback_url,
                    webhook_id=d.webhook_id,
                    access_token=d.access_token,
                    payload_json=d.payload_json,
                    batch_id=d.batch_id,
                )
                for d in response.deliveries
            ),
            skipped_execution_ids=tuple(response.skipped_execution_ids),
            skipped_batch_ids=tuple(response.skipped_batch_ids),
        )

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> list[str]:
        request = scheduler_pb2.RecordCallbackOutcomesRequest(
            outcomes=[_outcome_to_proto(o) for o in outcomes]
        )
        response: scheduler_pb2.RecordCallbackOutcomesResponse = await invoke(
            self._stub.RecordCallbackOutcomes, request, timeout=self._timeout
        )
        return [
            *response.applied_execution_ids,
            *(callback_key("", batch_id) for batch_id in response.applied_batch_ids),
        ]

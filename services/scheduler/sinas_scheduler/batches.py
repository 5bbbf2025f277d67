"""The batch use cases: submit (every input checked before anything is stored), read the
aggregate, list, and drill into the children in batch order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sinas_common.errors import (
    ExecutionDepthExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    SchemaViolation,
)
from sinas_common.ids import uuid7
from sinas_common.jsoncodec import dump_json
from sinas_scheduler import permissions as perms
from sinas_scheduler.idempotency import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    ENDPOINT_EXECUTE_BATCH,
    IdempotencyReservation,
    StoredResponse,
    check_idempotency_key,
    replay,
    request_fingerprint,
)
from sinas_scheduler.metrics import BATCH_SIZE
from sinas_scheduler.models import (
    KIND_FUNCTION,
    Batch,
    BatchPage,
    BatchQuery,
    ExecutionStatus,
    NewBatch,
    Principal,
    batch_trigger_id,
)
from sinas_scheduler.registry import FunctionUseCases, require
from sinas_scheduler.scheduler import MAX_LIST_LIMIT, CallbackUrlCheck
from sinas_scheduler.store import BatchStore, IdempotencyStore
from sinas_scheduler.validation import check_delay, check_trigger_id, input_violations

logger = logging.getLogger(__name__)

BATCH_NOT_FOUND = "Batch not found"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLimits:
    max_batch_size: int
    max_depth: int
    idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitBatchRequest:
    namespace: str
    name: str
    inputs: Sequence[Any]
    # The inputs as the caller encoded them, when it sent JSON (`inputs` is them parsed):
    # stored as sent instead of encoded again.
    inputs_json: Sequence[bytes] = ()
    trigger_id_prefix: str = ""
    delay_seconds: int | None = None
    callback_url: str = ""
    batch_callback_url: str = ""
    idempotency_key: str = ""

    def stored_inputs(self) -> tuple[str, ...]:
        """Each input's JSON text as stored."""
        if self.inputs_json:
            return tuple(raw.decode() for raw in self.inputs_json)
        return tuple(dump_json(value).decode() for value in self.inputs)

    def fingerprint(self) -> str:
        """The request as its idempotency key remembers it, defaults applied."""
        return request_fingerprint(
            ENDPOINT_EXECUTE_BATCH,
            {
                "namespace": self.namespace,
                "name": self.name,
                "inputs": list(self.inputs),
                "trigger_id_prefix": self.trigger_id_prefix,
                "delay_seconds": self.delay_seconds or 0,
                "callback_url": self.callback_url,
                "batch_callback_url": self.batch_callback_url,
            },
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmittedBatch:
    batch_id: str
    execution_ids: tuple[str, ...]


class BatchUseCases:
    def __init__(
        self,
        *,
        batches: BatchStore,
        functions: FunctionUseCases,
        limits: BatchLimits,
        callback_urls: CallbackUrlCheck,
        idempotency: IdempotencyStore,
    ) -> None:
        self._batches = batches
        self._idempotency = idempotency
        self._functions = functions
        self._limits = limits
        self._callback_urls = callback_urls

    async def submit(self, principal: Principal, request: SubmitBatchRequest) -> SubmittedBatch:
        """Checks as a single submit does, then every input; stores all or nothing.

        Raises:
            PayloadTooLarge: more inputs than MAX_BATCH_SIZE.
            SchemaViolation: no inputs, or any input breaks the input schema (each
                violation names `inputs[i]` and the field).
            AlreadyExists: the idempotency key was used for a different request (a retry of
                the same request answers the original batch instead, checking nothing again).
        """
        fingerprint = ""
        if request.idempotency_key:
            check_idempotency_key(request.idempotency_key)
            fingerprint = request.fingerprint()
            held = await self._idempotency.find_response(
                user_id=principal.user.id,
                key=request.idempotency_key,
                ttl_seconds=self._limits.idempotency_ttl_seconds,
            )
            if held is not None:
                return _replayed_batch(held, fingerprint)
        function = await self._functions.lookup(request.namespace, request.name)
        require(
            principal,
            perms.function_permission(function.namespace, function.name, "execute"),
            "Not authorized to execute this function",
        )
        callback_url = await self._checked_url(request.callback_url)
        batch_callback_url = await self._checked_url(request.batch_callback_url)
        depth = 0 if principal.execution_depth is None else principal.execution_depth + 1
        if self._limits.max_depth > 0 and depth > self._limits.max_depth:
            raise ExecutionDepthExceeded(
                f"Maximum execution depth ({self._limits.max_depth}) exceeded"
            )
        size = len(request.inputs)
        if size > self._limits.max_batch_size:
            # A plain message, as upstream's string detail, naming the limit.
            raise PayloadTooLarge(
                f"batch size {size} exceeds MAX_BATCH_SIZE={self._limits.max_batch_size}"
            )
        if size == 0:
            raise SchemaViolation(
                "inputs must hold at least one item",
                violations=[FieldViolation(field="inputs", description="at least 1 item")],
            )
        prefix = request.trigger_id_prefix or None
        # The longest trigger id is the last child's.
        check_trigger_id(batch_trigger_id(prefix, size - 1))
        delay = request.delay_seconds or 0
        check_delay(delay)
        violations = [
            violation
            for index, item in enumerate(request.inputs)
            for violation in input_violations(
                function.spec.input_schema, item, root=f"inputs[{index}]"
            )
        ]
        if violations:
            raise SchemaViolation("Input validation failed", violations=violations)
        new = NewBatch(
            id=uuid7(),
            user_id=principal.user.id,
            kind=KIND_FUNCTION,
            namespace=function.namespace,
            name=function.name,
            function_id=function.id,
            function_version=function.version,
            trigger_id_prefix=prefix,
            delay_seconds=delay,
            depth=depth,
            parent_execution_id=principal.execution_id,
            callback_url=callback_url,
            batch_callback_url=batch_callback_url,
            execution_ids=tuple(uuid7() for _ in range(size)),
            inputs_json=request.stored_inputs(),
        )
        reservation = (
            IdempotencyReservation(
                user_id=principal.user.id,
                key=request.idempotency_key,
                fingerprint=fingerprint,
                response={
                    "batch_id": new.id,
                    "execution_ids": list(new.execution_ids),
                    "total": size,
                },
                ttl_seconds=self._limits.idempotency_ttl_seconds,
            )
            if request.idempotency_key
            else None
        )
        held = await self._batches.insert_batch(new, idempotency=reservation)
        if held is not None:
            # A concurrent request with the same key stored first; this one stored nothing.
            return _replayed_batch(held, fingerprint)
        BATCH_SIZE.observe(size)
        logger.info(
            "batch submitted",
            extra={"action": "submit_batch", "batch_id": new.id, "total": size},
        )
        return SubmittedBatch(batch_id=new.id, execution_ids=new.execution_ids)

    async def _checked_url(self, url: str) -> str | None:
        # An empty URL means no callback, as upstream.
        return await self._callback_urls.check(url) if url else None

    async def get(self, principal: Principal, batch_id: str) -> Batch:
        """Someone else's batch is not found, never forbidden, so ids can't be probed."""
        batch = await self._batches.get_batch(batch_id)
        if batch is None or not _visible(principal, batch.user_id):
            raise NotFound(BATCH_NOT_FOUND)
        return batch

    async def list(self, principal: Principal, *, limit: int, offset: int) -> list[Batch]:
        """The caller's batches (everyone's with executions.read:all), newest first."""
        check_page(limit, offset)
        reads_all = perms.has_permission(principal.permissions, perms.EXECUTIONS_READ_ALL)
        return await self._batches.list_batches(
            BatchQuery(user_id=None if reads_all else principal.user.id, limit=limit, offset=offset)
        )

    async def list_executions(
        self,
        principal: Principal,
        batch_id: str,
        *,
        status: ExecutionStatus | None,
        limit: int,
        offset: int,
    ) -> BatchPage:
        """A page of the batch's children in batch order, with the total and next offset."""
        check_page(limit, offset)
        await self.get(principal, batch_id)
        return await self._batches.list_batch_executions(
            batch_id, status=status, limit=limit, offset=offset
        )


def _replayed_batch(held: StoredResponse, fingerprint: str) -> SubmittedBatch:
    response = replay(held, fingerprint)
    batch_id = str(response["batch_id"])
    logger.info(
        "idempotent batch submit replayed",
        extra={"action": "submit_batch", "batch_id": batch_id, "replayed": True},
    )
    return SubmittedBatch(
        batch_id=batch_id, execution_ids=tuple(str(i) for i in response["execution_ids"])
    )


def _visible(principal: Principal, owner_id: str) -> bool:
    return owner_id == principal.user.id or perms.has_permission(
        principal.permissions, perms.EXECUTIONS_READ_ALL
    )


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(
            f"limit must be between 1 and {MAX_LIST_LIMIT}",
            violations=[FieldViolation(field="limit", description=f"1 to {MAX_LIST_LIMIT}")],
        )
    if offset < 0:
        raise InvalidArgument(
            "offset must not be negative",
            violations=[FieldViolation(field="offset", description="0 or more")],
        )

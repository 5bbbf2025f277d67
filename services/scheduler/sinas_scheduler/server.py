"""gRPC servicers: translate protobuf to domain, authenticate, make one use-case call."""

from __future__ import annotations

from typing import Any, TypeAlias

from sinas_common.errors import FieldViolation, PayloadTooLarge, SinasError
from sinas_common.jsoncodec import dump_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler import agent_convert, convert
from sinas_scheduler.agent_runs import AgentRunUseCases
from sinas_scheduler.batches import BatchUseCases, SubmitBatchRequest
from sinas_scheduler.callbacks import CallbackUseCases
from sinas_scheduler.identity import Access, Authenticator
from sinas_scheduler.interaction import InteractionUseCases
from sinas_scheduler.models import ExecutionQuery, Principal
from sinas_scheduler.registry import FunctionUseCases, IdentityUseCases
from sinas_scheduler.scheduler import ExecutionUseCases, SubmitRequest, WorkerUseCases
from sinas_scheduler.validation import parse_json_field

Context: TypeAlias = Any  # grpc ships no type information; the stubs accept any context

SERVICE_NAMES = (
    "sinas.scheduler.v1.IdentityService",
    "sinas.scheduler.v1.FunctionService",
    "sinas.scheduler.v1.ExecutionService",
    "sinas.scheduler.v1.WorkerService",
    "sinas.scheduler.v1.NotifierService",
    "sinas.scheduler.v1.BatchService",
    "sinas.scheduler.v1.AgentService",
)


# Coalesced submits answered by one SubmitExecutions call, at most.
MAX_SUBMITS_PER_CALL = 1000


async def caller(
    auth: Authenticator, context: Context, access: Access = Access.MANAGEMENT
) -> Principal:
    """The user calling, authenticated for `access`: by default a management call, which a
    run's execution token can't make (see `identity.Access`)."""
    return await auth.authenticate(context.invocation_metadata() or (), access=access)


async def runtime_caller(auth: Authenticator, context: Context) -> Principal:
    """The user calling the runtime API, which a run's own execution token may call too."""
    return await caller(auth, context, Access.RUNTIME)


def submit_request(request: pb.SubmitExecutionRequest) -> SubmitRequest:
    return SubmitRequest(
        namespace=request.namespace,
        name=request.name,
        input=parse_json_field("input", request.input_json, empty={}),
        trigger_id=request.trigger_id,
        delay_seconds=request.delay_seconds if request.HasField("delay_seconds") else None,
        callback_url=request.callback_url,
        idempotency_key=request.idempotency_key,
    )


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, auth: Authenticator, identity: IdentityUseCases) -> None:
        self._auth = auth
        self._identity = identity

    async def GetMe(self, request: pb.GetMeRequest, context: Context) -> pb.GetMeResponse:
        # The one RPC a callback token works on: it proves who the job ran for, nothing more.
        principal = await caller(self._auth, context, Access.ME)
        return pb.GetMeResponse(user=convert.user_to_proto(principal.user))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=dump_json(self._identity.jwks()))

    async def CreateRole(
        self, request: pb.CreateRoleRequest, context: Context
    ) -> pb.CreateRoleResponse:
        principal = await caller(self._auth, context)
        role = await self._identity.create_role(principal, request.name, list(request.permissions))
        return pb.CreateRoleResponse(role=convert.role_to_proto(role))

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Context
    ) -> pb.CreateUserResponse:
        principal = await caller(self._auth, context)
        user = await self._identity.create_user(principal, request.email, list(request.roles))
        return pb.CreateUserResponse(user=convert.user_to_proto(user))

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        principal = await caller(self._auth, context)
        issued = await self._identity.create_api_key(
            principal, request.name, request.user_id, expires_at=convert.key_expiry(request)
        )
        return convert.api_key_to_proto(issued)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        principal = await caller(self._auth, context)
        records = await self._identity.list_api_keys(principal, request.user_id)
        return pb.ListApiKeysResponse(
            api_keys=[convert.api_key_record_to_proto(record) for record in records]
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        principal = await caller(self._auth, context)
        revoked = await self._identity.revoke_api_key(principal, request.id)
        return pb.RevokeApiKeyResponse(api_key=convert.api_key_record_to_proto(revoked))


class FunctionServicer(pb_grpc.FunctionServiceServicer):
    def __init__(self, auth: Authenticator, functions: FunctionUseCases) -> None:
        self._auth = auth
        self._functions = functions

    async def CreateFunction(
        self, request: pb.CreateFunctionRequest, context: Context
    ) -> pb.CreateFunctionResponse:
        principal = await caller(self._auth, context)
        spec = convert.spec_from_create(request, self._functions.default_timeout_seconds)
        function = await self._functions.create(
            principal, namespace=request.namespace, name=request.name, spec=spec
        )
        return pb.CreateFunctionResponse(function=convert.function_to_proto(function))

    async def GetFunction(
        self, request: pb.GetFunctionRequest, context: Context
    ) -> pb.GetFunctionResponse:
        principal = await caller(self._auth, context)
        function = await self._functions.get(principal, request.namespace, request.name)
        return pb.GetFunctionResponse(function=convert.function_to_proto(function))

    async def UpdateFunction(
        self, request: pb.UpdateFunctionRequest, context: Context
    ) -> pb.UpdateFunctionResponse:
        principal = await caller(self._auth, context)
        function = await self._functions.update(
            principal, request.namespace, request.name, convert.changes_from_update(request)
        )
        return pb.UpdateFunctionResponse(function=convert.function_to_proto(function))

    async def DeleteFunction(
        self, request: pb.DeleteFunctionRequest, context: Context
    ) -> pb.DeleteFunctionResponse:
        principal = await caller(self._auth, context)
        await self._functions.delete(principal, request.namespace, request.name)
        return pb.DeleteFunctionResponse()


class ExecutionServicer(pb_grpc.ExecutionServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        executions: ExecutionUseCases,
        interaction: InteractionUseCases,
    ) -> None:
        self._auth = auth
        self._executions = executions
        self._interaction = interaction

    async def SubmitExecution(
        self, request: pb.SubmitExecutionRequest, context: Context
    ) -> pb.SubmitExecutionResponse:
        principal = await runtime_caller(self._auth, context)
        execution_id = await self._executions.submit(principal, submit_request(request))
        return pb.SubmitExecutionResponse(execution_id=execution_id)

    async def SubmitExecutions(
        self, request: pb.SubmitExecutionsRequest, context: Context
    ) -> pb.SubmitExecutionsResponse:
        if len(request.requests) > MAX_SUBMITS_PER_CALL:
            raise PayloadTooLarge(
                f"At most {MAX_SUBMITS_PER_CALL} submits per call",
                violations=[
                    FieldViolation(field="requests", description=f"{len(request.requests)} submits")
                ],
            )
        principal = await runtime_caller(self._auth, context)
        outcomes: list[str | SinasError] = [SinasError()] * len(request.requests)
        parsed: list[tuple[int, SubmitRequest]] = []
        for index, one in enumerate(request.requests):
            try:
                parsed.append((index, submit_request(one)))
            except SinasError as exc:
                outcomes[index] = exc
        stored = await self._executions.submit_many(principal, [p for _, p in parsed])
        for (index, _), outcome in zip(parsed, stored, strict=True):
            outcomes[index] = outcome
        return pb.SubmitExecutionsResponse(
            results=[
                pb.SubmitExecutionResult(execution_id=outcome)
                if isinstance(outcome, str)
                else pb.SubmitExecutionResult(error_status=outcome.to_status().SerializeToString())
                for outcome in outcomes
            ]
        )

    async def WaitExecution(
        self, request: pb.WaitExecutionRequest, context: Context
    ) -> pb.WaitExecutionResponse:
        principal = await runtime_caller(self._auth, context)
        execution, finished = await self._executions.wait(
            principal, request.execution_id, request.timeout_seconds
        )
        return pb.WaitExecutionResponse(
            execution=convert.execution_to_proto(execution), finished=finished
        )

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: Context
    ) -> pb.GetExecutionResponse:
        principal = await runtime_caller(self._auth, context)
        execution = await self._executions.get(principal, request.execution_id)
        return pb.GetExecutionResponse(execution=convert.execution_to_proto(execution))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: Context
    ) -> pb.ListExecutionsResponse:
        principal = await runtime_caller(self._auth, context)
        query = ExecutionQuery(
            user_id=principal.user.id,
            function_name=request.function_name or None,
            status=convert.status_from_proto(request.status, "status"),
            trigger_id=request.trigger_id or None,
            batch_id=request.batch_id or None,
            limit=request.limit or 100,
            offset=request.offset,
        )
        found = await self._executions.list(principal, query)
        return pb.ListExecutionsResponse(
            executions=[convert.execution_to_proto(execution) for execution in found]
        )

    async def ContinueExecution(
        self, request: pb.ContinueExecutionRequest, context: Context
    ) -> pb.ContinueExecutionResponse:
        principal = await runtime_caller(self._auth, context)
        value = parse_json_field("input", request.input_json, empty=None)
        execution = await self._interaction.continue_execution(
            principal, request.execution_id, value
        )
        return pb.ContinueExecutionResponse(execution=convert.execution_to_proto(execution))

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: Context
    ) -> pb.CancelExecutionResponse:
        principal = await runtime_caller(self._auth, context)
        execution, cancelled = await self._interaction.cancel_execution(
            principal, request.execution_id
        )
        return pb.CancelExecutionResponse(
            execution=convert.execution_to_proto(execution), cancelled=cancelled
        )


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """For executors inside the cluster; takes no user credential. Every call after a claim
    acts only on the attempts whose claim recorded the caller's `worker_id`."""

    def __init__(
        self,
        worker: WorkerUseCases,
        interaction: InteractionUseCases,
        agent_runs: AgentRunUseCases,
    ) -> None:
        self._worker = worker
        self._interaction = interaction
        self._agent_runs = agent_runs

    async def ClaimExecutions(
        self, request: pb.ClaimExecutionsRequest, context: Context
    ) -> pb.ClaimExecutionsResponse:
        result = await self._worker.claim(request.worker_id, convert.claim_items(request))
        return convert.claim_result_to_proto(result)

    async def ReleaseExecutions(
        self, request: pb.ReleaseExecutionsRequest, context: Context
    ) -> pb.ReleaseExecutionsResponse:
        released = await self._worker.release(request.worker_id, convert.released_attempts(request))
        return pb.ReleaseExecutionsResponse(released_execution_ids=released)

    async def CompleteExecutions(
        self, request: pb.CompleteExecutionsRequest, context: Context
    ) -> pb.CompleteExecutionsResponse:
        applied = await self._worker.complete(
            request.worker_id, convert.outcomes_from_proto(request.outcomes)
        )
        return pb.CompleteExecutionsResponse(applied_execution_ids=applied)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        news = await self._interaction.heartbeat(request.worker_id, convert.held_attempts(request))
        return convert.heartbeat_news_to_proto(news)

    async def ReportAwaitingInput(
        self, request: pb.ReportAwaitingInputRequest, context: Context
    ) -> pb.ReportAwaitingInputResponse:
        paused = await self._interaction.report_awaiting_input(
            request.worker_id, convert.awaiting_input_from_proto(request)
        )
        return pb.ReportAwaitingInputResponse(paused_execution_ids=paused)

    async def SubmitToolCalls(
        self, request: pb.SubmitToolCallsRequest, context: Context
    ) -> pb.SubmitToolCallsResponse:
        submissions = await self._agent_runs.submit_tool_calls(
            request.execution_id,
            request.attempt,
            agent_convert.tool_calls_from_proto(request),
            worker_id=request.worker_id,
        )
        return agent_convert.submissions_to_proto(submissions)


class NotifierServicer(pb_grpc.NotifierServiceServicer):
    """For notifiers inside the cluster; takes no user credential."""

    def __init__(self, callbacks: CallbackUseCases) -> None:
        self._callbacks = callbacks

    async def ClaimCallbacks(
        self, request: pb.ClaimCallbacksRequest, context: Context
    ) -> pb.ClaimCallbacksResponse:
        claim = await self._callbacks.claim(request.notifier_id, list(request.execution_ids))
        batch_claim = await self._callbacks.claim_batches(
            request.notifier_id, list(request.batch_ids)
        )
        return convert.callback_claim_to_proto(claim, batch_claim)

    async def RecordCallbackOutcomes(
        self, request: pb.RecordCallbackOutcomesRequest, context: Context
    ) -> pb.RecordCallbackOutcomesResponse:
        outcomes = convert.callback_outcomes_from_proto(request)
        applied = await self._callbacks.record([o for o in outcomes if not o.batch_id])
        applied_batches = await self._callbacks.record_batches([o for o in outcomes if o.batch_id])
        return pb.RecordCallbackOutcomesResponse(
            applied_execution_ids=applied, applied_batch_ids=applied_batches
        )


class BatchServicer(pb_grpc.BatchServiceServicer):
    """Batches; cancel lives with the cancel use cases (`CancelBatch`)."""

    def __init__(
        self, auth: Authenticator, batches: BatchUseCases, interaction: InteractionUseCases
    ) -> None:
        self._auth = auth
        self._batches = batches
        self._interaction = interaction

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: Context
    ) -> pb.CancelBatchResponse:
        principal = await runtime_caller(self._auth, context)
        result = await self._interaction.cancel_batch(principal, request.batch_id)
        return pb.CancelBatchResponse(
            batch_id=result.batch_id,
            status=result.status,
            cancelled_children=result.cancelled_children,
        )

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context
    ) -> pb.SubmitBatchResponse:
        principal = await runtime_caller(self._auth, context)
        submitted = await self._batches.submit(
            principal,
            SubmitBatchRequest(
                namespace=request.namespace,
                name=request.name,
                inputs=[
                    parse_json_field(f"inputs[{index}]", raw, empty={})
                    for index, raw in enumerate(request.inputs_json)
                ],
                inputs_json=[raw or b"{}" for raw in request.inputs_json],
                trigger_id_prefix=request.trigger_id_prefix,
                delay_seconds=(
                    request.delay_seconds if request.HasField("delay_seconds") else None
                ),
                callback_url=request.callback_url,
                batch_callback_url=request.batch_callback_url,
                idempotency_key=request.idempotency_key,
            ),
        )
        return pb.SubmitBatchResponse(
            batch_id=submitted.batch_id,
            execution_ids=list(submitted.execution_ids),
            total=len(submitted.execution_ids),
        )

    async def GetBatch(self, request: pb.GetBatchRequest, context: Context) -> pb.GetBatchResponse:
        principal = await runtime_caller(self._auth, context)
        batch = await self._batches.get(principal, request.batch_id)
        return pb.GetBatchResponse(batch=convert.batch_to_proto(batch))

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: Context
    ) -> pb.ListBatchesResponse:
        principal = await runtime_caller(self._auth, context)
        found = await self._batches.list(
            principal, limit=request.limit or 100, offset=request.offset
        )
        return pb.ListBatchesResponse(batches=[convert.batch_to_proto(batch) for batch in found])

    async def ListBatchExecutions(
        self, request: pb.ListBatchExecutionsRequest, context: Context
    ) -> pb.ListBatchExecutionsResponse:
        principal = await runtime_caller(self._auth, context)
        page = await self._batches.list_executions(
            principal,
            request.batch_id,
            status=convert.status_from_proto(request.status, "status"),
            limit=request.limit or 100,
            offset=request.offset,
        )
        return convert.batch_page_to_proto(page)

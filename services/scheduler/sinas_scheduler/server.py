"""gRPC servicers: translate protobuf to domain, authenticate, make one use-case call."""

from __future__ import annotations

from typing import Any, TypeAlias

from sinas_common.jsoncodec import dump_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler import agent_convert, convert
from sinas_scheduler.agent_runs import AgentRunUseCases
from sinas_scheduler.agents import AgentInput, AgentUseCases, SubmitAgentRequest
from sinas_scheduler.batches import BatchUseCases, SubmitBatchRequest
from sinas_scheduler.callbacks import CallbackUseCases
from sinas_scheduler.identity import ME_SCOPES, Authenticator
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


async def _caller(auth: Authenticator, context: Context) -> Principal:
    return await auth.authenticate(context.invocation_metadata() or ())


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, auth: Authenticator, identity: IdentityUseCases) -> None:
        self._auth = auth
        self._identity = identity

    async def GetMe(self, request: pb.GetMeRequest, context: Context) -> pb.GetMeResponse:
        # The one RPC a callback token works on: it proves who the job ran for, nothing more.
        principal = await self._auth.authenticate(
            context.invocation_metadata() or (), scopes=ME_SCOPES
        )
        return pb.GetMeResponse(user=convert.user_to_proto(principal.user))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(jwks_json=dump_json(self._identity.jwks()))

    async def CreateRole(
        self, request: pb.CreateRoleRequest, context: Context
    ) -> pb.CreateRoleResponse:
        principal = await _caller(self._auth, context)
        role = await self._identity.create_role(principal, request.name, list(request.permissions))
        return pb.CreateRoleResponse(role=convert.role_to_proto(role))

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Context
    ) -> pb.CreateUserResponse:
        principal = await _caller(self._auth, context)
        user = await self._identity.create_user(principal, request.email, list(request.roles))
        return pb.CreateUserResponse(user=convert.user_to_proto(user))

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        principal = await _caller(self._auth, context)
        issued = await self._identity.create_api_key(principal, request.name, request.user_id)
        return convert.api_key_to_proto(issued)


class FunctionServicer(pb_grpc.FunctionServiceServicer):
    def __init__(self, auth: Authenticator, functions: FunctionUseCases) -> None:
        self._auth = auth
        self._functions = functions

    async def CreateFunction(
        self, request: pb.CreateFunctionRequest, context: Context
    ) -> pb.CreateFunctionResponse:
        principal = await _caller(self._auth, context)
        spec = convert.spec_from_create(request, self._functions.default_timeout_seconds)
        function = await self._functions.create(
            principal, namespace=request.namespace, name=request.name, spec=spec
        )
        return pb.CreateFunctionResponse(function=convert.function_to_proto(function))

    async def GetFunction(
        self, request: pb.GetFunctionRequest, context: Context
    ) -> pb.GetFunctionResponse:
        principal = await _caller(self._auth, context)
        function = await self._functions.get(principal, request.namespace, request.name)
        return pb.GetFunctionResponse(function=convert.function_to_proto(function))

    async def UpdateFunction(
        self, request: pb.UpdateFunctionRequest, context: Context
    ) -> pb.UpdateFunctionResponse:
        principal = await _caller(self._auth, context)
        function = await self._functions.update(
            principal, request.namespace, request.name, convert.changes_from_update(request)
        )
        return pb.UpdateFunctionResponse(function=convert.function_to_proto(function))

    async def DeleteFunction(
        self, request: pb.DeleteFunctionRequest, context: Context
    ) -> pb.DeleteFunctionResponse:
        principal = await _caller(self._auth, context)
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
        principal = await _caller(self._auth, context)
        execution_id = await self._executions.submit(
            principal,
            SubmitRequest(
                namespace=request.namespace,
                name=request.name,
                input=parse_json_field("input", request.input_json, empty={}),
                trigger_id=request.trigger_id,
                delay_seconds=(
                    request.delay_seconds if request.HasField("delay_seconds") else None
                ),
                callback_url=request.callback_url,
                idempotency_key=request.idempotency_key,
            ),
        )
        return pb.SubmitExecutionResponse(execution_id=execution_id)

    async def WaitExecution(
        self, request: pb.WaitExecutionRequest, context: Context
    ) -> pb.WaitExecutionResponse:
        principal = await _caller(self._auth, context)
        execution, finished = await self._executions.wait(
            principal, request.execution_id, request.timeout_seconds
        )
        return pb.WaitExecutionResponse(
            execution=convert.execution_to_proto(execution), finished=finished
        )

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: Context
    ) -> pb.GetExecutionResponse:
        principal = await _caller(self._auth, context)
        execution = await self._executions.get(principal, request.execution_id)
        return pb.GetExecutionResponse(execution=convert.execution_to_proto(execution))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: Context
    ) -> pb.ListExecutionsResponse:
        principal = await _caller(self._auth, context)
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
        principal = await _caller(self._auth, context)
        value = parse_json_field("input", request.input_json, empty=None)
        execution = await self._interaction.continue_execution(
            principal, request.execution_id, value
        )
        return pb.ContinueExecutionResponse(execution=convert.execution_to_proto(execution))

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: Context
    ) -> pb.CancelExecutionResponse:
        principal = await _caller(self._auth, context)
        execution, cancelled = await self._interaction.cancel_execution(
            principal, request.execution_id
        )
        return pb.CancelExecutionResponse(
            execution=convert.execution_to_proto(execution), cancelled=cancelled
        )


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """For executors inside the cluster; takes no user credential."""

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

    async def CompleteExecutions(
        self, request: pb.CompleteExecutionsRequest, context: Context
    ) -> pb.CompleteExecutionsResponse:
        applied = await self._worker.complete(convert.outcomes_from_proto(request.outcomes))
        return pb.CompleteExecutionsResponse(applied_execution_ids=applied)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        news = await self._interaction.heartbeat(request.worker_id, list(request.execution_ids))
        return convert.heartbeat_news_to_proto(news)

    async def ReportAwaitingInput(
        self, request: pb.ReportAwaitingInputRequest, context: Context
    ) -> pb.ReportAwaitingInputResponse:
        paused = await self._interaction.report_awaiting_input(
            convert.awaiting_input_from_proto(request)
        )
        return pb.ReportAwaitingInputResponse(paused_execution_ids=paused)

    async def SubmitToolCalls(
        self, request: pb.SubmitToolCallsRequest, context: Context
    ) -> pb.SubmitToolCallsResponse:
        submissions = await self._agent_runs.submit_tool_calls(
            request.execution_id, request.attempt, agent_convert.tool_calls_from_proto(request)
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
        principal = await _caller(self._auth, context)
        result = await self._interaction.cancel_batch(principal, request.batch_id)
        return pb.CancelBatchResponse(
            batch_id=result.batch_id,
            status=result.status,
            cancelled_children=result.cancelled_children,
        )

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context
    ) -> pb.SubmitBatchResponse:
        principal = await _caller(self._auth, context)
        submitted = await self._batches.submit(
            principal,
            SubmitBatchRequest(
                namespace=request.namespace,
                name=request.name,
                inputs=[
                    parse_json_field(f"inputs[{index}]", raw, empty={})
                    for index, raw in enumerate(request.inputs_json)
                ],
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
        principal = await _caller(self._auth, context)
        batch = await self._batches.get(principal, request.batch_id)
        return pb.GetBatchResponse(batch=convert.batch_to_proto(batch))

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: Context
    ) -> pb.ListBatchesResponse:
        principal = await _caller(self._auth, context)
        found = await self._batches.list(
            principal, limit=request.limit or 100, offset=request.offset
        )
        return pb.ListBatchesResponse(batches=[convert.batch_to_proto(batch) for batch in found])

    async def ListBatchExecutions(
        self, request: pb.ListBatchExecutionsRequest, context: Context
    ) -> pb.ListBatchExecutionsResponse:
        principal = await _caller(self._auth, context)
        page = await self._batches.list_executions(
            principal,
            request.batch_id,
            status=convert.status_from_proto(request.status, "status"),
            limit=request.limit or 100,
            offset=request.offset,
        )
        return convert.batch_page_to_proto(page)


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, auth: Authenticator, agents: AgentUseCases) -> None:
        self._auth = auth
        self._agents = agents

    async def CreateLlmProvider(
        self, request: pb.CreateLlmProviderRequest, context: Context
    ) -> pb.CreateLlmProviderResponse:
        principal = await _caller(self._auth, context)
        provider = await self._agents.create_provider(
            principal,
            name=request.name,
            base_url=request.base_url,
            api_key=request.api_key,
            default_model=request.default_model,
        )
        return pb.CreateLlmProviderResponse(provider=agent_convert.provider_to_proto(provider))

    async def CreateAgent(
        self, request: pb.CreateAgentRequest, context: Context
    ) -> pb.CreateAgentResponse:
        principal = await _caller(self._auth, context)
        agent = await self._agents.create_agent(
            principal,
            namespace=request.namespace,
            name=request.name,
            spec=agent_convert.spec_from_create(request, self._agents.default_max_turns),
        )
        return pb.CreateAgentResponse(agent=agent_convert.agent_to_proto(agent))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        principal = await _caller(self._auth, context)
        agent = await self._agents.get_agent(principal, request.namespace, request.name)
        return pb.GetAgentResponse(agent=agent_convert.agent_to_proto(agent))

    async def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: Context
    ) -> pb.UpdateAgentResponse:
        principal = await _caller(self._auth, context)
        agent = await self._agents.update_agent(
            principal,
            request.namespace,
            request.name,
            agent_convert.changes_from_update(request),
        )
        return pb.UpdateAgentResponse(agent=agent_convert.agent_to_proto(agent))

    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: Context
    ) -> pb.DeleteAgentResponse:
        principal = await _caller(self._auth, context)
        await self._agents.delete_agent(principal, request.namespace, request.name)
        return pb.DeleteAgentResponse()

    async def SubmitAgentRun(
        self, request: pb.SubmitAgentRunRequest, context: Context
    ) -> pb.SubmitAgentRunResponse:
        principal = await _caller(self._auth, context)
        submitted = await self._agents.submit(
            principal,
            SubmitAgentRequest(
                namespace=request.namespace,
                name=request.name,
                inputs=[
                    AgentInput(
                        input_variables=parse_json_field(
                            "input_variables", request.input_variables_json, empty={}
                        ),
                        message=request.message,
                    )
                ],
                trigger_id=request.trigger_id,
                delay_seconds=(
                    request.delay_seconds if request.HasField("delay_seconds") else None
                ),
                callback_url=request.callback_url,
                idempotency_key=request.idempotency_key,
            ),
        )
        return pb.SubmitAgentRunResponse(
            execution_id=submitted.execution_ids[0], chat_id=submitted.chat_ids[0]
        )

    async def SubmitAgentBatch(
        self, request: pb.SubmitAgentBatchRequest, context: Context
    ) -> pb.SubmitAgentBatchResponse:
        principal = await _caller(self._auth, context)
        submitted = await self._agents.submit(
            principal,
            SubmitAgentRequest(
                namespace=request.namespace,
                name=request.name,
                inputs=[
                    AgentInput(
                        input_variables=parse_json_field(
                            f"inputs[{index}].input_variables",
                            item.input_variables_json,
                            empty={},
                        ),
                        message=item.message,
                    )
                    for index, item in enumerate(request.inputs)
                ],
                batch=True,
                trigger_id=request.trigger_id_prefix,
                delay_seconds=(
                    request.delay_seconds if request.HasField("delay_seconds") else None
                ),
                callback_url=request.callback_url,
                batch_callback_url=request.batch_callback_url,
                idempotency_key=request.idempotency_key,
            ),
        )
        return pb.SubmitAgentBatchResponse(
            batch_id=submitted.batch_id,
            execution_ids=list(submitted.execution_ids),
            chat_ids=list(submitted.chat_ids),
            total=len(submitted.execution_ids),
        )

    async def GetChat(self, request: pb.GetChatRequest, context: Context) -> pb.GetChatResponse:
        principal = await _caller(self._auth, context)
        chat = await self._agents.get_chat(principal, request.chat_id)
        return pb.GetChatResponse(chat=agent_convert.chat_to_proto(chat))

    async def ListChats(
        self, request: pb.ListChatsRequest, context: Context
    ) -> pb.ListChatsResponse:
        principal = await _caller(self._auth, context)
        chats = await self._agents.list_chats(
            principal, limit=request.limit or 100, offset=request.offset
        )
        return pb.ListChatsResponse(chats=[agent_convert.chat_to_proto(chat) for chat in chats])

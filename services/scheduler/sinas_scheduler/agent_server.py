"""gRPC servicer of agents: translate protobuf to domain, authenticate, one use-case call."""

from __future__ import annotations

from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler import agent_convert
from sinas_scheduler.agents import AgentInput, AgentUseCases, SubmitAgentRequest
from sinas_scheduler.identity import Authenticator
from sinas_scheduler.server import Context, caller, runtime_caller
from sinas_scheduler.validation import parse_json_field


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, auth: Authenticator, agents: AgentUseCases) -> None:
        self._auth = auth
        self._agents = agents

    async def CreateLlmProvider(
        self, request: pb.CreateLlmProviderRequest, context: Context
    ) -> pb.CreateLlmProviderResponse:
        principal = await caller(self._auth, context)
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
        principal = await caller(self._auth, context)
        agent = await self._agents.create_agent(
            principal,
            namespace=request.namespace,
            name=request.name,
            spec=agent_convert.spec_from_create(request, self._agents.default_max_turns),
        )
        return pb.CreateAgentResponse(agent=agent_convert.agent_to_proto(agent))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        principal = await caller(self._auth, context)
        agent = await self._agents.get_agent(principal, request.namespace, request.name)
        return pb.GetAgentResponse(agent=agent_convert.agent_to_proto(agent))

    async def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: Context
    ) -> pb.UpdateAgentResponse:
        principal = await caller(self._auth, context)
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
        principal = await caller(self._auth, context)
        await self._agents.delete_agent(principal, request.namespace, request.name)
        return pb.DeleteAgentResponse()

    async def SubmitAgentRun(
        self, request: pb.SubmitAgentRunRequest, context: Context
    ) -> pb.SubmitAgentRunResponse:
        principal = await runtime_caller(self._auth, context)
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
        principal = await runtime_caller(self._auth, context)
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
        principal = await runtime_caller(self._auth, context)
        chat = await self._agents.get_chat(principal, request.chat_id)
        return pb.GetChatResponse(chat=agent_convert.chat_to_proto(chat))

    async def ListChats(
        self, request: pb.ListChatsRequest, context: Context
    ) -> pb.ListChatsResponse:
        principal = await runtime_caller(self._auth, context)
        chats = await self._agents.list_chats(
            principal, limit=request.limit or 100, offset=request.offset
        )
        return pb.ListChatsResponse(chats=[agent_convert.chat_to_proto(chat) for chat in chats])

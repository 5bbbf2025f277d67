"""The gateway's one seam to the scheduler: a Protocol and its gRPC adapter.

Every call carries the REST caller's credential as gRPC metadata and a deadline, and every
failure comes back as the SinasError the scheduler raised (`sinas_common.grpc_client.invoke`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sinas_common.grpc_client import invoke
from sinas_gateway.submit_coalescer import SubmitCoalescer
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

HEALTH_CHECK_TIMEOUT_SECONDS = 5.0
DEFAULT_SUBMIT_CALLS_IN_FLIGHT = 1
# Submits one coalesced call carries at most (the scheduler takes up to 1,000).
MAX_SUBMITS_PER_CALL = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The caller's credential headers, forwarded to the scheduler exactly as sent."""

    authorization: str | None = None
    api_key: str | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        if self.authorization is not None:
            pairs.append(("authorization", self.authorization))
        if self.api_key is not None:
            pairs.append(("x-api-key", self.api_key))
        return tuple(pairs)


ANONYMOUS = Credentials()


class SchedulerClient(Protocol):
    """What the gateway asks of the scheduler; each call acts as the given caller."""

    async def get_me(self, request: pb.GetMeRequest, caller: Credentials) -> pb.GetMeResponse: ...

    async def get_jwks(self, request: pb.GetJwksRequest) -> pb.GetJwksResponse: ...

    async def create_role(
        self, request: pb.CreateRoleRequest, caller: Credentials
    ) -> pb.CreateRoleResponse: ...

    async def create_user(
        self, request: pb.CreateUserRequest, caller: Credentials
    ) -> pb.CreateUserResponse: ...

    async def create_api_key(
        self, request: pb.CreateApiKeyRequest, caller: Credentials
    ) -> pb.CreateApiKeyResponse: ...

    async def list_api_keys(
        self, request: pb.ListApiKeysRequest, caller: Credentials
    ) -> pb.ListApiKeysResponse: ...

    async def revoke_api_key(
        self, request: pb.RevokeApiKeyRequest, caller: Credentials
    ) -> pb.RevokeApiKeyResponse: ...

    async def create_function(
        self, request: pb.CreateFunctionRequest, caller: Credentials
    ) -> pb.CreateFunctionResponse: ...

    async def get_function(
        self, request: pb.GetFunctionRequest, caller: Credentials
    ) -> pb.GetFunctionResponse: ...

    async def update_function(
        self, request: pb.UpdateFunctionRequest, caller: Credentials
    ) -> pb.UpdateFunctionResponse: ...

    async def delete_function(
        self, request: pb.DeleteFunctionRequest, caller: Credentials
    ) -> pb.DeleteFunctionResponse: ...

    async def submit_execution(
        self, request: pb.SubmitExecutionRequest, caller: Credentials
    ) -> pb.SubmitExecutionResponse: ...

    async def wait_execution(
        self, request: pb.WaitExecutionRequest, caller: Credentials
    ) -> pb.WaitExecutionResponse: ...

    async def get_execution(
        self, request: pb.GetExecutionRequest, caller: Credentials
    ) -> pb.GetExecutionResponse: ...

    async def list_executions(
        self, request: pb.ListExecutionsRequest, caller: Credentials
    ) -> pb.ListExecutionsResponse: ...

    async def submit_batch(
        self, request: pb.SubmitBatchRequest, caller: Credentials
    ) -> pb.SubmitBatchResponse: ...

    async def get_batch(
        self, request: pb.GetBatchRequest, caller: Credentials
    ) -> pb.GetBatchResponse: ...

    async def list_batches(
        self, request: pb.ListBatchesRequest, caller: Credentials
    ) -> pb.ListBatchesResponse: ...

    async def list_batch_executions(
        self, request: pb.ListBatchExecutionsRequest, caller: Credentials
    ) -> pb.ListBatchExecutionsResponse: ...

    async def continue_execution(
        self, request: pb.ContinueExecutionRequest, caller: Credentials
    ) -> pb.ContinueExecutionResponse: ...

    async def cancel_execution(
        self, request: pb.CancelExecutionRequest, caller: Credentials
    ) -> pb.CancelExecutionResponse: ...

    async def cancel_batch(
        self, request: pb.CancelBatchRequest, caller: Credentials
    ) -> pb.CancelBatchResponse: ...

    async def create_llm_provider(
        self, request: pb.CreateLlmProviderRequest, caller: Credentials
    ) -> pb.CreateLlmProviderResponse: ...

    async def create_agent(
        self, request: pb.CreateAgentRequest, caller: Credentials
    ) -> pb.CreateAgentResponse: ...

    async def get_agent(
        self, request: pb.GetAgentRequest, caller: Credentials
    ) -> pb.GetAgentResponse: ...

    async def update_agent(
        self, request: pb.UpdateAgentRequest, caller: Credentials
    ) -> pb.UpdateAgentResponse: ...

    async def delete_agent(
        self, request: pb.DeleteAgentRequest, caller: Credentials
    ) -> pb.DeleteAgentResponse: ...

    async def submit_agent_run(
        self, request: pb.SubmitAgentRunRequest, caller: Credentials
    ) -> pb.SubmitAgentRunResponse: ...

    async def submit_agent_batch(
        self, request: pb.SubmitAgentBatchRequest, caller: Credentials
    ) -> pb.SubmitAgentBatchResponse: ...

    async def get_chat(
        self, request: pb.GetChatRequest, caller: Credentials
    ) -> pb.GetChatResponse: ...

    async def list_chats(
        self, request: pb.ListChatsRequest, caller: Credentials
    ) -> pb.ListChatsResponse: ...

    async def is_serving(self) -> bool:
        """True while the scheduler answers its gRPC health check with SERVING."""
        ...


class GrpcSchedulerClient:
    """SchedulerClient over a grpc.aio channel; the channel's owner closes it."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        rpc_timeout_seconds: float,
        submit_calls_in_flight: int = DEFAULT_SUBMIT_CALLS_IN_FLIGHT,
    ) -> None:
        self._identity = pb_grpc.IdentityServiceStub(channel)
        self._functions = pb_grpc.FunctionServiceStub(channel)
        self._executions = pb_grpc.ExecutionServiceStub(channel)
        self._batches = pb_grpc.BatchServiceStub(channel)
        self._agents = pb_grpc.AgentServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._timeout = rpc_timeout_seconds
        self._submits: SubmitCoalescer[Credentials] = SubmitCoalescer(
            send_one=self._submit_one,
            send_many=self._submit_many,
            max_in_flight=submit_calls_in_flight,
            max_per_call=MAX_SUBMITS_PER_CALL,
        )

    async def get_me(self, request: pb.GetMeRequest, caller: Credentials) -> pb.GetMeResponse:
        return await invoke(
            self._identity.GetMe, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def get_jwks(self, request: pb.GetJwksRequest) -> pb.GetJwksResponse:
        return await invoke(self._identity.GetJwks, request, timeout=self._timeout)

    async def create_role(
        self, request: pb.CreateRoleRequest, caller: Credentials
    ) -> pb.CreateRoleResponse:
        return await invoke(
            self._identity.CreateRole, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def create_user(
        self, request: pb.CreateUserRequest, caller: Credentials
    ) -> pb.CreateUserResponse:
        return await invoke(
            self._identity.CreateUser, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def create_api_key(
        self, request: pb.CreateApiKeyRequest, caller: Credentials
    ) -> pb.CreateApiKeyResponse:
        return await invoke(
            self._identity.CreateApiKey, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def list_api_keys(
        self, request: pb.ListApiKeysRequest, caller: Credentials
    ) -> pb.ListApiKeysResponse:
        return await invoke(
            self._identity.ListApiKeys, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def revoke_api_key(
        self, request: pb.RevokeApiKeyRequest, caller: Credentials
    ) -> pb.RevokeApiKeyResponse:
        return await invoke(
            self._identity.RevokeApiKey, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def create_function(
        self, request: pb.CreateFunctionRequest, caller: Credentials
    ) -> pb.CreateFunctionResponse:
        return await invoke(
            self._functions.CreateFunction,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def get_function(
        self, request: pb.GetFunctionRequest, caller: Credentials
    ) -> pb.GetFunctionResponse:
        return await invoke(
            self._functions.GetFunction, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def update_function(
        self, request: pb.UpdateFunctionRequest, caller: Credentials
    ) -> pb.UpdateFunctionResponse:
        return await invoke(
            self._functions.UpdateFunction,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def delete_function(
        self, request: pb.DeleteFunctionRequest, caller: Credentials
    ) -> pb.DeleteFunctionResponse:
        return await invoke(
            self._functions.DeleteFunction,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def submit_execution(
        self, request: pb.SubmitExecutionRequest, caller: Credentials
    ) -> pb.SubmitExecutionResponse:
        return await self._submits.submit(request, caller)

    async def _submit_one(
        self, request: pb.SubmitExecutionRequest, caller: Credentials
    ) -> pb.SubmitExecutionResponse:
        return await invoke(
            self._executions.SubmitExecution,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def _submit_many(
        self, requests: Sequence[pb.SubmitExecutionRequest], caller: Credentials
    ) -> pb.SubmitExecutionsResponse:
        return await invoke(
            self._executions.SubmitExecutions,
            pb.SubmitExecutionsRequest(requests=requests),
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def wait_execution(
        self, request: pb.WaitExecutionRequest, caller: Credentials
    ) -> pb.WaitExecutionResponse:
        # The server holds the call for up to the requested wait; the deadline covers that
        # wait plus the usual allowance for the round trip itself.
        return await invoke(
            self._executions.WaitExecution,
            request,
            metadata=caller.metadata(),
            timeout=request.timeout_seconds + self._timeout,
        )

    async def get_execution(
        self, request: pb.GetExecutionRequest, caller: Credentials
    ) -> pb.GetExecutionResponse:
        return await invoke(
            self._executions.GetExecution,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def list_executions(
        self, request: pb.ListExecutionsRequest, caller: Credentials
    ) -> pb.ListExecutionsResponse:
        return await invoke(
            self._executions.ListExecutions,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def submit_batch(
        self, request: pb.SubmitBatchRequest, caller: Credentials
    ) -> pb.SubmitBatchResponse:
        return await invoke(
            self._batches.SubmitBatch, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def get_batch(
        self, request: pb.GetBatchRequest, caller: Credentials
    ) -> pb.GetBatchResponse:
        return await invoke(
            self._batches.GetBatch, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def list_batches(
        self, request: pb.ListBatchesRequest, caller: Credentials
    ) -> pb.ListBatchesResponse:
        return await invoke(
            self._batches.ListBatches, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def list_batch_executions(
        self, request: pb.ListBatchExecutionsRequest, caller: Credentials
    ) -> pb.ListBatchExecutionsResponse:
        return await invoke(
            self._batches.ListBatchExecutions,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def continue_execution(
        self, request: pb.ContinueExecutionRequest, caller: Credentials
    ) -> pb.ContinueExecutionResponse:
        return await invoke(
            self._executions.ContinueExecution,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def cancel_execution(
        self, request: pb.CancelExecutionRequest, caller: Credentials
    ) -> pb.CancelExecutionResponse:
        return await invoke(
            self._executions.CancelExecution,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def cancel_batch(
        self, request: pb.CancelBatchRequest, caller: Credentials
    ) -> pb.CancelBatchResponse:
        return await invoke(
            self._batches.CancelBatch,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def create_llm_provider(
        self, request: pb.CreateLlmProviderRequest, caller: Credentials
    ) -> pb.CreateLlmProviderResponse:
        return await invoke(
            self._agents.CreateLlmProvider,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def create_agent(
        self, request: pb.CreateAgentRequest, caller: Credentials
    ) -> pb.CreateAgentResponse:
        return await invoke(
            self._agents.CreateAgent, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def get_agent(
        self, request: pb.GetAgentRequest, caller: Credentials
    ) -> pb.GetAgentResponse:
        return await invoke(
            self._agents.GetAgent, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def update_agent(
        self, request: pb.UpdateAgentRequest, caller: Credentials
    ) -> pb.UpdateAgentResponse:
        return await invoke(
            self._agents.UpdateAgent, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def delete_agent(
        self, request: pb.DeleteAgentRequest, caller: Credentials
    ) -> pb.DeleteAgentResponse:
        return await invoke(
            self._agents.DeleteAgent, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def submit_agent_run(
        self, request: pb.SubmitAgentRunRequest, caller: Credentials
    ) -> pb.SubmitAgentRunResponse:
        return await invoke(
            self._agents.SubmitAgentRun, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def submit_agent_batch(
        self, request: pb.SubmitAgentBatchRequest, caller: Credentials
    ) -> pb.SubmitAgentBatchResponse:
        return await invoke(
            self._agents.SubmitAgentBatch,
            request,
            metadata=caller.metadata(),
            timeout=self._timeout,
        )

    async def get_chat(self, request: pb.GetChatRequest, caller: Credentials) -> pb.GetChatResponse:
        return await invoke(
            self._agents.GetChat, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def list_chats(
        self, request: pb.ListChatsRequest, caller: Credentials
    ) -> pb.ListChatsResponse:
        return await invoke(
            self._agents.ListChats, request, metadata=caller.metadata(), timeout=self._timeout
        )

    async def is_serving(self) -> bool:
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=min(self._timeout, HEALTH_CHECK_TIMEOUT_SECONDS),
            )
        except grpc.aio.AioRpcError as exc:
            logger.warning("scheduler health check failed", extra={"grpc_code": exc.code().name})
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

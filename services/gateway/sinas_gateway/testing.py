"""A recording fake of the SchedulerClient port, for tests that drive the app without sockets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from sinas_common.errors import SinasError
from sinas_gateway.scheduler_client import ANONYMOUS, Credentials
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb

ResponseT = TypeVar("ResponseT", bound=Message)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedCall:
    """One call the gateway made: which method, with what request, as whom."""

    method: str
    request: Message
    caller: Credentials


class RecordingSchedulerClient:
    """Records every call; answers each with the next scripted outcome, else an empty response.

    A scripted SinasError is raised instead of answered, as the real client would raise what
    the scheduler sent.
    """

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self.serving = True
        self._scripts: dict[str, list[Message | SinasError]] = {}

    def script(self, method: str, *outcomes: Message | SinasError) -> None:
        """Queues what the next calls of `method` answer, in order."""
        self._scripts.setdefault(method, []).extend(outcomes)

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.method == method]

    async def _answer(
        self, method: str, request: Message, caller: Credentials, response_type: type[ResponseT]
    ) -> ResponseT:
        self.calls.append(RecordedCall(method=method, request=request, caller=caller))
        queued = self._scripts.get(method)
        outcome = queued.pop(0) if queued else response_type()
        if isinstance(outcome, SinasError):
            raise outcome
        if not isinstance(outcome, response_type):
            raise TypeError(f"scripted {type(outcome).__name__} for {method}")
        return outcome

    async def get_me(self, request: pb.GetMeRequest, caller: Credentials) -> pb.GetMeResponse:
        return await self._answer("get_me", request, caller, pb.GetMeResponse)

    async def get_jwks(self, request: pb.GetJwksRequest) -> pb.GetJwksResponse:
        return await self._answer("get_jwks", request, ANONYMOUS, pb.GetJwksResponse)

    async def create_role(
        self, request: pb.CreateRoleRequest, caller: Credentials
    ) -> pb.CreateRoleResponse:
        return await self._answer("create_role", request, caller, pb.CreateRoleResponse)

    async def create_user(
        self, request: pb.CreateUserRequest, caller: Credentials
    ) -> pb.CreateUserResponse:
        return await self._answer("create_user", request, caller, pb.CreateUserResponse)

    async def create_api_key(
        self, request: pb.CreateApiKeyRequest, caller: Credentials
    ) -> pb.CreateApiKeyResponse:
        return await self._answer("create_api_key", request, caller, pb.CreateApiKeyResponse)

    async def list_api_keys(
        self, request: pb.ListApiKeysRequest, caller: Credentials
    ) -> pb.ListApiKeysResponse:
        return await self._answer("list_api_keys", request, caller, pb.ListApiKeysResponse)

    async def revoke_api_key(
        self, request: pb.RevokeApiKeyRequest, caller: Credentials
    ) -> pb.RevokeApiKeyResponse:
        return await self._answer("revoke_api_key", request, caller, pb.RevokeApiKeyResponse)

    async def create_function(
        self, request: pb.CreateFunctionRequest, caller: Credentials
    ) -> pb.CreateFunctionResponse:
        return await self._answer("create_function", request, caller, pb.CreateFunctionResponse)

    async def get_function(
        self, request: pb.GetFunctionRequest, caller: Credentials
    ) -> pb.GetFunctionResponse:
        return await self._answer("get_function", request, caller, pb.GetFunctionResponse)

    async def update_function(
        self, request: pb.UpdateFunctionRequest, caller: Credentials
    ) -> pb.UpdateFunctionResponse:
        return await self._answer("update_function", request, caller, pb.UpdateFunctionResponse)

    async def delete_function(
        self, request: pb.DeleteFunctionRequest, caller: Credentials
    ) -> pb.DeleteFunctionResponse:
        return await self._answer("delete_function", request, caller, pb.DeleteFunctionResponse)

    async def submit_execution(
        self, request: pb.SubmitExecutionRequest, caller: Credentials
    ) -> pb.SubmitExecutionResponse:
        return await self._answer("submit_execution", request, caller, pb.SubmitExecutionResponse)

    async def wait_execution(
        self, request: pb.WaitExecutionRequest, caller: Credentials
    ) -> pb.WaitExecutionResponse:
        return await self._answer("wait_execution", request, caller, pb.WaitExecutionResponse)

    async def get_execution(
        self, request: pb.GetExecutionRequest, caller: Credentials
    ) -> pb.GetExecutionResponse:
        return await self._answer("get_execution", request, caller, pb.GetExecutionResponse)

    async def list_executions(
        self, request: pb.ListExecutionsRequest, caller: Credentials
    ) -> pb.ListExecutionsResponse:
        return await self._answer("list_executions", request, caller, pb.ListExecutionsResponse)

    async def submit_batch(
        self, request: pb.SubmitBatchRequest, caller: Credentials
    ) -> pb.SubmitBatchResponse:
        return await self._answer("submit_batch", request, caller, pb.SubmitBatchResponse)

    async def get_batch(
        self, request: pb.GetBatchRequest, caller: Credentials
    ) -> pb.GetBatchResponse:
        return await self._answer("get_batch", request, caller, pb.GetBatchResponse)

    async def list_batches(
        self, request: pb.ListBatchesRequest, caller: Credentials
    ) -> pb.ListBatchesResponse:
        return await self._answer("list_batches", request, caller, pb.ListBatchesResponse)

    async def list_batch_executions(
        self, request: pb.ListBatchExecutionsRequest, caller: Credentials
    ) -> pb.ListBatchExecutionsResponse:
        return await self._answer(
            "list_batch_executions", request, caller, pb.ListBatchExecutionsResponse
        )

    async def continue_execution(
        self, request: pb.ContinueExecutionRequest, caller: Credentials
    ) -> pb.ContinueExecutionResponse:
        return await self._answer(
            "continue_execution", request, caller, pb.ContinueExecutionResponse
        )

    async def cancel_execution(
        self, request: pb.CancelExecutionRequest, caller: Credentials
    ) -> pb.CancelExecutionResponse:
        return await self._answer("cancel_execution", request, caller, pb.CancelExecutionResponse)

    async def cancel_batch(
        self, request: pb.CancelBatchRequest, caller: Credentials
    ) -> pb.CancelBatchResponse:
        return await self._answer("cancel_batch", request, caller, pb.CancelBatchResponse)

    async def create_llm_provider(
        self, request: pb.CreateLlmProviderRequest, caller: Credentials
    ) -> pb.CreateLlmProviderResponse:
        return await self._answer(
            "create_llm_provider", request, caller, pb.CreateLlmProviderResponse
        )

    async def create_agent(
        self, request: pb.CreateAgentRequest, caller: Credentials
    ) -> pb.CreateAgentResponse:
        return await self._answer("create_agent", request, caller, pb.CreateAgentResponse)

    async def get_agent(
        self, request: pb.GetAgentRequest, caller: Credentials
    ) -> pb.GetAgentResponse:
        return await self._answer("get_agent", request, caller, pb.GetAgentResponse)

    async def update_agent(
        self, request: pb.UpdateAgentRequest, caller: Credentials
    ) -> pb.UpdateAgentResponse:
        return await self._answer("update_agent", request, caller, pb.UpdateAgentResponse)

    async def delete_agent(
        self, request: pb.DeleteAgentRequest, caller: Credentials
    ) -> pb.DeleteAgentResponse:
        return await self._answer("delete_agent", request, caller, pb.DeleteAgentResponse)

    async def submit_agent_run(
        self, request: pb.SubmitAgentRunRequest, caller: Credentials
    ) -> pb.SubmitAgentRunResponse:
        return await self._answer("submit_agent_run", request, caller, pb.SubmitAgentRunResponse)

    async def submit_agent_batch(
        self, request: pb.SubmitAgentBatchRequest, caller: Credentials
    ) -> pb.SubmitAgentBatchResponse:
        return await self._answer(
            "submit_agent_batch", request, caller, pb.SubmitAgentBatchResponse
        )

    async def get_chat(self, request: pb.GetChatRequest, caller: Credentials) -> pb.GetChatResponse:
        return await self._answer("get_chat", request, caller, pb.GetChatResponse)

    async def list_chats(
        self, request: pb.ListChatsRequest, caller: Credentials
    ) -> pb.ListChatsResponse:
        return await self._answer("list_chats", request, caller, pb.ListChatsResponse)

    async def is_serving(self) -> bool:
        return self.serving

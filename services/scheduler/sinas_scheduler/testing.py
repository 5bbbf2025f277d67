"""A scheduler running in-process with typed stubs on a channel to it, for tests of any service."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import grpc

from sinas_common.callback_policy import Resolver
from sinas_common.grpc_client import invoke, open_channel
from sinas_common.jsoncodec import dump_json
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler.app import SchedulerApp
from sinas_scheduler.settings import SchedulerSettings

HANDLER_CODE = "def handler(input_data, context):\n    return input_data\n"


@dataclass
class RunningScheduler:
    """One running scheduler and typed stubs on a channel to it."""

    app: SchedulerApp
    channel: grpc.aio.Channel
    identity: pb_grpc.IdentityServiceStub
    functions: pb_grpc.FunctionServiceStub
    executions: pb_grpc.ExecutionServiceStub
    worker: pb_grpc.WorkerServiceStub
    notifier: pb_grpc.NotifierServiceStub
    admin_key: str
    batches: pb_grpc.BatchServiceStub
    agents: pb_grpc.AgentServiceStub

    @property
    def admin(self) -> list[tuple[str, str]]:
        return bearer(self.admin_key)

    async def create_function(
        self,
        namespace: str = "tests",
        name: str = "echo",
        *,
        input_schema: Any = None,
        code: str = HANDLER_CODE,
        timeout_seconds: int | None = None,
        metadata: list[tuple[str, str]] | None = None,
    ) -> pb.Function:
        request = pb.CreateFunctionRequest(
            namespace=namespace,
            name=name,
            code=code,
            input_schema_json=dump_json(input_schema if input_schema is not None else {}),
            output_schema_json=dump_json({}),
        )
        if timeout_seconds is not None:
            request.timeout_seconds = timeout_seconds
        response = await invoke(
            self.functions.CreateFunction, request, metadata=metadata or self.admin
        )
        function: pb.Function = response.function
        return function

    async def create_user(self, roles: list[str]) -> tuple[pb.User, str]:
        """A user with those roles and an API key of theirs."""
        email = f"user-{secrets.token_hex(4)}@example.com"
        user = (
            await invoke(
                self.identity.CreateUser,
                pb.CreateUserRequest(email=email, roles=roles),
                metadata=self.admin,
            )
        ).user
        key = await invoke(
            self.identity.CreateApiKey,
            pb.CreateApiKeyRequest(name="test", user_id=user.id),
            metadata=self.admin,
        )
        return user, key.key

    async def submit(
        self,
        metadata: list[tuple[str, str]],
        value: Any,
        *,
        namespace: str = "tests",
        name: str = "echo",
        delay_seconds: int | None = None,
        **fields: Any,
    ) -> str:
        request = pb.SubmitExecutionRequest(
            namespace=namespace, name=name, input_json=dump_json(value), **fields
        )
        if delay_seconds is not None:
            request.delay_seconds = delay_seconds
        response = await invoke(self.executions.SubmitExecution, request, metadata=metadata)
        return str(response.execution_id)

    async def get(self, metadata: list[tuple[str, str]], execution_id: str) -> pb.Execution:
        response = await invoke(
            self.executions.GetExecution,
            pb.GetExecutionRequest(execution_id=execution_id),
            metadata=metadata,
        )
        execution: pb.Execution = response.execution
        return execution


def bearer(credential: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {credential}")]


async def start_in_process(
    settings: SchedulerSettings, admin_key: str, *, resolver: Resolver | None = None
) -> RunningScheduler:
    """Starts a scheduler (bind it to port 0 for a free port) and opens a channel to it;
    `resolver` answers its callback host lookups (the system's when None)."""
    app = SchedulerApp(settings, resolver=resolver)
    await app.start()
    channel = open_channel(f"127.0.0.1:{app.port}")
    return RunningScheduler(
        app=app,
        channel=channel,
        identity=pb_grpc.IdentityServiceStub(channel),
        functions=pb_grpc.FunctionServiceStub(channel),
        executions=pb_grpc.ExecutionServiceStub(channel),
        worker=pb_grpc.WorkerServiceStub(channel),
        notifier=pb_grpc.NotifierServiceStub(channel),
        admin_key=admin_key,
        batches=pb_grpc.BatchServiceStub(channel),
        agents=pb_grpc.AgentServiceStub(channel),
    )


async def stop_in_process(scheduler: RunningScheduler) -> None:
    await scheduler.channel.close()
    await scheduler.app.stop()

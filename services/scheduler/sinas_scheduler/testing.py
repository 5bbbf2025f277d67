"""A scheduler running in-process with typed stubs on a channel to it, for tests of any service."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from sinas_common.callback_policy import Resolver
from sinas_common.grpc_client import invoke, open_channel
from sinas_common.jsoncodec import dump_json
from sinas_common.settings import InternalTlsSettings
from sinas_proto.scheduler.v1 import scheduler_pb2 as pb
from sinas_proto.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from sinas_scheduler.app import SchedulerApp
from sinas_scheduler.settings import SchedulerSettings

HANDLER_CODE = "def handler(input_data, context):\n    return input_data\n"

# Role -> the internal TLS settings of that role's certificate (the `internal_tls` fixture).
ClientTls = Callable[[str], InternalTlsSettings]


@dataclass
class RunningScheduler:
    """One running scheduler and typed stubs on channels to it: each stub's channel presents
    the certificate of the role the scheduler lets call that service."""

    app: SchedulerApp
    # The gateway's: the user-facing services.
    channel: grpc.aio.Channel
    worker_channel: grpc.aio.Channel
    notifier_channel: grpc.aio.Channel
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
    settings: SchedulerSettings,
    admin_key: str,
    *,
    client_tls: ClientTls,
    resolver: Resolver | None = None,
) -> RunningScheduler:
    """Starts a scheduler (bind it to port 0 for a free port) and opens a gateway, an
    executor and a notifier channel to it, with `client_tls(role)`'s certificates;
    `resolver` answers its callback host lookups (the system's when None)."""
    app = SchedulerApp(settings, resolver=resolver)
    await app.start()
    address = f"127.0.0.1:{app.port}"
    gateway, executor, notifier = (
        open_channel(address, tls=client_tls(role)) for role in ("gateway", "executor", "notifier")
    )
    return RunningScheduler(
        app=app,
        channel=gateway,
        worker_channel=executor,
        notifier_channel=notifier,
        identity=pb_grpc.IdentityServiceStub(gateway),
        functions=pb_grpc.FunctionServiceStub(gateway),
        executions=pb_grpc.ExecutionServiceStub(gateway),
        worker=pb_grpc.WorkerServiceStub(executor),
        notifier=pb_grpc.NotifierServiceStub(notifier),
        admin_key=admin_key,
        batches=pb_grpc.BatchServiceStub(gateway),
        agents=pb_grpc.AgentServiceStub(gateway),
    )


async def stop_in_process(scheduler: RunningScheduler) -> None:
    for channel in (scheduler.channel, scheduler.worker_channel, scheduler.notifier_channel):
        await channel.close()
    await scheduler.app.stop()

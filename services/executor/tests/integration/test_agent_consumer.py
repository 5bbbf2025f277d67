"""Agent runs through real JetStream and the gRPC adapter: claims, tool calls, waits, outcomes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from sinas_common.grpc_client import open_channel
from sinas_common.grpc_server import GrpcServer
from sinas_common.jobstream import JobMessage, ensure_job_stream, job_stream_names
from sinas_common.jsoncodec import dump_json, load_json
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings
from sinas_common.timeconv import utcnow
from sinas_devstack.pytest_plugin import InternalTls, NatsSettingsAs
from sinas_executor.agent import AgentLimits, ChatAgentRunner
from sinas_executor.consumer import (
    AGENT_JOB_KIND,
    ConsumerOptions,
    ExecutionConsumer,
    consumer_name,
    subscribe,
)
from sinas_executor.llm import ModelReply
from sinas_executor.models import (
    AwaitingInput,
    ChatMessage,
    ClaimItem,
    ClaimResult,
    ExecutionOutcome,
    HeartbeatNews,
    HeldAttempt,
    OutcomeStatus,
    ToolCallRequest,
)
from sinas_executor.pool import PoolLimits, SandboxRunner, WorkerPool
from sinas_executor.scheduler_client import GrpcSchedulerClient
from sinas_executor.testing import RecordingToolScheduler, ScriptedChatModel, make_agent_run
from sinas_proto.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc


class AgentWorkerService(scheduler_pb2_grpc.WorkerServiceServicer):
    """Claims every item as an agent run; records every request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def ClaimExecutions(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        [item] = request.items
        return scheduler_pb2.ClaimExecutionsResponse(
            agent_runs=[
                scheduler_pb2.ClaimedAgentRun(
                    execution_id=item.execution_id,
                    attempt=item.delivery_attempt,
                    user_id="u1",
                    chat_id="chat-9",
                    access_token="run-tok",
                    provider_base_url="http://llm/v1",
                    provider_api_key="sk-x",
                    model="m1",
                    temperature=0.0,
                    max_turns=4,
                    timeout_seconds=600,
                    messages=[
                        scheduler_pb2.ChatMessage(role="system", content="S"),
                        scheduler_pb2.ChatMessage(
                            role="assistant",
                            tool_calls_json=dump_json([{"id": "c0"}]),
                        ),
                        scheduler_pb2.ChatMessage(role="tool", content="{}", tool_call_id="c0"),
                    ],
                    tools=[
                        scheduler_pb2.AgentTool(
                            namespace="ns",
                            name="fn",
                            description="D",
                            input_schema_json=dump_json({"type": "object"}),
                            requires_approval=True,
                        )
                    ],
                )
            ]
        )

    async def CompleteExecutions(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return scheduler_pb2.CompleteExecutionsResponse(
            applied_execution_ids=[o.execution_id for o in request.outcomes]
        )

    async def SubmitToolCalls(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return scheduler_pb2.SubmitToolCallsResponse(
            submissions=[
                scheduler_pb2.ToolCallSubmission(tool_call_id="c1", execution_id="child-1"),
                scheduler_pb2.ToolCallSubmission(tool_call_id="c2", error="no permission"),
                scheduler_pb2.ToolCallSubmission(tool_call_id="c3", requires_approval=True),
            ]
        )


class WaitingExecutionService(scheduler_pb2_grpc.ExecutionServiceServicer):
    """Answers waits with a finished child; records the request and its credential."""

    def __init__(self) -> None:
        self.waits: list[tuple[Any, dict[str, str]]] = []

    async def WaitExecution(self, request: Any, context: Any) -> Any:
        self.waits.append((request, dict(context.invocation_metadata())))
        return scheduler_pb2.WaitExecutionResponse(
            execution=scheduler_pb2.Execution(
                execution_id=request.execution_id,
                status=scheduler_pb2.EXECUTION_STATUS_FAILED,
                output_json=dump_json({"n": 2**70}),
                error="ValueError: bad",
            ),
            finished=True,
        )


@pytest.fixture
async def grpc_scheduler(
    internal_tls: InternalTls,
) -> AsyncIterator[tuple[AgentWorkerService, WaitingExecutionService, GrpcSchedulerClient]]:
    workers = AgentWorkerService()
    executions = WaitingExecutionService()
    server = GrpcServer(
        bind="127.0.0.1:0",
        registrars=[
            lambda s: scheduler_pb2_grpc.add_WorkerServiceServicer_to_server(workers, s),
            lambda s: scheduler_pb2_grpc.add_ExecutionServiceServicer_to_server(executions, s),
        ],
        service_names=["sinas.scheduler.v1.WorkerService"],
        tls=internal_tls("scheduler"),
    )
    await server.start()
    channel: grpc.aio.Channel = open_channel(
        f"127.0.0.1:{server.port}", tls=internal_tls("executor")
    )
    yield workers, executions, GrpcSchedulerClient(channel, timeout_seconds=10)
    await channel.close()
    await server.stop(1)


async def test_agent_runs_tool_calls_and_waits_convert(
    grpc_scheduler: tuple[AgentWorkerService, WaitingExecutionService, GrpcSchedulerClient],
) -> None:
    workers, executions, client = grpc_scheduler
    result = await client.claim_executions("w1", [ClaimItem(execution_id="a", delivery_attempt=2)])
    assert result.claimed == ()
    [run] = result.agent_runs
    assert (run.execution_id, run.attempt, run.chat_id, run.access_token) == (
        "a",
        2,
        "chat-9",
        "run-tok",
    )
    assert (run.provider_base_url, run.provider_api_key, run.model) == (
        "http://llm/v1",
        "sk-x",
        "m1",
    )
    # A temperature of 0 is set, not absent; max_tokens is absent.
    assert run.temperature == 0.0
    assert run.max_tokens is None
    assert (run.max_turns, run.timeout_seconds) == (4, 600)
    assert run.messages == (
        ChatMessage(role="system", content="S"),
        ChatMessage(role="assistant", tool_calls=({"id": "c0"},)),
        ChatMessage(role="tool", content="{}", tool_call_id="c0"),
    )
    [tool] = run.tools
    assert (tool.namespace, tool.name, tool.description) == ("ns", "fn", "D")
    assert tool.input_schema == {"type": "object"} and tool.requires_approval

    submissions = await client.submit_tool_calls(
        "a",
        2,
        [ToolCallRequest(tool_call_id="c1", namespace="ns", name="fn", arguments={"x": 1})],
        worker_id="w1",
    )
    assert [
        (s.tool_call_id, s.execution_id, s.error, s.requires_approval) for s in submissions
    ] == [
        ("c1", "child-1", "", False),
        ("c2", "", "no permission", False),
        ("c3", "", "", True),
    ]
    sent = workers.requests[-1]
    assert (sent.worker_id, sent.execution_id, sent.attempt) == ("w1", "a", 2)
    [call] = sent.calls
    assert (call.tool_call_id, call.namespace, call.name) == ("c1", "ns", "fn")
    assert load_json(call.arguments_json) == {"x": 1}

    child = await client.wait_execution("child-1", access_token="run-tok", timeout_seconds=2.5)
    assert (child.execution_id, child.status, child.finished) == ("child-1", "FAILED", True)
    assert (child.output, child.error) == ({"n": 2**70}, "ValueError: bad")
    [(request, metadata)] = executions.waits
    assert request.timeout_seconds == 2.5
    assert metadata["authorization"] == "Bearer run-tok"


async def test_agent_outcomes_carry_messages_and_tokens(
    grpc_scheduler: tuple[AgentWorkerService, WaitingExecutionService, GrpcSchedulerClient],
) -> None:
    workers, _, client = grpc_scheduler
    await client.complete_executions(
        "w1",
        [
            ExecutionOutcome(
                execution_id="a",
                attempt=1,
                status=OutcomeStatus.COMPLETED,
                output={"final_message": "hi"},
                completed_at=utcnow(),
                new_messages=(
                    ChatMessage(role="assistant", tool_calls=({"id": "c1"},)),
                    ChatMessage(role="tool", content='{"ok":1}', tool_call_id="c1"),
                    ChatMessage(role="assistant", content="hi"),
                ),
                prompt_tokens=30,
                completion_tokens=0,
            ),
            ExecutionOutcome(
                execution_id="f",
                attempt=1,
                status=OutcomeStatus.COMPLETED,
                output=1,
                completed_at=utcnow(),
            ),
        ],
    )
    agent, function = workers.requests[-1].outcomes
    assert [(m.role, m.content, m.tool_call_id) for m in agent.new_messages] == [
        ("assistant", "", ""),
        ("tool", '{"ok":1}', "c1"),
        ("assistant", "hi", ""),
    ]
    assert load_json(agent.new_messages[0].tool_calls_json) == [{"id": "c1"}]
    assert agent.new_messages[2].tool_calls_json == b""
    assert agent.prompt_tokens == 30
    assert agent.HasField("completion_tokens") and agent.completion_tokens == 0
    # Function outcomes leave token usage unset.
    assert not function.HasField("prompt_tokens")
    assert not function.new_messages


@dataclass
class AgentClaimingScheduler:
    """SchedulerPort fake that claims every item as an agent run; records every call."""

    claims: list[list[ClaimItem]] = field(default_factory=list)
    outcomes: dict[str, ExecutionOutcome] = field(default_factory=dict)
    heartbeats: list[list[HeldAttempt]] = field(default_factory=list)

    async def claim_executions(self, worker_id: str, items: Sequence[ClaimItem]) -> ClaimResult:
        self.claims.append(list(items))
        return ClaimResult(
            agent_runs=tuple(
                make_agent_run(execution_id=i.execution_id, attempt=i.delivery_attempt)
                for i in items
            )
        )

    async def complete_executions(
        self, worker_id: str, outcomes: Sequence[ExecutionOutcome]
    ) -> list[str]:
        self.outcomes.update({o.execution_id: o for o in outcomes})
        return [o.execution_id for o in outcomes]

    async def heartbeat(self, worker_id: str, attempts: Sequence[HeldAttempt]) -> HeartbeatNews:
        self.heartbeats.append(list(attempts))
        return HeartbeatNews()

    async def release_executions(
        self, worker_id: str, attempts: Sequence[HeldAttempt]
    ) -> list[str]:
        return [a.execution_id for a in attempts]

    async def report_awaiting_input(
        self, worker_id: str, items: Sequence[AwaitingInput]
    ) -> list[str]:
        return []


async def _eventually(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_the_agent_consumer_runs_agent_messages_only(
    nats_settings: NatsSettings, nats_settings_as: NatsSettingsAs
) -> None:
    # The scheduler's user makes the stream and publishes; the executor's consumes.
    scheduler_nc = await connect_nats(nats_settings, name="test-scheduler")
    publisher = scheduler_nc.jetstream()
    names = await ensure_job_stream(publisher, nats_settings)
    nc = await connect_nats(nats_settings_as("executor"), name="test-executor")
    js = nc.jetstream()
    pool = WorkerPool(PoolLimits(concurrency=1, idle_seconds=30.0))
    scheduler = AgentClaimingScheduler()
    model = ScriptedChatModel(
        script=[ModelReply(content=f"answer {i}", prompt_tokens=3) for i in range(5)],
        # Long enough for the lease keeping to show: in-progress acks and heartbeats.
        delay_seconds=2.5,
    )
    consumer = ExecutionConsumer(
        subscription=await subscribe(js, nats_settings, ack_wait_seconds=3.0, kind=AGENT_JOB_KIND),
        scheduler=scheduler,
        runner=SandboxRunner(pool),
        options=ConsumerOptions(
            worker_id="agent-test", api_url="http://127.0.0.1:8000", ack_wait_seconds=3.0
        ),
        agents=ChatAgentRunner(
            model=model,
            scheduler=RecordingToolScheduler(),
            limits=AgentLimits(),
            worker_id="agent-test",
        ),
    )
    task = asyncio.create_task(consumer.run())
    try:
        ids = [f"agent-{i}" for i in range(5)]
        for execution_id in ids:
            await publisher.publish(
                job_stream_names(nats_settings).subject("agent"),
                JobMessage(execution_id=execution_id, kind="agent").encode(),
            )
        # A function message on the same stream is left to the function consumer.
        await publisher.publish(
            names.subject("function"), JobMessage(execution_id="fn-1", kind="function").encode()
        )
        await _eventually(lambda: set(scheduler.outcomes) == set(ids))
        for execution_id in ids:
            outcome = scheduler.outcomes[execution_id]
            assert outcome.status is OutcomeStatus.COMPLETED
            assert outcome.output["final_message"].startswith("answer ")
            assert outcome.prompt_tokens == 3
        assert all(item.execution_id != "fn-1" for claim in scheduler.claims for item in claim)
        assert any(beat for beat in scheduler.heartbeats)

        async def acked() -> bool:
            info = await js.consumer_info(
                names.stream, consumer_name(nats_settings, AGENT_JOB_KIND)
            )
            return int(info.num_ack_pending) == 0 and int(info.num_pending) == 0

        deadline = time.monotonic() + 30
        while not await acked():
            assert time.monotonic() < deadline, "agent messages not acked"
            await asyncio.sleep(0.1)
        assert consumer_name(nats_settings, AGENT_JOB_KIND) == (
            f"{nats_settings.stream_prefix}_agent_executor"
        )
        assert (await publisher.stream_info(names.stream)).state.messages == 1
    finally:
        consumer.stop()
        await task
        await pool.close()
        await nc.close()
        await scheduler_nc.close()

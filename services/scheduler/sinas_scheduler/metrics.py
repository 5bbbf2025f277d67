"""The scheduler's Prometheus metrics: outcomes, dispatch lag, backlog and batch sizes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from sinas_common.metrics import LATENCY_BUCKETS, SIZE_BUCKETS

EXECUTIONS_FINISHED = Counter(
    "sinas_executions_finished_total",
    "Executions ended, by outcome (COMPLETED, FAILED, TIMED_OUT, WORKER_LOST)",
    ["outcome"],
)
DISPATCH_LAG = Histogram(
    "sinas_dispatch_lag_seconds",
    "Seconds from an execution's run_at to its first claim by an executor",
    buckets=LATENCY_BUCKETS,
)
REDELIVERIES = Counter(
    "sinas_job_redeliveries_total",
    "Job messages a worker presented with a JetStream delivery count above 1",
)
ATTEMPTS_RETRIED = Counter(
    "sinas_attempts_retried_total",
    "Attempts whose worker stopped heartbeating, dispatched again (reaped) or handed back",
    ["reason"],
)
PROMPT_DISPATCH_MISSES = Counter(
    "sinas_prompt_dispatch_misses_total",
    "Executions the scheduler that stored them could not publish (step=publish) or mark"
    " dispatched (step=mark) at once: the dispatch loop's sweep publishes them",
    ["step"],
)
QUEUE_DEPTH = Gauge(
    "sinas_pending_due_executions", "PENDING executions already due and not yet published"
)
BATCH_SIZE = Histogram("sinas_batch_size", "Children per submitted batch", buckets=SIZE_BUCKETS)
QUEUE_SAMPLE_SECONDS = 5.0

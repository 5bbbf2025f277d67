"""The notifier's Prometheus metrics: callback attempts by outcome and how long they took."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from sinas_common.metrics import LATENCY_BUCKETS

CALLBACKS = Counter(
    "sinas_callbacks_total",
    "Callback attempts by kind (execution or batch) and outcome (sent or failed)",
    ["kind", "outcome"],
)
CALLBACK_SECONDS = Histogram(
    "sinas_callback_seconds",
    "Time one callback attempt took, from the claim to the receiver's answer or the failure",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)

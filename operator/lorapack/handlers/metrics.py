"""Prometheus metrics of the operator (served on LORAPACK_METRICS_PORT at /metrics).

Names follow Prometheus conventions with a `lorapack_` prefix; labels stay low-cardinality
(pool and state, never per-pod or per-request values). The alerts in the Helm chart's
PrometheusRule and the Grafana dashboard read these.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "ADAPTERS",
    "ADAPTER_READY_SECONDS",
    "API_THROTTLED",
    "POOL_REPLICAS",
    "POOL_SLOTS",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "REGISTRY",
    "VALIDATIONS",
    "serve",
]

REGISTRY = CollectorRegistry(auto_describe=True)

API_THROTTLED = Gauge(
    "lorapack_api_throttled_requests",
    "Requests the API server answered 429 (Priority and Fairness), retried after Retry-After.",
    registry=REGISTRY,
)

RECONCILES = Counter(
    "lorapack_reconcile_total",
    "Reconcile passes by kind and result (ok, retry, error).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "lorapack_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
VALIDATIONS = Counter(
    "lorapack_adapter_validations_total",
    "Adapter pre-flight validations by result (valid, or the refusal reason).",
    ["result"],
    registry=REGISTRY,
)
ADAPTERS = Gauge(
    "lorapack_adapters",
    "Adapter copies on a pool's pods by state (Loaded, Loading, Downloading, Failed, ...).",
    ["pool", "state"],
    registry=REGISTRY,
)
POOL_SLOTS = Gauge(
    "lorapack_pool_slots",
    "Adapter places of a pool: total over its pods, and used.",
    ["pool", "kind"],
    registry=REGISTRY,
)
POOL_REPLICAS = Gauge(
    "lorapack_pool_replicas",
    "Pods of a pool: desired, existing and ready.",
    ["pool", "kind"],
    registry=REGISTRY,
)
ADAPTER_READY_SECONDS = Histogram(
    "lorapack_adapter_ready_seconds",
    "Time from a LoraAdapter generation first seen to Ready.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)


def serve(port: int, host: str) -> None:
    """Start the /metrics HTTP server in a background thread."""
    start_http_server(port, addr=host, registry=REGISTRY)

"""Optional Prometheus metrics for the client side of a click (what the annotator feels).

Pass a :class:`ClientMetrics` to :class:`~clickmask.client.grpc_client.Client` to record
request latency, retries and errors; nothing is recorded otherwise.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

__all__ = ["ClientMetrics", "LATENCY_BUCKETS_S"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class ClientMetrics:
    """Client request metrics, registered once on ``registry`` (the default registry if None).

    Metrics: ``clickmask_client_request_seconds{model,outcome}`` (histogram of the whole call,
    retries included), ``clickmask_client_retries_total{model}``,
    ``clickmask_client_errors_total{model,kind}`` (kind = the error class name).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.request_seconds = Histogram(
            "clickmask_client_request_seconds",
            "Wall time of one inference call as seen by the client, retries included.",
            ("model", "outcome"),
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.retries = Counter(
            "clickmask_client_retries_total",
            "Requests retried after the server was unavailable.",
            ("model",),
            registry=registry,
        )
        self.errors = Counter(
            "clickmask_client_errors_total",
            "Inference calls that failed, by error class.",
            ("model", "kind"),
            registry=registry,
        )

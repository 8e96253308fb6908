"""Optional Prometheus metrics for the client side of a click (what the annotator feels).

Off by default: pass a :class:`ClientMetrics` to :class:`~clickmask.client.grpc_client.Client`
(or ``AsyncClient``) and the client records every inference call, and every
:class:`~clickmask.client.session.Session` made from that client records every click.
Importing this module registers nothing; metrics are created on the registry you give.

Example::

    from prometheus_client import CollectorRegistry
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    metrics.serve(9464)                       # http://127.0.0.1:9464/metrics (or export
                                              # `registry` through your own endpoint)
    client = Client("127.0.0.1:8001", metrics=metrics)

Series (all with a ``model`` label):

- ``clickmask_client_click_seconds`` histogram: one ``Session.click`` end to end (encoding,
  gRPC round trip with retries, decoding) - the latency the annotator feels. Buckets around
  the 300 ms target.
- ``clickmask_client_encode_seconds`` / ``clickmask_client_decode_seconds`` histograms: the
  client-side work of a click before the request and after the response.
- ``clickmask_client_request_seconds{outcome="ok"|"error"}`` histogram: one inference call
  (gRPC round trip, retries and backoff included).
- ``clickmask_client_sent_bytes_total`` / ``clickmask_client_received_bytes_total``: tensor
  payload bytes of successful calls (protobuf/HTTP2 framing not included).
- ``clickmask_client_retries_total``: attempts retried after UNAVAILABLE.
- ``clickmask_client_errors_total{kind}``: failed calls by error class (one per call).
- ``clickmask_client_grpc_errors_total{code}``: failed attempts by gRPC status code
  (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``INVALID_ARGUMENT``...), retried ones included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # prometheus_client is imported when metrics are created, not at import
    from prometheus_client import CollectorRegistry

__all__ = ["ClientMetrics", "LATENCY_BUCKETS_S", "CLICK_BUCKETS_S", "CODEC_BUCKETS_S", "DEFAULT_METRICS_ADDR"]

# Whole inference calls; kept as they were so existing dashboards keep their buckets.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# One click: dense around the 300 ms target so histogram_quantile() is accurate where it matters.
CLICK_BUCKETS_S = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5)
# Encoding / decoding on the client: milliseconds.
CODEC_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
DEFAULT_METRICS_ADDR = "127.0.0.1"


class ClientMetrics:
    """Client metrics registered on ``registry`` (prometheus_client's default REGISTRY if None).

    One instance per registry: a second instance on the same registry raises prometheus_client's
    "Duplicated timeseries" ValueError. Share one instance between clients; the ``model`` label
    tells their models apart. Thread-safe (prometheus_client metrics are).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram  # noqa: PLC0415

        self.registry = REGISTRY if registry is None else registry
        registry = self.registry
        self.click_seconds = Histogram(
            "clickmask_client_click_seconds",
            "One Session.click as the annotator feels it: encoding, gRPC round trip, decoding.",
            ("model",), buckets=CLICK_BUCKETS_S, registry=registry,
        )
        self.encode_seconds = Histogram(
            "clickmask_client_encode_seconds",
            "Client-side preparation of one click (validation, zoom-in crop, encoding).",
            ("model",), buckets=CODEC_BUCKETS_S, registry=registry,
        )
        self.decode_seconds = Histogram(
            "clickmask_client_decode_seconds",
            "Client-side decoding of one click's response (paste back, threshold, record).",
            ("model",), buckets=CODEC_BUCKETS_S, registry=registry,
        )
        self.request_seconds = Histogram(
            "clickmask_client_request_seconds",
            "Wall time of one inference call as seen by the client, retries included.",
            ("model", "outcome"), buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.sent_bytes = Counter(
            "clickmask_client_sent_bytes",
            "Input tensor bytes sent in successful inference calls.",
            ("model",), registry=registry,
        )
        self.received_bytes = Counter(
            "clickmask_client_received_bytes",
            "Output tensor bytes received in successful inference calls.",
            ("model",), registry=registry,
        )
        self.retries = Counter(
            "clickmask_client_retries",
            "Requests retried after the server was unavailable.",
            ("model",), registry=registry,
        )
        self.errors = Counter(
            "clickmask_client_errors",
            "Inference calls that failed, by error class.",
            ("model", "kind"), registry=registry,
        )
        self.grpc_errors = Counter(
            "clickmask_client_grpc_errors",
            "Failed gRPC attempts by status code, retried attempts included.",
            ("model", "code"), registry=registry,
        )

    # -------------------------------------------------------------- what the hooks call
    def initialize(self, model: str) -> None:
        """Create ``model``'s series at zero (the clients do it when they are made).

        A series that first appears with a count already in it loses that first increase in
        ``rate()``; series that exist from the start do not.
        """
        for histogram in (self.click_seconds, self.encode_seconds, self.decode_seconds):
            histogram.labels(model)
        self.request_seconds.labels(model, "ok")
        for counter in (self.sent_bytes, self.received_bytes, self.retries):
            counter.labels(model)

    def observe_click(self, model: str, *, total_s: float, encode_s: float, decode_s: float) -> None:
        """Record one completed click (called by the session)."""
        self.click_seconds.labels(model).observe(total_s)
        self.encode_seconds.labels(model).observe(encode_s)
        self.decode_seconds.labels(model).observe(decode_s)

    def observe_bytes(self, model: str, *, sent: int, received: int) -> None:
        """Record the payload of one successful inference call."""
        self.sent_bytes.labels(model).inc(sent)
        self.received_bytes.labels(model).inc(received)

    def observe_grpc_error(self, model: str, code: str) -> None:
        """Record one failed attempt with its gRPC status code name (e.g. ``UNAVAILABLE``)."""
        self.grpc_errors.labels(model, code or "UNKNOWN").inc()

    # -------------------------------------------------------------- exposition
    def serve(self, port: int, addr: str = DEFAULT_METRICS_ADDR):
        """Expose this registry on ``http://addr:port/metrics`` from a daemon thread.

        Loopback by default; pass ``addr="0.0.0.0"`` only where the scrape comes from another
        host. Returns what ``prometheus_client.start_http_server`` returns (on prometheus_client
        >= 0.17 the server and its thread: call ``server.shutdown()`` to stop it).
        """
        from prometheus_client import start_http_server  # noqa: PLC0415

        return start_http_server(port, addr=addr, registry=self.registry)

"""A real Prometheus scrapes the real tritonserver and a client's metrics endpoint.

The test sends clicks through the server, then reads back through Prometheus's HTTP API the
queries docs/operations.md gives SREs (p95, batch size, counts) and checks them against what
the client measured itself. Everything listens on 127.0.0.1; Prometheus is stopped at the end.
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from clickmask.client import Client
from clickmask.client.clicker import load_gt, next_click
from clickmask.client.metrics import CLICK_BUCKETS_S, ClientMetrics
from clickmask.imageio import read_mask, read_rgb
from clickmask.serving.server import _die_with_parent

from ..conftest import REPO_ROOT, free_port

RULES_DIR = REPO_ROOT / "deploy" / "prometheus" / "rules"
CONCURRENCY = 4
CLICKS_PER_SESSION = 5
MAX_BATCH_SIZE = 8  # model_repository/clickmask_compact/config.pbtxt: the clients take the compact entry
SERVED = "clickmask_compact"

# The queries of docs/operations.md (same text as the dashboard's panels).
SERVER_P95_S = 'max by (model) (nv_inference_request_summary_us{quantile="0.95"}) / 1e6'
BATCH_SIZE = "sum by (model) (rate(nv_inference_count[1m])) / sum by (model) (rate(nv_inference_exec_count[1m]))"
CLIENT_P95_S = "histogram_quantile(0.95, sum by (model, le) (rate(clickmask_client_click_seconds_bucket[1m])))"
COMPACT_BYTES_PER_CLICK = ("(sum by (instance) (rate(clickmask_compact_received_bytes_total[1m])) + sum by (instance) "
                           "(rate(clickmask_compact_sent_bytes_total[1m]))) / sum by (instance) "
                           "(rate(clickmask_compact_requests_total[1m]))")
COMPACT_HIT_RATIO = ("sum by (instance) (rate(clickmask_compact_cache_hits_total[1m])) / (sum by (instance) "
                     "(rate(clickmask_compact_cache_hits_total[1m])) + sum by (instance) "
                     "(rate(clickmask_compact_cache_misses_total[1m])))")


def _served(expr: str) -> str:
    """``expr`` (a dashboard query, per model) for the model the clients called only."""
    expr = re.sub(r"(nv_inference_\w+)\{", rf'\1{{model="{SERVED}",', expr)
    return re.sub(r"(nv_inference_\w+)\[", rf'\1{{model="{SERVED}"}}[', expr)


class PrometheusAPI:
    def __init__(self, base_url: str):
        self.base_url = base_url

    def get(self, path: str, **params) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.get("/api/v1/query", **params)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scalar(self, expr: str, at: float | None = None) -> float:
        result = self.query(expr, at)
        assert len(result) == 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, predicate, timeout_s: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result and predicate(result):
                return result
            time.sleep(0.5)
        pytest.fail(f"Prometheus: {expr} never satisfied the check within {timeout_s:.0f} s; last: {result}")


@pytest.fixture(scope="module")
def client_metrics():
    """A client's own registry exposed with start_http_server on a free loopback port."""
    metrics = ClientMetrics(CollectorRegistry())
    port = free_port()
    served = metrics.serve(port, addr="127.0.0.1")
    yield metrics, port
    if isinstance(served, tuple):  # prometheus_client >= 0.17 returns (server, thread)
        served[0].shutdown()
        served[0].server_close()


@pytest.fixture(scope="module")
def prometheus(triton, client_metrics, tmp_path_factory) -> PrometheusAPI:
    """Prometheus on a free loopback port scraping Triton and the client every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's 'prometheus' package (make system-deps does it)")
    workdir = tmp_path_factory.mktemp("prometheus")
    _, client_port = client_metrics
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES_DIR}/*.yml']\n"
        "scrape_configs:\n"
        f"  - job_name: triton\n    static_configs: [{{targets: ['127.0.0.1:{triton.config.metrics_port}']}}]\n"
        f"  - job_name: clickmask-client\n    static_configs: [{{targets: ['127.0.0.1:{client_port}']}}]\n"
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        api = PrometheusAPI(base_url)
        api.wait_for('up{job=~"triton|clickmask-client"} == 1', lambda result: len(result) == 2)
        yield api
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode is not None


def _annotate(grpc_url, metrics, image, raw_mask) -> list[float]:
    """One annotator: a session of CLICKS_PER_SESSION standard-protocol clicks; their latencies.
    Fast passes, so a click is exactly one request of one image and Triton's counters can be
    checked against the clicks; the client takes the server's compact entry (wire "compact":
    "auto" would send raw tensors over loopback)."""
    gt, ignore = load_gt(raw_mask)
    with Client(grpc_url, metrics=metrics, wire="compact") as client:
        session = client.session(image, flip=False, refine=False)
        pred = np.zeros(gt.shape, bool)
        for _ in range(CLICKS_PER_SESSION):
            click = next_click(gt, pred, ignore, previous=session.clicks) or session.clicks[-1]
            pred = session.click(x=click.x, y=click.y, positive=click.positive).array
        return [record.latency_s for record in session.history]


EDGE_S = 0.003  # how far apart the session's and the histogram's timing of one click may be


def _bucket_bounds(value: float) -> tuple[float, float]:
    lower = 0.0
    for upper in CLICK_BUCKETS_S:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


def test_prometheus_sees_clicks_p95_and_batch_size(prometheus, client_metrics, grpc_url, grabcut_dir):
    metrics, _ = client_metrics
    images = sorted((grabcut_dir / "images").iterdir())[:CONCURRENCY]
    samples = [(read_rgb(p), read_mask(grabcut_dir / "masks" / f"{p.stem}.png")) for p in images]
    counters = ('sum(nv_inference_count{job="triton"})', 'sum(nv_inference_exec_count{job="triton"})',
                'sum(nv_inference_request_success{job="triton"})')
    # The client's series exist at zero before the first click (as a Client creates them), so
    # rate() sees the whole run; wait until Prometheus has scraped them.
    metrics.initialize("clickmask")
    prometheus.wait_for("sum(clickmask_client_click_seconds_count)", lambda r: float(r[0]["value"][1]) == 0)
    before = [prometheus.scalar(expr) for expr in counters]
    compact_counters = ("sum(clickmask_compact_received_bytes_total)", "sum(clickmask_compact_requests_total)")
    compact_before = [prometheus.scalar(expr) for expr in compact_counters]  # other tests share the server
    before_s = time.time()

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = [s for batch in pool.map(lambda s: _annotate(grpc_url, metrics, *s), samples) for s in batch]
    clicks = len(latencies)
    assert clicks == CONCURRENCY * CLICKS_PER_SESSION

    # Wait until Prometheus has scraped the client after the last click and Triton after it too.
    prometheus.wait_for("sum(clickmask_client_click_seconds_count)", lambda r: float(r[0]["value"][1]) == clicks)
    prometheus.wait_for('sum(nv_inference_request_success{job="triton"})',
                        lambda r: float(r[0]["value"][1]) >= before[2] + clicks)
    time.sleep(1.5)
    elapsed_s = time.time() - before_s
    inferences, executions, successes = (
        prometheus.scalar(expr) - start for expr, start in zip(counters, before)
    )

    # Counts: Triton answered exactly the requests the client sent, in no more executions.
    assert inferences == clicks and successes == clicks
    assert 1 <= executions <= clicks

    # Batch size as the dashboard computes it (window > this run, so it covers it all).
    window = f"{math.ceil(elapsed_s) + 5}s"
    batch = prometheus.scalar(_served(BATCH_SIZE.replace("[1m]", f"[{window}]")))
    assert batch == pytest.approx(inferences / executions, rel=0.15)  # rate() extrapolates
    assert 1.0 <= batch <= min(CONCURRENCY, MAX_BATCH_SIZE) + 1e-9
    # ... and with the documented 1 m window while the run is inside it.
    if elapsed_s < 50:
        assert 1.0 <= prometheus.scalar(_served(BATCH_SIZE)) <= CONCURRENCY + 1e-9

    # Server p95 from Triton's summary: present, positive, and no more than what clients felt
    # (a click's client latency contains the server's request time).
    server_p95 = prometheus.scalar(_served(SERVER_P95_S))
    assert math.isfinite(server_p95) and 0 < server_p95 < 10
    assert server_p95 <= 2 * max(latencies), (server_p95, sorted(latencies))

    # Mean server time per request over the run, from the duration counters, against the client.
    server_mean_s = prometheus.scalar(f'sum(increase(nv_inference_request_duration_us{{job="triton"}}[{window}]))'
                                      f' / sum(increase(nv_inference_request_success{{job="triton"}}[{window}])) / 1e6')
    assert 0 < server_mean_s <= float(np.mean(latencies)) * 1.1

    # Client p95 from the histogram agrees with the latencies the sessions recorded: over the
    # cumulative buckets (this registry saw only this run) the interpolated quantile falls in
    # the bucket that holds the measured p95 ...
    measured_p95 = float(np.quantile(latencies, 0.95, method="inverted_cdf"))  # Prometheus' rank
    # The session's latency and the histogram's observation are timed by two clocks reads a
    # little apart, so a click within a few ms of a bucket edge may sit on either side of it
    # (seen: 99.9 ms in the session, the 0.1-0.15 s bucket in the histogram).
    lower, _ = _bucket_bounds(measured_p95 - EDGE_S)
    _, upper = _bucket_bounds(measured_p95 + EDGE_S)
    exact_p95 = prometheus.scalar(
        "histogram_quantile(0.95, sum by (model, le) (clickmask_client_click_seconds_bucket))")
    assert lower <= exact_p95 <= upper, (exact_p95, measured_p95, (lower, upper))
    # ... and the dashboard's rate() form (which extrapolates each bucket over the window) stays
    # between the bucket of the fastest click and the bucket above the slowest one.
    client_p95 = prometheus.scalar(CLIENT_P95_S.replace("[1m]", f"[{window}]"))
    floor, _ = _bucket_bounds(min(latencies))
    _, ceiling = _bucket_bounds(_bucket_bounds(max(latencies))[1] + 1e-9)
    assert floor <= client_p95 <= ceiling, (client_p95, sorted(latencies))
    print(f"\n{clicks} clicks in {elapsed_s:.1f} s: batch {batch:.2f} ({inferences:.0f}/{executions:.0f}), "
          f"server p95 {server_p95 * 1e3:.0f} ms, server mean {server_mean_s * 1e3:.0f} ms, "
          f"client p95 {exact_p95 * 1e3:.0f} ms, rate() {client_p95 * 1e3:.0f} ms (measured {measured_p95 * 1e3:.0f} ms)")
    total = prometheus.scalar("sum(clickmask_client_click_seconds_sum)")
    assert total == pytest.approx(sum(latencies), rel=0.02)
    # the clients took the compact entry: far fewer bytes than the raw tensors, as the server counted them
    sent = prometheus.scalar("sum(clickmask_client_sent_bytes_total)")
    assert 0 < sent < clicks * 6 * 320 * 320 / 4
    received, requests = (prometheus.scalar(expr) - start for expr, start in zip(compact_counters, compact_before))
    assert (received, requests) == (sent, clicks)
    # the dashboard's bytes-a-click and hit-ratio queries answer: each session's first crop was
    # sent (no hit), and later clicks mostly name a crop the server holds
    per_click = prometheus.scalar(COMPACT_BYTES_PER_CLICK.replace("[1m]", f"[{window}]"))
    assert 1_000 < per_click < 165_000, per_click
    hit_ratio = prometheus.scalar(COMPACT_HIT_RATIO.replace("[1m]", f"[{window}]"))
    assert 0 < hit_ratio <= 1
    assert prometheus.query("clickmask_client_errors_total") == []  # no call failed
    assert prometheus.query("clickmask_client_grpc_errors_total") == []

    # Every query of the Grafana dashboard runs on this data; the latency, throughput, batch
    # and time-breakdown panels have series.
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "dashboards" / "clickmask.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            result = prometheus.query(target["expr"].replace("[1m]", f"[{window}]"))
            if not result:
                empty.append((panel["title"], target["legendFormat"] if "legendFormat" in target else ""))
    expected_empty = {"Errors", "Error ratio"}  # nothing failed
    assert [entry for entry in empty if entry[0] not in expected_empty] == []


def test_alert_rules_load_and_the_server_is_not_down(prometheus):
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {"ClickmaskServerDown", "ClickmaskServerP95Over300ms"}
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"]
    assert not unhealthy
    firing = [a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["alerts"] if a["state"] == "firing"]
    assert "ClickmaskServerDown" not in firing and "ClickmaskServerAbsent" not in firing
    assert prometheus.scalar('up{job="triton"}') == 1

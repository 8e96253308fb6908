"""ClientMetrics: what a Client and its sessions record, exposition, and no import side effects."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import CollectorRegistry

from clickmask.client import AsyncClient, Client, ServerUnavailableError
from clickmask.client import grpc_client
from clickmask.client.metrics import CLICK_BUCKETS_S, ClientMetrics

from ..conftest import free_port
from .test_client_grpc import SIZE, FakeAioTriton, FakeTriton, sample_inputs, server_error

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

MODEL = {"model": "clickmask"}
REQUEST_BYTES = (3 + 2 + 1) * SIZE * SIZE  # image + clicks + prev_mask, uint8
RESPONSE_BYTES = SIZE * SIZE


@pytest.fixture()
def registry(monkeypatch) -> CollectorRegistry:
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    monkeypatch.setattr(grpc_client.time, "sleep", lambda _s: None)
    return CollectorRegistry()


def test_import_registers_nothing_and_metrics_are_off_by_default():
    code = (
        "import prometheus_client as p; before = set(p.REGISTRY._names_to_collectors)\n"
        "import clickmask.client, clickmask.client.metrics, clickmask.client.grpc_client\n"
        "assert set(p.REGISTRY._names_to_collectors) == before, 'import registered metrics'\n"
        "import inspect; from clickmask.client import Client\n"
        "assert inspect.signature(Client).parameters['metrics'].default is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_click_buckets_bracket_the_300_ms_target():
    assert 0.3 in CLICK_BUCKETS_S and CLICK_BUCKETS_S[0] <= 0.025 and CLICK_BUCKETS_S[-1] >= 2.5
    assert sum(0.2 <= b <= 0.5 for b in CLICK_BUCKETS_S) >= 4  # resolution where the alert decides


def test_a_session_records_clicks_encoding_decoding_and_bytes(registry):
    metrics = ClientMetrics(registry)
    with Client("h:1", metrics=metrics) as client:
        assert client.metrics is metrics
        session = client.session(np.zeros((40, 50, 3), np.uint8))
        session.click(x=20, y=10)
        session.click(x=30, y=20, positive=False)
    value = registry.get_sample_value
    assert value("clickmask_client_click_seconds_count", MODEL) == 2
    assert value("clickmask_client_encode_seconds_count", MODEL) == 2
    assert value("clickmask_client_decode_seconds_count", MODEL) == 2
    total = value("clickmask_client_click_seconds_sum", MODEL)
    parts = value("clickmask_client_encode_seconds_sum", MODEL) + value("clickmask_client_decode_seconds_sum", MODEL)
    assert 0 < parts <= total
    # the click latency is the one the session history reports
    assert total == pytest.approx(sum(r.latency_s for r in session.history), rel=0.05, abs=2e-3)
    assert value("clickmask_client_request_seconds_count", {**MODEL, "outcome": "ok"}) == 2
    assert value("clickmask_client_sent_bytes_total", MODEL) == 2 * REQUEST_BYTES
    assert value("clickmask_client_received_bytes_total", MODEL) == 2 * RESPONSE_BYTES


def test_errors_by_grpc_status_and_retries(registry):
    with Client("h:1", retries=2, metrics=ClientMetrics(registry)) as client:
        session = client.session(np.zeros((40, 50, 3), np.uint8))
        client._triton.failures = [server_error("UNAVAILABLE")]
        session.click(x=20, y=10)  # succeeds on the retry
        client._triton.failures = [server_error("INVALID_ARGUMENT", "bad input")]
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            session.click(x=21, y=10)
        client._triton.failures = [server_error("UNAVAILABLE")] * 3
        with pytest.raises(ServerUnavailableError):
            client.infer(sample_inputs())
    value = registry.get_sample_value
    assert value("clickmask_client_grpc_errors_total", {**MODEL, "code": "UNAVAILABLE"}) == 4
    assert value("clickmask_client_grpc_errors_total", {**MODEL, "code": "INVALID_ARGUMENT"}) == 1
    assert value("clickmask_client_retries_total", MODEL) == 3
    assert value("clickmask_client_errors_total", {**MODEL, "kind": "InferenceError"}) == 1
    assert value("clickmask_client_errors_total", {**MODEL, "kind": "ServerUnavailableError"}) == 1
    assert value("clickmask_client_request_seconds_count", {**MODEL, "outcome": "error"}) == 2
    # failed clicks are not clicks the annotator saw a mask for
    assert value("clickmask_client_click_seconds_count", MODEL) == 1
    assert value("clickmask_client_sent_bytes_total", MODEL) == REQUEST_BYTES


def test_async_session_records_clicks(monkeypatch):
    import tritonclient.grpc.aio as aio

    monkeypatch.setattr(aio, "InferenceServerClient", FakeAioTriton)
    registry = CollectorRegistry()

    async def scenario():
        async with AsyncClient("h:1", metrics=ClientMetrics(registry)) as client:
            session = await client.session(np.zeros((40, 50, 3), np.uint8))
            await session.click(x=20, y=10)

    asyncio.run(scenario())
    assert registry.get_sample_value("clickmask_client_click_seconds_count", MODEL) == 1
    assert registry.get_sample_value("clickmask_client_sent_bytes_total", MODEL) == REQUEST_BYTES


def test_a_registry_takes_one_instance():
    registry = CollectorRegistry()
    ClientMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        ClientMetrics(registry)


def test_serve_exposes_the_registry_on_loopback(registry):
    metrics = ClientMetrics(registry)
    metrics.observe_click("clickmask", total_s=0.12, encode_s=0.01, decode_s=0.02)
    port = free_port()
    served = metrics.serve(port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        if isinstance(served, tuple):  # prometheus_client >= 0.17: (server, thread)
            served[0].shutdown()
    assert 'clickmask_client_click_seconds_bucket{le="0.3",model="clickmask"} 1.0' in text
    assert "python_gc" not in text  # the caller's registry only, not the process collectors

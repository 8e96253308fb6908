"""Past capacity: the shipped config drops requests whose client has gone; a queue policy rejects.

The shipped embedded config (no batcher, no queue policy since session 13) bounds a request's
wait by its client's deadline: once the deadline passes, Triton marks the request cancelled and
the adapter answers it without running the network (``clickmask.serving.cancelled``). A burst of
48 requests with a 0.25 s deadline shows it on a server of its own, counted by the adapter's
``clickmask_cancelled_requests_total`` metric.

The opt-in queue policy (``clickmask export repository --dynamic-batching --queue-policy``)
rejects at once instead: a second tritonserver serves a copy of the repository whose config
comes from the same generator with a tiny queue (``max_queue_size=4``), so the same burst
overflows it on this CPU. Figures go to stdout (``pytest -s``); docs/reliability.md has them.
"""
from __future__ import annotations

import concurrent.futures
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import Client, DeadlineExceededError, ServerOverloadedError
from clickmask.export.model_config import Contract, python_config
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port

BURST = 48
MAX_QUEUE = 4


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("small-queue-repo")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clickmask", repo / "clickmask",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "clickmask" / "config.pbtxt").write_text(
        python_config(Contract(320), dynamic_batching=True, max_queue_size=MAX_QUEUE, queue_timeout_us=2_000_000))
    config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), startup_timeout_s=180.0)
    with TritonServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """The committed embedded config, on a server of its own (the burst must not disturb others)."""
    repo = tmp_path_factory.mktemp("shipped-repo")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clickmask", repo / "clickmask",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), startup_timeout_s=180.0)
    with TritonServer(config) as server:
        yield server


def _cancelled_total(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("clickmask_cancelled_requests_total{"))


def _inputs():
    inputs = []
    for name, channels in (("image", 3), ("clicks", 2), ("prev_mask", 1)):
        tensor = grpcclient.InferInput(name, [1, channels, 320, 320], "UINT8")
        tensor.set_data_from_numpy(np.zeros((1, channels, 320, 320), np.uint8))
        inputs.append(tensor)
    return inputs


def _burst(url: str, count: int, timeout_s: float = 30) -> list[tuple[str, float, str]]:
    """``count`` requests released together; (status, seconds, message) for each."""
    clients = [grpcclient.InferenceServerClient(url) for _ in range(count)]
    for client in clients[:1]:
        client.infer("clickmask", _inputs())  # connected and warm
    barrier = threading.Barrier(count)

    def send(client):
        inputs = _inputs()
        barrier.wait()
        started = time.perf_counter()
        try:
            client.infer("clickmask", inputs, client_timeout=timeout_s)
            return "ok", time.perf_counter() - started, ""
        except InferenceServerException as error:
            return str(error.status()), time.perf_counter() - started, error.message()

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        results = list(pool.map(send, clients))
    for client in clients:
        client.close()
    return results


def test_the_shipped_config_has_no_queue_policy_and_no_batcher():
    text = (DEFAULT_MODEL_REPOSITORY / "clickmask" / "config.pbtxt").read_text()
    assert "default_queue_policy" not in text and "dynamic_batching" not in text


def test_requests_past_their_deadline_are_dropped_without_running(shipped_server):
    """A burst the CPU cannot serve within the 0.25 s deadline: every call returns by its
    deadline, and most of the late requests never reach the network."""
    deadline_s = 0.25
    url = shipped_server.config.grpc_url
    before = _cancelled_total(shipped_server.config.metrics_url)
    results = _burst(url, BURST, timeout_s=deadline_s)
    ok = [s for status, s, _ in results if status == "ok"]
    late = [s for status, s, _ in results if status == "StatusCode.DEADLINE_EXCEEDED"]
    time.sleep(2.0)  # the queue drains: every late request has been answered or dropped
    skipped = _cancelled_total(shipped_server.config.metrics_url) - before
    print(f"\nburst of {BURST}, deadline {deadline_s} s, shipped config: {len(ok)} answered, {len(late)} past "
          f"the deadline, {skipped:.0f} of them dropped without running; slowest call "
          f"{max(s for _, s, _ in results):.3f} s")
    assert len(ok) + len(late) == BURST, {status for status, _, _ in results}
    assert late, "the burst did not outlast the deadline"
    assert max(s for _, s, _ in results) < deadline_s + 0.5
    # The network ran for the answered ones and for those already running at their deadline;
    # the rest waited in the queue and were dropped.
    assert late and skipped >= len(late) // 2, f"only {skipped:.0f} of {len(late)} late requests were dropped"
    assert skipped <= len(late)
    # The server answers normally right after.
    assert _burst(url, 1)[0][0] == "ok"


def test_a_burst_past_the_queue_is_rejected_fast_and_the_accepted_stay_bounded(small_queue_server):
    url = small_queue_server.config.grpc_url
    results = _burst(url, BURST)
    accepted = sorted(s for status, s, _ in results if status == "ok")
    rejected = sorted(s for status, s, _ in results if status != "ok")
    messages = {m.split("] ")[-1] for status, _, m in results if status != "ok"}
    print(f"\nburst of {BURST}, max_queue_size {MAX_QUEUE}: {len(accepted)} accepted "
          f"(p50 {np.median(accepted):.3f} s, max {accepted[-1]:.3f} s), {len(rejected)} rejected "
          f"(p50 {np.median(rejected) if rejected else 0:.3f} s, max {max(rejected, default=0):.3f} s): {messages}")
    assert rejected, "the burst did not overflow the queue"
    assert accepted, "nothing was accepted"
    assert messages <= {"Exceeds maximum queue size", "Request timeout expired"}
    assert all(status == "StatusCode.UNAVAILABLE" for status, _, _ in results if status != "ok")
    # Rejections do not wait for the model; accepted requests wait for at most a few batches.
    assert np.median(rejected) < np.median(accepted)
    assert accepted[-1] < 10.0
    # The server is still fine afterwards.
    assert _burst(url, 1)[0][0] == "ok"


def test_the_client_backs_off_and_gives_up_within_its_deadline(small_queue_server):
    url = small_queue_server.config.grpc_url
    size = 320
    request = {"image": np.zeros((3, size, size), np.uint8), "clicks": np.zeros((2, size, size), np.uint8),
               "prev_mask": np.zeros((1, size, size), np.uint8)}
    deadline_s = 3.0

    def annotate(_):
        with Client(url, timeout_s=deadline_s, retries=4, backoff_s=0.2) as client:
            client.size  # noqa: B018 - model info outside the timed part
            started = time.perf_counter()
            try:
                client.infer(request)
                return "ok", time.perf_counter() - started
            except ServerOverloadedError:
                return "overloaded", time.perf_counter() - started
            except DeadlineExceededError:
                return "deadline", time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(annotate, range(BURST)))
    outcomes = [outcome for outcome, _ in results]
    slowest = max(seconds for _, seconds in results)
    print(f"\nclients with retries: {outcomes.count('ok')} ok, {outcomes.count('overloaded')} rejected after "
          f"backing off, {outcomes.count('deadline')} at the deadline; slowest call {slowest:.2f} s "
          f"(deadline {deadline_s} s)")
    assert outcomes.count("ok") > BURST // 4, "backoff with jitter should let many more clients through"
    assert slowest < deadline_s + 1.0, "a call outlived its deadline"

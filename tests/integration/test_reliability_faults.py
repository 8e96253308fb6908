"""Faults: a restart in the middle of a session, a killed Python-backend stub, no server at all.

These tests own a tritonserver of their own (free ports, restarted on the same ports), so the
shared ``triton`` fixture is never disturbed.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import AsyncClient, Client, ClickmaskError, ServerUnavailableError
from clickmask.imageio import read_rgb
from clickmask.serving.server import ServerConfig, TritonServer

from ..conftest import free_port

CLICKS = [(150.0, 120.0, True), (200.0, 90.0, True), (60.0, 40.0, False)]


@pytest.fixture(scope="module")
def own_server():
    config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                          startup_timeout_s=180.0, stop_timeout_s=5.0)
    server = TritonServer(config).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image(grabcut_dir):
    return read_rgb(sorted((grabcut_dir / "images").iterdir())[0])


def _replay(url, image, clicks):
    with Client(url, timeout_s=30, retries=5, backoff_s=0.5) as client:
        session = client.session(image)
        for x, y, positive in clicks:
            mask = session.click(x=x, y=y, positive=positive)
        return mask


def test_a_session_survives_a_server_restart_with_its_state(own_server, image):
    url = own_server.config.grpc_url
    with Client(url, timeout_s=3, retries=1, backoff_s=0.1) as client:
        session = client.session(image)
        for x, y, positive in CLICKS[:2]:
            session.click(x=x, y=y, positive=positive)
        clicks_before, mask_before = session.clicks, session.mask

        own_server.stop()
        started = time.perf_counter()
        with pytest.raises(ServerUnavailableError, match="check that tritonserver is running"):
            session.click(x=CLICKS[2][0], y=CLICKS[2][1], positive=CLICKS[2][2])
        assert time.perf_counter() - started < 3 + 1, "a click against a stopped server must not hang"
        assert session.clicks == clicks_before and session.mask is mask_before  # nothing lost

        own_server.start()  # the same ports
        client.retries, client.timeout_s, client.backoff_s = 6, 30.0, 0.5  # the reconnect may take a retry
        mask = session.click(x=CLICKS[2][0], y=CLICKS[2][1], positive=CLICKS[2][2])

    assert len(session.clicks) == 3 and session.clicks[:2] == clicks_before
    replayed = _replay(url, image, CLICKS)  # a fresh session with the same clicks gives the same mask
    assert np.array_equal(mask.array, replayed.array)


def test_a_killed_backend_stub_breaks_the_model_until_the_server_restarts(own_server):
    """What Triton 2.51 does by itself: the model stays READY but every request fails."""
    url = own_server.config.grpc_url
    raw = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, channels in (("image", 3), ("clicks", 2), ("prev_mask", 1)):
        tensor = grpcclient.InferInput(name, [1, channels, 320, 320], "UINT8")
        tensor.set_data_from_numpy(np.zeros((1, channels, 320, 320), np.uint8))
        inputs.append(tensor)
    raw.infer("clickmask", inputs)
    stubs = own_server.model_stub_pids("clickmask")
    assert len(stubs) == 2  # two instances of the raw model
    assert len(own_server.stub_pids()) == 3  # and one of clickmask_compact
    assert not set(stubs) & set(own_server.model_stub_pids("clickmask_compact"))
    for stub in stubs:  # every instance: with one left, Triton would route part of the requests to it
        os.kill(stub, signal.SIGKILL)
    for _ in range(2):
        with pytest.raises(InferenceServerException) as info:
            raw.infer("clickmask", inputs, client_timeout=30)
        assert info.value.status() == "StatusCode.INTERNAL" and "is not healthy" in info.value.message()
    assert raw.is_model_ready("clickmask"), "Triton still calls the model ready (docs/reliability.md)"
    assert "exited" in own_server.backend_problem()
    raw.close()

    started = time.perf_counter()
    own_server.restart()
    assert own_server.backend_problem() is None
    with Client(url, timeout_s=30, retries=6, backoff_s=0.5) as client:
        assert client.infer({"image": np.zeros((3, 320, 320), np.uint8),
                             "clicks": np.zeros((2, 320, 320), np.uint8),
                             "prev_mask": np.zeros((1, 320, 320), np.uint8)}).shape == (1, 320, 320)
    print(f"\nrestart after a dead stub: {time.perf_counter() - started:.1f} s")


def test_the_supervisor_restarts_a_crashed_backend_under_load_and_clients_ride_it_out(own_server, image):
    url = own_server.config.grpc_url
    stop, done = threading.Event(), threading.Event()
    restarts_before = own_server.restarts
    supervisor = threading.Thread(target=own_server.supervise, args=(stop, 0.2), daemon=True)
    supervisor.start()
    outcomes: list[tuple[str, float]] = []

    def annotator(offset: int) -> None:
        with Client(url, timeout_s=40, retries=10, backoff_s=0.5) as client:
            session = client.session(image)
            while not done.is_set():
                started = time.perf_counter()
                try:
                    session.click(x=100.0 + offset * 20, y=80.0 + len(session.clicks) % 50, positive=True)
                    outcomes.append(("ok", time.perf_counter() - started))
                except ClickmaskError as error:
                    outcomes.append((f"{type(error).__name__}: {str(error)[:120]}", time.perf_counter() - started))
                if len(session.clicks) >= 15:
                    session.reset()

    workers = [threading.Thread(target=annotator, args=(k,), daemon=True) for k in range(3)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2.0)
        killed_at = time.perf_counter()
        os.kill(own_server.stub_pid("clickmask"), signal.SIGKILL)
        while own_server.restarts == restarts_before and time.perf_counter() - killed_at < 90:
            time.sleep(0.2)
        recovered = time.perf_counter() - killed_at
        time.sleep(3.0)  # clicks after the restart
    finally:
        done.set()
        for worker in workers:
            worker.join(60)
        stop.set()
        supervisor.join(30)
    failures = [kind for kind, _ in outcomes if kind != "ok"]
    slowest = max(seconds for _, seconds in outcomes)
    print(f"\nsupervised stub crash: restarted {recovered:.1f} s after the kill; {len(outcomes)} clicks, "
          f"{len(failures)} failed {sorted(set(failures))}; slowest click {slowest:.1f} s")
    assert own_server.restarts == restarts_before + 1
    assert not failures, "clients with retries should ride out a supervised restart"


def test_no_server_is_a_clear_error_within_the_deadline_not_a_hang(image):
    url = f"127.0.0.1:{free_port()}"
    started = time.perf_counter()
    with pytest.raises(ServerUnavailableError, match="check that tritonserver is running at this address"):
        Client(url, timeout_s=2, retries=2).session(image)
    assert time.perf_counter() - started < 3

    async def async_session():
        async with AsyncClient(url, timeout_s=2, retries=2) as client:
            await client.session(image)

    started = time.perf_counter()
    with pytest.raises(ServerUnavailableError):
        asyncio.run(async_session())
    assert time.perf_counter() - started < 3

"""The stand-in for Triton's dynamic batcher that ``clickmask bench gpu`` drives the GPU
predictor through: batches within max_batch, a bad request fails alone, honest counting."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from clickmask.errors import RequestError
from clickmask.serving.batcher import DynamicBatcher, served_load

S = 32


def _request(batch: int, value: int) -> dict[str, np.ndarray]:
    return {"image": np.full((batch, 3, S, S), value, np.uint8), "clicks": np.zeros((batch, 2, S, S), np.uint8),
            "prev_mask": np.zeros((batch, 1, S, S), np.uint8)}


class Echo:
    """Test double of the network: mask_prob = the image's first value; remembers its batch sizes."""

    def __init__(self, seconds: float = 0.0):
        self.seconds, self.sizes, self.lock = seconds, [], threading.Lock()

    def __call__(self, feeds):
        with self.lock:
            self.sizes.append(len(feeds["image"]))
        time.sleep(self.seconds)
        return feeds["image"][:, :1].copy()


def test_batches_stay_within_max_batch_and_every_request_gets_its_own_answer():
    echo = Echo(0.005)
    with DynamicBatcher(echo, S, max_batch=5, queue_delay_s=0.01, instances=2) as batcher:
        futures = [batcher.submit(_request(1 + i % 2, i)) for i in range(20)]
        bad = batcher.submit(dict(_request(1, 0), clicks=np.full((1, 2, S, S), 3, np.uint8)))
        answers = [f.result(timeout=10) for f in futures]
        assert isinstance(bad.result(timeout=10), RequestError)
    for i, answer in enumerate(answers):
        assert answer.shape == (1 + i % 2, 1, S, S) and (answer == i).all()
    assert max(echo.sizes) <= 5 and sum(echo.sizes) == sum(1 + i % 2 for i in range(20))
    assert max(echo.sizes) > 2  # requests queued while an instance was busy were batched together


def test_served_load_counts_inferences_clicks_and_latency_from_the_window():
    echo = Echo(0.004)
    requests = [_request(2, i) for i in range(4)]
    result = served_load(echo, S, requests, producers=6, seconds=0.6, ramp_s=0.2, max_batch=8, instances=1)
    assert result["errors"] == [] and result["requests"] > 10
    assert result["inferences"] == 2 * result["requests"]
    assert result["inferences_per_s"] == pytest.approx(result["inferences"] / result["seconds"], rel=0.01)
    assert 2.0 <= result["inferences_per_click"] <= 2.7  # a flip pair a click, a refine pair on 16%
    # one instance, 4 ms a batch: never more than 8 inferences per 4 ms
    assert result["inferences_per_s"] <= 8 / 0.004
    assert result["request_ms"]["p50"] >= 4.0 and result["click_ms"]["p95"] >= result["request_ms"]["p50"]
    assert 2 <= result["mean_batch"] <= 8


def test_served_load_stops_a_producer_on_a_refused_request_and_says_why():
    result = served_load(Echo(), S, [dict(_request(2, 0), image=np.zeros((2, 3, S, S), np.float32))],
                         producers=1, seconds=0.2, ramp_s=0.05)
    assert result["requests"] == 0 and "UINT8" in result["errors"][0]
    with pytest.raises(ValueError, match="producers >= 1"):
        served_load(Echo(), S, [], producers=1, seconds=1)

"""The server-side batch logic and the model configuration, without a server."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from clickmask.errors import ModelFault, RequestError
from clickmask.serving import run_batch, validate_request

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# the network's configs; the compact entry's (BYTES in and out) is checked in test_compact.py
CONFIGS = sorted(p for p in REPO_ROOT.glob("model_repository/*/config.pbtxt") if p.parent.name != "clickmask_compact")
S = 32


def _request(batch=1, size=S, **overrides):
    request = {
        "image": np.zeros((batch, 3, size, size), np.uint8),
        "clicks": np.zeros((batch, 2, size, size), np.uint8),
        "prev_mask": np.zeros((batch, 1, size, size), np.uint8),
    }
    request.update(overrides)
    return request


def _echo_mean(feeds):
    """Test double of the network: mask_prob = per-item image mean, so outputs are traceable."""
    means = feeds["image"].reshape(len(feeds["image"]), -1).mean(axis=1).astype(np.uint8)
    return np.broadcast_to(means[:, None, None, None], (len(means), 1, S, S)).copy()


def test_every_committed_config_parses_as_a_model_config():
    assert CONFIGS, "no config.pbtxt found"
    for path in CONFIGS:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert config.max_batch_size >= 8
        size = int(config.parameters["input_size"].string_value)
        dims = {tensor.name: list(tensor.dims) for tensor in config.input}
        assert dims == {"image": [3, size, size], "clicks": [2, size, size], "prev_mask": [1, size, size]}
        assert [list(t.dims) for t in config.output if t.name == "mask_prob"] == [[1, size, size]]
        # The embedded CPU entry runs each request alone since session 13; the deploy configs batch.
        embedded = path.parent.parent.name == "model_repository" and config.backend == "python"
        assert config.HasField("dynamic_batching") != embedded, path
        assert len(config.model_warmup) >= 1


def test_invalid_config_is_rejected_by_the_parser():
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "clickmask" max_batch_size: "eight"', model_config_pb2.ModelConfig())


def test_requests_are_run_as_one_batch_and_split_back_in_order():
    calls = []

    def infer(feeds):
        calls.append(len(feeds["image"]))
        return _echo_mean(feeds)

    requests = [_request(image=np.full((1, 3, S, S), v, np.uint8)) for v in (10, 20)]
    requests.append(_request(batch=2, image=np.full((2, 3, S, S), 30, np.uint8)))
    results = run_batch(requests, infer, S)
    assert calls == [4]
    assert [r.shape for r in results] == [(1, 1, S, S), (1, 1, S, S), (2, 1, S, S)]
    assert [int(r[0, 0, 0, 0]) for r in results] == [10, 20, 30]


@pytest.mark.parametrize(
    "overrides, phrase",
    [
        ({"image": None}, "input 'image' is missing"),
        ({"clicks": np.zeros((1, 2, S, S), np.float32)}, "must be UINT8"),
        ({"prev_mask": np.zeros((1, 1, S, S + 1), np.uint8)}, "expected [batch, 1, 32, 32]"),
        ({"clicks": np.full((1, 2, S, S), 255, np.uint8)}, "0/1 disks"),
        ({"prev_mask": np.zeros((2, 1, S, S), np.uint8)}, "disagree on the batch size"),
    ],
    ids=["missing", "dtype", "shape", "click-values", "batch-mismatch"],
)
def test_a_bad_request_gets_its_own_error_and_the_others_succeed(overrides, phrase):
    requests = [_request(), _request(**overrides), _request()]
    results = run_batch(requests, _echo_mean, S)
    assert isinstance(results[1], RequestError)
    assert phrase in str(results[1])
    assert all(isinstance(r, np.ndarray) for r in (results[0], results[2]))


def test_an_inference_failure_answers_every_request_with_an_error():
    def broken(feeds):
        raise RuntimeError("out of memory")

    results = run_batch([_request(), _request()], broken, S)
    assert all(isinstance(r, ModelFault) and not isinstance(r, RequestError) and "out of memory" in str(r)
               for r in results)


def test_validate_request_returns_the_batch_size():
    assert validate_request(_request(batch=3), S) == 3

"""gRPC status codes say who must act: INVALID_ARGUMENT for a bad request (the caller fixes it),
INTERNAL for a model fault on a good request (not retried), UNAVAILABLE for overload (retried;
see test_reliability_overload.py). A real tritonserver serves a model whose ONNX graph fails at
run time (a Reshape that cannot hold), beside the request validation of the real adapter.
"""
from __future__ import annotations

import pathlib
import shutil
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import Client, InferenceError
from clickmask.client.contract import INPUT_CHANNELS, INPUT_NAMES, MODEL_NAME, OUTPUT_NAME
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port

S = 64


def _broken_onnx(path: pathlib.Path) -> None:
    """Contract inputs and output, but the output comes from a Reshape to [-1, 7] of S*S pixels."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.UINT8, ["batch", INPUT_CHANNELS[n], S, S])
              for n in INPUT_NAMES]
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.UINT8, ["batch", 1, S, S])
    shape = helper.make_tensor("bad_shape", TensorProto.INT64, [2], [-1, 7])
    nodes = [helper.make_node("Reshape", ["prev_mask", "bad_shape"], ["flat"]),
             helper.make_node("Reshape", ["flat", "good_shape"], [OUTPUT_NAME])]
    good = helper.make_tensor("good_shape", TensorProto.INT64, [4], [-1, 1, S, S])
    graph = helper.make_graph(nodes, "broken", inputs, [output], initializer=[shape, good])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory):
    from clickmask.export.model_config import Contract, python_config

    repo = tmp_path_factory.mktemp("broken-repo")
    version = repo / MODEL_NAME / "1"
    version.mkdir(parents=True)
    shutil.copy(pathlib.Path(DEFAULT_MODEL_REPOSITORY) / MODEL_NAME / "1" / "model.py", version / "model.py")
    _broken_onnx(version / "model.onnx")
    (repo / MODEL_NAME / "config.pbtxt").write_text(python_config(Contract(S), warmup=False))
    config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), startup_timeout_s=180.0)
    server = TritonServer(config).start()
    yield server
    server.stop()


def _infer(url: str, clicks_value: int = 1):
    raw = grpcclient.InferenceServerClient(url)
    try:
        tensors = []
        for name in INPUT_NAMES:
            data = np.zeros((1, INPUT_CHANNELS[name], S, S), np.uint8)
            if name == "clicks":
                data[0, 0, 10, 10] = clicks_value
            tensor = grpcclient.InferInput(name, list(data.shape), "UINT8")
            tensor.set_data_from_numpy(data)
            tensors.append(tensor)
        return raw.infer(MODEL_NAME, tensors)
    finally:
        raw.close()


def test_a_model_fault_on_a_good_request_is_internal(broken_server):
    with pytest.raises(InferenceServerException) as info:
        _infer(broken_server.config.grpc_url)
    assert info.value.status() == "StatusCode.INTERNAL", info.value.message()
    assert "inference failed" in info.value.message()


def test_a_bad_request_is_invalid_argument_on_the_same_server(broken_server):
    with pytest.raises(InferenceServerException) as info:
        _infer(broken_server.config.grpc_url, clicks_value=7)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "0/1 disks" in info.value.message()


def test_the_client_does_not_retry_a_model_fault(broken_server):
    image = np.full((120, 160, 3), 128, np.uint8)
    with Client(broken_server.config.grpc_url, timeout_s=30, retries=5, backoff_s=2.0) as client:
        session = client.session(image)
        started = time.perf_counter()
        with pytest.raises(InferenceError, match="inference failed"):
            session.click(x=80, y=60)
        assert time.perf_counter() - started < 2.0  # a retry would have waited backoff_s first
        assert session.clicks == ()  # the failed click left the session as it was

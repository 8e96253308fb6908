"""The torch-cuda repository that ``clickmask export repository`` writes: its config parses with
Triton's proto and keeps the contract, and its adapter ``1/model.py`` loads and serves on the
CPU path (device cpu, no graphs) under a stand-in for ``triton_python_backend_utils``."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import types

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from clickmask.client.contract import INPUT_NAMES, OUTPUT_NAME
from clickmask.export.model_config import ModelConfigError, torch_buckets, write_repository
from clickmask.export.onnx_export import synthetic_inputs
from clickmask.serving.predictors import load_predictor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECKPOINT = REPO_ROOT / "export" / "checkpoints" / "clickmask-lite0.pt"
CPU_PATH = {"device": "cpu", "cuda_graphs": "false", "compile": "false", "precision": "fp32"}
S = 64


class _TritonError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class _Tensor:
    def __init__(self, name, array):
        self.name, self._array = name, array

    def as_numpy(self):
        return self._array


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def _fake_pb_utils() -> types.ModuleType:
    """The handful of triton_python_backend_utils names the adapter uses."""
    module = types.ModuleType("triton_python_backend_utils")
    module.TritonError, module.Tensor, module.InferenceResponse = _TritonError, _Tensor, _Response
    module.get_input_tensor_by_name = lambda request, name: _Tensor(name, request[name]) if name in request else None
    module.get_output_config_by_name = lambda config, name: next(o for o in config["output"] if o["name"] == name)
    module.triton_string_to_numpy = lambda dtype: {"TYPE_UINT8": np.uint8}[dtype]
    return module


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> pathlib.Path:
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} is missing")
    out = tmp_path_factory.mktemp("repo")
    write_repository("torch-cuda", out, checkpoint_path=CHECKPOINT, size=S, max_batch_size=8,
                     predictor_options=CPU_PATH)
    return out / "clickmask"


def test_torch_cuda_repository_defaults_keep_the_contract_on_gpu_instances(tmp_path):
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} is missing")
    path = write_repository("torch-cuda", tmp_path, checkpoint_path=CHECKPOINT)
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    assert (config.backend, config.max_batch_size) == ("python", 128)
    assert [(t.name, list(t.dims)) for t in config.input] == [(n, [c, 320, 320]) for n, c in
                                                               (("image", 3), ("clicks", 2), ("prev_mask", 1))]
    assert config.parameters["input_size"].string_value == "320"  # from the checkpoint
    group = config.instance_group[0]
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_GPU, 2)
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["predictor"] == "torch-cuda" and "device" not in params  # Triton's instance device
    buckets = [int(b) for b in params["batch_buckets"].split(",")]
    assert set(config.dynamic_batching.preferred_batch_size) <= set(buckets)  # no padding for a preferred batch
    assert buckets[-1] == config.max_batch_size and config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert (path.parent / "1" / "model.pt").read_bytes() == CHECKPOINT.read_bytes()
    assert (path.parent / "1" / "model.py").is_file()


def test_torch_cuda_repository_refuses_what_cannot_serve(tmp_path):
    with pytest.raises(ModelConfigError, match="--checkpoint"):
        write_repository("torch-cuda", tmp_path, checkpoint_path=tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelConfigError):
        write_repository("torch-cuda", tmp_path, checkpoint_path=broken)
    with pytest.raises(ModelConfigError, match="unknown torch-cuda options"):
        write_repository("torch-cuda", tmp_path, checkpoint_path=CHECKPOINT, predictor_options={"fast": "yes"})
    with pytest.raises(ModelConfigError, match="below max_batch_size"):
        write_repository("torch-cuda", tmp_path, checkpoint_path=CHECKPOINT, predictor_options={"batch_buckets": "2,4"})
    with pytest.raises(ModelConfigError, match="pass --onnx"):
        write_repository("python", tmp_path)
    assert torch_buckets(128) == (2, 4, 8, 16, 32, 64, 128) and torch_buckets(48) == (2, 4, 8, 16, 32, 48)


def test_the_adapter_serves_the_written_repository_on_the_cpu_path(repository, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location("clickmask_adapter_under_test", repository / "1" / "model.py")
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    config = json_format.MessageToDict(text_format.Parse((repository / "config.pbtxt").read_text(), pb.ModelConfig()),
                                       preserving_proto_field_name=True)
    model = adapter.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repository),
                      "model_version": "1", "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    assert type(model.predictor).__name__ == "CudaPredictor" and model.predictor.options.buckets == (2, 4, 8)

    good = synthetic_inputs(3, S, seed=4)
    bad = dict(synthetic_inputs(1, S), image=np.zeros((1, 3, S + 1, S), np.uint8))
    responses = model.execute([good, bad])
    assert responses[0].error is None and responses[1].error.code == "INVALID_ARG"
    (tensor,) = responses[0].output_tensors
    assert tensor.name == OUTPUT_NAME and tensor.as_numpy().shape == (3, 1, S, S)
    direct = load_predictor({k: v["string_value"] for k, v in config["parameters"].items()}, str(repository / "1"))
    np.testing.assert_array_equal(tensor.as_numpy(), direct({n: good[n] for n in INPUT_NAMES}))


def test_the_default_predictor_is_still_onnx_runtime_and_unknown_ones_are_refused(tmp_path):
    onnx = REPO_ROOT / "model_repository" / "clickmask" / "1" / "model.onnx"
    if not onnx.is_file():
        pytest.skip(f"{onnx} is missing: run 'make model'")
    predictor = load_predictor({"input_size": "320", "intra_op_threads": "1"}, str(onnx.parent))
    assert type(predictor).__name__ == "OnnxPredictor"
    with pytest.raises(ValueError, match="advertises input_size 256"):
        load_predictor({"input_size": "256"}, str(onnx.parent))
    with pytest.raises(ValueError, match="choose one of"):
        load_predictor({"input_size": "320", "predictor": "tensorflow"}, str(onnx.parent))
    with pytest.raises(FileNotFoundError, match="--backend torch-cuda --checkpoint"):
        load_predictor({"input_size": "320", "predictor": "torch-cuda"}, str(tmp_path))

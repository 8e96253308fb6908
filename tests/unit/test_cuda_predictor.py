"""The GPU predictor's code paths that run on a CPU (padding to buckets, chunks, host staging,
the compile path, options), and its CUDA-graph path where a GPU exists (marked ``gpu``)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from torch import nn

from clickmask.client.contract import INPUT_NAMES
from clickmask.errors import RequestError
from clickmask.export.onnx_export import ContractWrapper, synthetic_inputs
from clickmask.serving import run_batch
from clickmask.serving.cuda import CudaPredictor, contract_module
from clickmask.serving.cuda_options import CudaOptions, CudaPredictorError

S = 32


class TinyNet(nn.Module):
    """The networks' call signature at toy size: per-pixel logits from image, clicks and prev_mask."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 1, 1)
        self.eval()

    def forward(self, image, clicks, prev_mask):
        x = torch.relu(self.bn(self.conv(torch.cat((image, clicks, prev_mask), dim=1))))
        return {"instances": self.head(x) * 4.0}


def _reference(net, feeds):
    with torch.inference_mode():
        return ContractWrapper(net)(*[torch.from_numpy(feeds[n]) for n in INPUT_NAMES]).numpy()


def _cpu(**overrides) -> CudaOptions:
    return CudaOptions(**{"device": "cpu", "precision": "fp32", "compile": False, "cuda_graphs": False,
                          "buckets": (1, 2, 4), **overrides})


@pytest.fixture(scope="module")
def net():
    return TinyNet()


@pytest.mark.parametrize("batch", [1, 3, 4, 9])  # exact bucket, padded, largest, chunked past the largest
def test_cpu_path_pads_to_a_bucket_and_matches_the_fp32_contract(net, batch):
    predictor = CudaPredictor(net, S, _cpu())
    feeds = synthetic_inputs(batch, S, seed=batch)
    out = predictor(feeds)
    assert out.dtype == np.uint8 and out.shape == (batch, 1, S, S)
    np.testing.assert_array_equal(out, _reference(net, feeds))


def test_channels_last_does_not_change_the_answer(net):
    feeds = synthetic_inputs(3, S, seed=7)
    out = CudaPredictor(net, S, _cpu(channels_last=True))(feeds)
    np.testing.assert_array_equal(out, _reference(net, feeds))


def test_compile_path_traces_once_for_every_bucket(net):
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    torch._dynamo.reset()
    predictor = CudaPredictor(net, S, _cpu(compile=True, buckets=(2, 4, 8), compile_backend=counting_backend))
    assert sorted(predictor.warm_report["buckets"]) == [2, 4, 8]
    for batch in (1, 3, 8):
        feeds = synthetic_inputs(batch, S, seed=batch)
        np.testing.assert_array_equal(predictor(feeds), _reference(net, feeds))
    assert len(graphs) == 1, f"recompiled: {graphs}"  # one dynamic-batch graph serves every bucket


def test_run_batch_stacks_into_the_predictors_staging_memory_and_a_bad_request_fails_alone(net):
    predictor = CudaPredictor(net, S, _cpu(buckets=(2, 4, 8)))
    asked = []
    staging = predictor.host_buffers

    def spy(batch):
        asked.append(batch)
        return staging(batch)

    predictor.host_buffers = spy
    good = [synthetic_inputs(2, S, seed=1), synthetic_inputs(1, S, seed=2)]
    bad = dict(good[0], clicks=np.full((2, 2, S, S), 7, np.uint8))
    results = run_batch([good[0], bad, good[1]], predictor, S)
    assert asked == [3]  # the two good requests, 2 + 1 inferences, stacked once into staging
    assert isinstance(results[1], RequestError) and "0/1 disks" in str(results[1])
    np.testing.assert_array_equal(results[0], _reference(net, good[0]))
    np.testing.assert_array_equal(results[2], _reference(net, good[1]))


def test_session_runs_a_flip_pair_as_one_batch(net):
    predictor = CudaPredictor(net, S, _cpu())
    image = np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    mask = predictor.session(image).click(x=20, y=24)
    assert mask.array.shape == (48, 40)
    with pytest.raises(ValueError, match="at least one request"):
        predictor.infer_batch([])


def test_fp16_module_is_the_half_network_behind_the_contract(net):
    module = contract_module(net, "cpu", "fp16", channels_last=True)
    assert next(module.net.parameters()).dtype == torch.float16
    assert module.net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert next(net.parameters()).dtype == torch.float32  # the caller's network is left alone


def test_options_round_trip_through_config_parameters():
    options = CudaOptions(buckets=(2, 8, 64), streams=1, compile=False)
    assert CudaOptions.from_parameters(options.as_parameters()) == options
    assert CudaOptions.from_parameters({}, device="cuda:1").device == "cuda:1"  # Triton's instance device
    assert CudaOptions.from_parameters({"device": "cuda:0"}, device="cuda:1").device == "cuda:0"
    assert CudaOptions(buckets=(2, 4)).bucket(3) == 4


@pytest.mark.parametrize(("params", "message"), [
    ({"compile": "maybe"}, "'compile' must be true or false"),
    ({"batch_buckets": "2,x"}, "comma-separated integers"),
    ({"batch_buckets": "8,4"}, "increasing sizes"),
    ({"batch_buckets": "1,2"}, "drop 1 from the buckets"),
    ({"precision": "int8"}, "precision must be one of"),
    ({"device": "cpu"}, "set cuda_graphs false"),
    ({"streams": "0"}, "streams must be at least 1"),
])
def test_bad_options_are_refused_with_the_fix(params, message):
    with pytest.raises(CudaPredictorError, match=message):
        CudaOptions.from_parameters(params)


def test_asking_for_cuda_without_a_gpu_says_how_to_run_on_the_cpu(net, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CudaPredictorError, match="device cpu and cuda_graphs false"):
        CudaPredictor(net, S, CudaOptions(compile=False))
    with pytest.raises(CudaPredictorError, match="multiple of 32"):
        CudaPredictor(net, 40, _cpu())


@pytest.mark.gpu
def test_cuda_graphs_and_compile_agree_with_eager_fp16_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch sees none)")
    from clickmask.export.checkpoint import load_checkpoint

    net, _ = load_checkpoint(pathlib.Path(__file__).resolve().parents[2] / "export" / "checkpoints" / "clickmask-lite0.pt")
    feeds = synthetic_inputs(5, 320, seed=0)
    eager = CudaPredictor(net, 320, CudaOptions(compile=False, cuda_graphs=False, buckets=(8,), streams=1))(feeds)
    served = CudaPredictor(net, 320, CudaOptions(buckets=(2, 8), streams=2))
    for out in (served(feeds), served({n: feeds[n][:1] for n in INPUT_NAMES})):
        diff = np.abs(out.astype(int) - eager[:len(out)].astype(int))
        assert diff.max() <= 3, diff.max()  # FP16 kernels differ between eager and compiled


def test_indexed_device_fills_in_the_cuda_index():
    """torch.cuda.set_device refused a bare "cuda" on the H200 (2026-12-04): the predictor now
    resolves it to the current index first; explicit indexes and the CPU pass through."""
    import torch

    from clickmask.serving.cuda import indexed_device

    assert indexed_device(torch.device("cuda"), lambda: 3) == torch.device("cuda", 3)
    assert indexed_device(torch.device("cuda:1"), lambda: 3) == torch.device("cuda", 1)
    assert indexed_device(torch.device("cpu"), lambda: 3) == torch.device("cpu")

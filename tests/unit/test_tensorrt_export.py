"""TensorRT export: the pure parts here (layer selection, profile, parity, timing); the build on a GPU.

The layer selection runs on ONNX graphs (onnx.helper and a real TorchScript export, whose node
names are what TensorRT's parser gives its layers). Parity is checked on two predictors
driven by the client's Session on GrabCut images. Tests marked ``tensorrt``/``gpu`` build a
real engine and skip, with the reason, where TensorRT or a CUDA device is missing.
"""
from __future__ import annotations

import importlib.util
import pathlib

import cv2
import numpy as np
import pytest

from clickmask.export import tensorrt_export as te

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED_ONNX = REPO_ROOT / "model_repository" / "clickmask" / "1" / "model.onnx"


# --------------------------------------------------------------------------- layer selection
@pytest.mark.parametrize(("name", "op", "reduced", "pinned"), [
    ("/feature_extractor/ocr_gather_head/Softmax", "Softmax", None, True),
    ("/feature_extractor/ocr_distri_head/object_context_block/MatMul_1", "MatMul", None, True),
    ("/feature_extractor/conv3x3_ocr/MatMul", "MatMul", None, True),
    ("/decoder/MatMul", "MatMul", None, False),
    ("/head/Softmax", "Softmax", None, False),
    ("/process/MatMul", "MatMul", None, False),          # 'ocr' inside another word is not a scope
    ("/ocr_head/Conv", "Conv", None, False),
    ("/pool/ReduceMean", "ReduceMean", 160 * 160, True),
    ("/se/ReduceMean", "ReduceMean", 64, False),
    ("/loss/ReduceSum", "ReduceSum", None, True),        # unknown size: pinned to be safe
])
def test_fp32_reason_pins_ocr_attention_and_large_reductions(name, op, reduced, pinned):
    assert (te.fp32_reason(name, op, reduced) is not None) == pinned


def test_reduction_threshold_is_configurable():
    assert te.fp32_reason("/pool/ReduceMean", "ReduceMean", 1024, te.Fp16Policy(reduce_elements=512))
    assert te.fp32_reason("/pool/ReduceMean", "ReduceMean", 1024) is None


def _reduce_graph(opset: int):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 96, 96])
    nodes, inits = [], []
    if opset >= 18:  # axes as an input
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]))
        nodes.append(helper.make_node("ReduceMean", ["x", "axes"], ["gap"], name="/pool/ReduceMean", keepdims=1))
    else:
        nodes.append(helper.make_node("ReduceMean", ["x"], ["gap"], name="/pool/ReduceMean", axes=[2, 3]))
    inits.append(helper.make_tensor("ch", TensorProto.INT64, [1], [1]))
    nodes.append(helper.make_node("ReduceSum", ["x", "ch"], ["small"], name="/channels/ReduceSum", keepdims=1))
    outputs = [helper.make_tensor_value_info("gap", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("small", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "reduce", [x], outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [17, 18])
def test_onnx_reductions_are_sized_from_shape_inference_with_axes_as_attribute_or_input(opset):
    pinned = te.fp32_onnx_nodes(_reduce_graph(opset))
    assert [(p.name, p.op) for p in pinned] == [("/pool/ReduceMean", "ReduceMean")]
    assert "9216 elements" in pinned[0].reason


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_export_of_an_ocr_head_gets_its_softmax_and_matmuls_pinned(tmp_path):
    """Node names as the real exporter writes them for HRNet-OCR-like module paths."""
    torch = pytest.importorskip("torch")
    import onnx
    from torch import nn

    class Gather(nn.Module):  # HRNet-OCR's SpatialGather: softmax over pixels, then a matmul
        def forward(self, feats, probs):
            b, c, h, w = probs.shape
            probs = torch.softmax(probs.view(b, c, h * w), dim=2)
            return torch.matmul(probs, feats.view(b, feats.shape[1], h * w).permute(0, 2, 1))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.aux_head = nn.Conv2d(8, 2, 1)
            self.ocr_gather_head = Gather()
            self.proj = nn.Linear(8, 8)

        def forward(self, x):
            feats = self.stem(x)
            context = self.ocr_gather_head(feats, self.aux_head(feats))
            return self.proj(context), feats.mean(dim=(2, 3))

    path = tmp_path / "ocr.onnx"
    with torch.no_grad():
        torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 80, 80),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False)
    pinned = te.fp32_onnx_nodes(onnx.load(str(path)))
    names = sorted(p.name for p in pinned)
    assert any("ocr_gather_head" in n and n.endswith("Softmax") for n in names), names
    assert any("ocr_gather_head" in n and "MatMul" in n for n in names), names
    assert not any("proj" in n for n in names), "a MatMul outside the OCR scope stays FP16"
    assert any(p.op == "ReduceMean" for p in pinned), "the 80x80 global mean is a large reduction"


def test_shipped_efficientnet_model_needs_no_fp32_layers():
    onnx = pytest.importorskip("onnx")
    if not SHIPPED_ONNX.is_file():
        pytest.skip(f"{SHIPPED_ONNX} not built (make model)")
    assert te.fp32_onnx_nodes(onnx.load(str(SHIPPED_ONNX))) == []


# --------------------------------------------------------------------------------- profile
def test_profile_spans_batch_one_to_max_with_s_fixed():
    shapes = te.profile_shapes({"image": (-1, 3, 320, 320), "clicks": (None, 2, 320, 320)}, 4, 16)
    assert shapes["image"] == ((1, 3, 320, 320), (4, 3, 320, 320), (16, 3, 320, 320))
    assert shapes["clicks"][2] == (16, 2, 320, 320)


@pytest.mark.parametrize(("inputs", "match"), [
    ({"image": (1, 3, 320, 320)}, "dynamic batch"),
    ({"image": (-1, 3, -1, -1)}, "only the batch dimension"),
])
def test_profile_refuses_graphs_without_a_dynamic_batch_or_with_dynamic_s(inputs, match):
    with pytest.raises(te.TensorRTBuildError, match=match):
        te.profile_shapes(inputs, 1, 4)


def test_profile_refuses_opt_above_max():
    with pytest.raises(ValueError, match="opt batch"):
        te.profile_shapes({"image": (-1, 3, 64, 64)}, 8, 4)


def test_trtexec_command_mirrors_the_build():
    shapes = te.profile_shapes({"image": (-1, 3, 64, 64)}, 2, 8)
    cmd = te.trtexec_command("m.onnx", "m.plan", shapes, 1024, "m.cache",
                             [te.PinnedLayer("/ocr/Softmax", "Softmax", "r")])
    for part in ("--fp16", "--minShapes=image:1x3x64x64", "--optShapes=image:2x3x64x64",
                 "--maxShapes=image:8x3x64x64", "--memPoolSize=workspace:1024M", "--timingCacheFile=m.cache",
                 "--precisionConstraints=obey", "--layerPrecisions=/ocr/Softmax:fp32"):
        assert part in cmd


def test_dry_run_prints_the_plan_without_tensorrt(capsys):
    from clickmask.cli import main

    if not SHIPPED_ONNX.is_file():
        pytest.skip(f"{SHIPPED_ONNX} not built (make model)")
    assert main(["export", "tensorrt", "--onnx", str(SHIPPED_ONNX), "--max-batch", "8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[8, 3, 320, 320]" in out and "FP32-pinned layers (0)" in out and "trtexec --onnx=" in out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_without_tensorrt_says_how_to_install(tmp_path):
    with pytest.raises(te.TensorRTUnavailableError, match=r"pip install 'clickmask\[tensorrt\]'"):
        te.build_engine(te.BuildConfig(SHIPPED_ONNX, tmp_path / "m.plan"))


# ---------------------------------------------------------------------------------- parity
class BlobPredictor:
    """A stand-in model: a disk of radius 12 network pixels around the positive clicks."""

    size = 64

    def __init__(self, corrupt_calls=()):
        self.calls = 0
        self.corrupt_calls = set(corrupt_calls)

    def infer(self, inputs):
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25))
        out = cv2.dilate(inputs["clicks"][0], kernel)[None] * 255
        if self.calls in self.corrupt_calls:
            out[:, : self.size // 2] = 0  # this call loses the left half of its mask
        self.calls += 1
        return out.astype(np.uint8)


@pytest.fixture(scope="module")
def grabcut_samples(grabcut_dir):
    return list(te.load_samples(grabcut_dir, limit=3))


def test_identical_models_agree_on_every_image(grabcut_samples):
    report = te.compare_on_images(BlobPredictor(), BlobPredictor(), grabcut_samples, clicks_per_image=2)
    assert report.passed and len(report.images) == 3
    assert all(r.min_iou == 1.0 and r.max_abs_diff_levels == 0 and r.clicks == 2 for r in report.images)
    assert "PASS" in str(report)


def test_parity_reports_the_worst_image_and_fails_below_the_bar(grabcut_samples):
    # 2 clicks per image: call 3 is the second click on the second image
    report = te.compare_on_images(BlobPredictor(), BlobPredictor(corrupt_calls={3}), grabcut_samples,
                                  clicks_per_image=2)
    second = grabcut_samples[1][0]
    assert not report.passed
    assert report.worst.sample_id == second and report.worst.min_iou < 0.99
    assert report.worst.max_abs_diff_levels == 255
    assert [r.sample_id for r in report.failures] == [second]
    summary = report.as_dict()
    assert summary["worst"]["sample_id"] == second and summary["failures"] == [second]
    assert f"worst {second}" in str(report) and "FAIL" in str(report)


def test_models_of_different_sizes_cannot_be_compared(grabcut_samples):
    other = BlobPredictor()
    other.size = 96
    with pytest.raises(ValueError, match="different sizes"):
        te.compare_on_images(BlobPredictor(), other, grabcut_samples[:1])


def test_onnx_runtime_against_itself_on_grabcut(grabcut_samples):
    """The CLI's reference path (OnnxPredictor, FP32) on the shipped model: identical runs agree."""
    from clickmask.serving import OnnxPredictor

    if not SHIPPED_ONNX.is_file():
        pytest.skip(f"{SHIPPED_ONNX} not built (make model)")
    reference = OnnxPredictor(SHIPPED_ONNX, threads=1)
    report = te.compare_on_images(reference, OnnxPredictor(SHIPPED_ONNX, threads=1), grabcut_samples[:2],
                                  clicks_per_image=2)
    assert report.passed and report.mean_iou == 1.0


# ---------------------------------------------------------------------------------- timing
def test_timing_summary_is_trtexec_style():
    timing = te.summarize_timings(4, [2.0, 1.0, 3.0, 2.0, 10.0])
    assert (timing.batch, timing.iterations, timing.median_ms, timing.min_ms) == (4, 5, 2.0, 1.0)
    assert timing.mean_ms == pytest.approx(3.6)
    assert timing.images_per_s == pytest.approx(2000.0)
    assert 3.0 < timing.p99_ms <= 10.0
    with pytest.raises(ValueError):
        te.summarize_timings(1, [])


def test_time_batches_runs_the_batched_predictor_at_each_size():
    seen = []

    def run(feeds):
        assert {k: v.dtype for k, v in feeds.items()} == {n: np.uint8 for n in te.INPUT_NAMES}
        seen.append(feeds["image"].shape[0])
        return np.zeros((feeds["image"].shape[0], 1, 32, 32), np.uint8)

    results = te.time_batches(run, 32, [1, 4], warmup=2, iterations=3)
    assert [r.batch for r in results] == [1, 4] and all(r.iterations == 3 for r in results)
    assert seen == [1] * 5 + [4] * 5


# ----------------------------------------------------------------------- TensorRT on a GPU
def _needs_tensorrt_and_gpu():
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed (pip install 'clickmask[tensorrt]' on a GPU machine)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: a TensorRT engine builds and runs only on an NVIDIA GPU")
    if not SHIPPED_ONNX.is_file():
        pytest.skip(f"{SHIPPED_ONNX} not built (make model)")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_engine_matches_onnx_runtime_on_grabcut(tmp_path, grabcut_dir):
    _needs_tensorrt_and_gpu()
    from clickmask.serving import OnnxPredictor

    config = te.BuildConfig(SHIPPED_ONNX, tmp_path / "model.plan", opt_batch=2, max_batch=4,
                            workspace_mib=2048, timing_cache=tmp_path / "cache")
    result = te.build_engine(config)
    assert (tmp_path / "model.plan").stat().st_size > 0 and (tmp_path / "cache").is_file()
    assert result.size == 320
    engine = te.TensorRTPredictor(tmp_path / "model.plan")
    assert (engine.size, engine.max_batch) == (320, 4)
    report = te.compare_on_images(OnnxPredictor(SHIPPED_ONNX), engine, te.load_samples(grabcut_dir, 10),
                                  clicks_per_image=3)
    assert report.passed, str(report)
    batch = te.timing_inputs(6, 320)  # more than the profile max: split into chunks
    assert engine(batch).shape == (6, 1, 320, 320)
    assert te.summarize_timings(4, engine.time_compute(4, warmup=2, iterations=5), kind="gpu").iterations == 5


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ritm_hrnet18s_ocr_attention_is_exactly_what_gets_pinned(tmp_path):
    """The real RITM HRNet18s-OCR graph: the spatial gather and object attention, nothing else."""
    torch = pytest.importorskip("torch")
    import onnx

    from clickmask.export.networks import NETWORKS, build_network
    from clickmask.export.onnx_export import export_onnx

    if "ritm-hrnet18s" not in NETWORKS:
        pytest.skip("ritm-hrnet18s is not registered")
    torch.manual_seed(0)
    path = tmp_path / "hrnet18s.onnx"
    export_onnx(build_network("ritm-hrnet18s"), path, size=64, check=False)
    pinned = te.fp32_onnx_nodes(onnx.load(str(path)))
    assert sorted((p.name.rsplit("/", 2)[-2], p.op) for p in pinned) == [
        ("object_context_block", "MatMul"), ("object_context_block", "MatMul"), ("object_context_block", "Softmax"),
        ("ocr_gather_head", "MatMul"), ("ocr_gather_head", "Softmax")]

"""ONNX export behind the uint8 contract, with parity against torch."""

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from clickmask.export.networks import build_network  # noqa: E402
from clickmask.export.onnx_export import (  # noqa: E402
    ContractWrapper,
    ParityError,
    export_onnx,
    synthetic_inputs,
)

SIZE = 64


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network("efficientnet-lite0").eval()


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(net, path, size=SIZE, batch_sizes=(1, 3))
    return path, report


def test_wrapper_maps_uint8_contract_to_uint8_mask_prob(net):
    feeds = synthetic_inputs(2, SIZE)
    with torch.no_grad():
        out = ContractWrapper(net)(*(torch.from_numpy(feeds[k]) for k in ("image", "clicks", "prev_mask")))
    assert out.dtype == torch.uint8 and out.shape == (2, 1, SIZE, SIZE)


def test_export_passes_parity_at_batch_1_and_3(exported):
    _, report = exported
    assert report.passed and report.batch_sizes == (1, 3)
    assert report.max_abs_diff_levels <= 2 and report.flip_fraction <= 1e-3


def test_graph_has_contract_names_dtypes_and_dynamic_batch(exported):
    path, _ = exported
    model = onnx.load(str(path))
    def sig(values):
        return {v.name: (v.type.tensor_type.elem_type,
                         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values}
    u8 = onnx.TensorProto.UINT8
    assert sig(model.graph.input) == {
        "image": (u8, ["batch", 3, SIZE, SIZE]),
        "clicks": (u8, ["batch", 2, SIZE, SIZE]),
        "prev_mask": (u8, ["batch", 1, SIZE, SIZE]),
    }
    assert sig(model.graph.output) == {"mask_prob": (u8, ["batch", 1, SIZE, SIZE])}
    # constant paddings were folded: no shape arithmetic left in the graph
    assert not {"Shape", "ConstantOfShape", "Slice"} & {n.op_type for n in model.graph.node}


def test_onnx_runtime_runs_batch_of_five(exported):
    path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["mask_prob"], synthetic_inputs(5, SIZE, seed=3))
    assert out.dtype == np.uint8 and out.shape == (5, 1, SIZE, SIZE)


def test_size_must_be_a_multiple_of_32(net, tmp_path):
    with pytest.raises(ValueError, match="multiple of 32"):
        export_onnx(net, tmp_path / "m.onnx", size=100)


def test_parity_failure_raises(net, tmp_path, monkeypatch):
    import clickmask.export.onnx_export as mod

    monkeypatch.setattr(mod, "MAX_ABS_DIFF_LEVELS", -1)
    with pytest.raises(ParityError, match="FAIL"):
        export_onnx(net, tmp_path / "m.onnx", size=SIZE, batch_sizes=(1,))

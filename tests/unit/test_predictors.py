"""The predictor a Python-backend config asks for, and its ONNX Runtime options."""
from __future__ import annotations

import pytest

from clickmask.export.model_config import Contract, python_config
from clickmask.serving.predictors import load_predictor, parse_spinning


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("0", False), ("false", False),
                                             ("1", True), ("True", True), (" on ", True)])
def test_allow_spinning_parameter_is_parsed(value, expected):
    assert parse_spinning(value) is expected


def test_a_bad_allow_spinning_value_names_the_choices():
    with pytest.raises(ValueError, match="allow_spinning 'sometimes' is not one of 0, 1"):
        parse_spinning("sometimes")


def test_python_config_writes_allow_spinning_only_when_set():
    assert "allow_spinning" not in python_config(Contract(320), allow_spinning=None)
    off = python_config(Contract(320), allow_spinning=False)
    assert 'key: "allow_spinning" value { string_value: "0" }' in off
    assert 'string_value: "1"' in python_config(Contract(320), allow_spinning=True)


def test_load_predictor_passes_spinning_to_onnxruntime(tmp_path):
    onnx = tmp_path / "1" / "model.onnx"
    onnx.parent.mkdir()
    _tiny_onnx(onnx)
    predictor = load_predictor({"input_size": "32", "allow_spinning": "0", "intra_op_threads": "1"}, str(onnx.parent))
    assert predictor.spinning is False and predictor.threads == 1
    assert predictor.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _tiny_onnx(path):
    import torch

    from clickmask.export.onnx_export import ContractWrapper

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 1, 1)

        def forward(self, image, clicks, prev_mask):
            return {"instances": self.conv(torch.cat([image, clicks, prev_mask], dim=1))}

    wrapper = ContractWrapper(Tiny()).eval()
    inputs = tuple(torch.zeros(1, c, 32, 32, dtype=torch.uint8) for c in (3, 2, 1))
    torch.onnx.export(wrapper, inputs, str(path), input_names=["image", "clicks", "prev_mask"],
                      output_names=["mask_prob"], dynamic_axes={n: {0: "batch"} for n in
                                                                ("image", "clicks", "prev_mask", "mask_prob")},
                      opset_version=17, dynamo=False)

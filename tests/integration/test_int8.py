"""int8 export of the shipped model: calibration on real sessions, the parity check, serving it
in-process through the client Session, and scoring it with ``clickmask select --precision int8``."""
from __future__ import annotations

import json
import pathlib

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
FP32 = ROOT / "model_repository" / "clickmask" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory, datasets_dir):
    from clickmask.export.quantize import export_int8
    from clickmask.export.val_list import DEFAULT_LIST

    if not FP32.is_file():
        pytest.fail(f"{FP32} is missing: run 'make model'")
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    report = export_int8(FP32, out, datasets_dir, DEFAULT_LIST, calibration_inputs=16, parity_inputs=12, threads=2)
    return out, report


def test_int8_file_keeps_the_contract_and_passes_parity(int8_file):
    import onnx

    out, report = int8_file
    assert report.passed, str(report)
    assert len(report.ious) == 12 and report.mean_iou >= 0.97
    fp32, int8 = onnx.load(str(FP32)), onnx.load(str(out))
    signature = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]
    assert signature(int8) == signature(fp32)
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    # the late scope leaves the stem and the decoder in float
    quantized_inputs = {i for n in int8.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    stem = next(n for n in int8.graph.node if n.name.startswith("/net/backbone/_conv_stem"))
    assert not quantized_inputs & set(stem.input)


def test_int8_file_segments_through_the_client_session(int8_file, datasets_dir):
    from clickmask.client.protocol import run_protocol
    from clickmask.datasets import list_objects, load_object
    from clickmask.serving.local import LocalPredictor

    obj = list_objects(datasets_dir, "WeizmannHorse", limit=1)[0]
    image, gt, ignore = load_object(obj)
    result = run_protocol(LocalPredictor(int8_file[0], threads=2).session(image), gt, ignore, max_clicks=5)
    assert max(result.ious) > 0.8


def test_export_int8_refuses_to_overwrite_its_reference(tmp_path, capsys):
    from clickmask.cli import main

    assert main(["export", "int8", "--onnx", str(tmp_path / "none.onnx")]) == 2
    assert "create it with 'clickmask export onnx'" in capsys.readouterr().err
    assert main(["export", "int8", "--onnx", str(FP32), "--output", str(FP32)]) == 2
    assert "must differ" in capsys.readouterr().err


def test_select_int8_scores_the_quantized_file(tmp_path):
    from clickmask.cli import main

    checkpoint = ROOT / "export" / "checkpoints" / "clickmask-lite0.pt"
    assert main(["select", str(checkpoint), "--precision", "int8", "--limit", "2", "--out", str(tmp_path)]) == 0
    score = json.loads((tmp_path / "scores.json").read_text())[0]
    assert score["int8"] is True and score["int8_parity"]["inputs"] > 0
    assert all(1 <= n <= 20 for n in score["noc90"])
    assert "| int8 |" in (tmp_path / "table.md").read_text()
    # fp32 and int8 of one checkpoint are cached apart
    assert main(["select", str(checkpoint), "--limit", "2", "--out", str(tmp_path)]) == 0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2

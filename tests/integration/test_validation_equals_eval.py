"""Training validation is eval: the same objects, the same Session and protocol runner, so the
NoC that picks a checkpoint is the NoC users see. Only the arithmetic differs (FP32 torch in
training, ONNX Runtime in eval, at most 2 uint8 levels apart by the export parity check).

Tolerance (stated): per object, NoC@90 may differ by at most 1 click, and on at most 1 in 8
objects; the run's mean NoC@90 by at most 0.25.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from clickmask.datasets import read_object_list
from clickmask.evaluation import evaluate
from clickmask.export.checkpoint import load_checkpoint
from clickmask.export.train import validate
from clickmask.export.torch_predictor import TorchPredictor
from clickmask.export.val_list import DEFAULT_LIST
from clickmask.serving.local import LocalPredictor
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

pytestmark = pytest.mark.slow
CHECKPOINT = pathlib.Path(__file__).resolve().parents[2] / "export" / "checkpoints" / "clickmask-lite0.pt"
OBJECTS = 8


@pytest.fixture(scope="module")
def objects(datasets_dir):
    listed = read_object_list(DEFAULT_LIST, datasets_dir)
    return listed[:: len(listed) // OBJECTS][:OBJECTS]  # spread over the sets of the list


def test_training_validation_matches_eval_on_the_same_objects(objects):
    torch.set_num_threads(2)
    net, config = load_checkpoint(CHECKPOINT)
    size = int(config["input_size"])
    onnx = LocalPredictor(pathlib.Path(DEFAULT_MODEL_REPOSITORY) / "clickmask" / "1" / "model.onnx", threads=2)
    served = evaluate(onnx, objects, max_clicks=20, progress=False, stop_iou=0.90)
    trained = evaluate(TorchPredictor(net, size), objects, max_clicks=20, progress=False, stop_iou=0.90)
    a, b = np.array([r.noc(0.90) for r in served]), np.array([r.noc(0.90) for r in trained])
    assert np.abs(a - b).max() <= 1 and np.count_nonzero(a != b) <= len(a) // 8, (a.tolist(), b.tolist())
    assert abs(a.mean() - b.mean()) <= 0.25
    # validate() is that same runner: its summary is the torch run's
    result = validate(net, objects, size, 20, torch.device("cpu"))
    assert result.noc90 == pytest.approx(b.mean()) and result.failures90 == sum(r.failed(0.90) for r in trained)

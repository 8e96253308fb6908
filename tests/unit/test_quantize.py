"""int8 export: the parity verdict and node scopes (no quantization run here)."""
import types

import numpy as np
import pytest

from clickmask.export.quantize import Int8Parity, QuantizationError, _mask_iou, scope_nodes


def test_parity_needs_both_the_mean_and_the_tail():
    assert Int8Parity((0.99,) * 20).passed
    # a good mean with a bad tail fails: one input in ten moved a lot
    assert not Int8Parity((1.0,) * 17 + (0.5,) * 3).passed
    # a uniform, small shift everywhere fails on the mean
    assert not Int8Parity((0.95,) * 20).passed
    report = Int8Parity((0.99, 0.98)).as_dict()
    assert report["passed"] and report["inputs"] == 2 and report["bars"]["mean_iou"] == 0.97


def test_mask_iou_of_empty_masks_is_one():
    empty = np.zeros((4, 4), bool)
    assert _mask_iou(empty, empty) == 1.0
    half = empty.copy()
    half[:2] = True
    assert _mask_iou(half, np.ones((4, 4), bool)) == 0.5


def _graph(*names):
    return types.SimpleNamespace(graph=types.SimpleNamespace(node=[types.SimpleNamespace(name=n) for n in names]))


def test_late_scope_takes_backbone_blocks_from_eight_on():
    model = _graph("/net/backbone/_conv_stem/Conv", "/net/backbone/_blocks.3/_depthwise_conv/Conv",
                   "/net/backbone/_blocks.8/_project_conv/Conv", "/net/backbone/_blocks.15/Add",
                   "/net/decoder/refine4/Conv")
    assert scope_nodes(model, "late") == ["/net/backbone/_blocks.8/_project_conv/Conv", "/net/backbone/_blocks.15/Add"]
    assert scope_nodes(model, "all") is None


def test_late_scope_on_a_graph_without_blocks_says_what_to_do():
    with pytest.raises(QuantizationError, match="use --scope all"):
        scope_nodes(_graph("/stage1/conv/Conv"), "late")
    with pytest.raises(QuantizationError, match="unknown scope"):
        scope_nodes(_graph(), "half")

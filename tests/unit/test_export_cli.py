"""The export subcommands, called the way clickmask/cli.py calls them."""

import argparse

import pytest

from clickmask.export.cli import add_export_parser, add_train_parser, train_overrides


def _parser():
    parser = argparse.ArgumentParser(prog="clickmask")
    sub = parser.add_subparsers(dest="command")
    add_export_parser(sub)
    add_train_parser(sub)
    return parser


def test_export_onnx_without_checkpoint_writes_a_checked_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "1" / "model.onnx"
    args = _parser().parse_args(["export", "onnx", "--size", "64", "--output", str(out)])
    assert args.func(args) == 0
    assert out.is_file()
    assert "ONNX parity PASS" in capsys.readouterr().out


def test_export_tensorrt_without_tensorrt_says_how_to_install(capsys):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed")
    except ImportError:
        pass
    args = _parser().parse_args(["export", "tensorrt"])
    assert args.func(args) == 2
    assert "pip install 'clickmask[tensorrt]'" in capsys.readouterr().err


def test_train_options_only_override_what_was_given():
    args = _parser().parse_args(["train", "--iters", "5", "--no-flip", "--train-sets", "COCO_MVal"])
    assert train_overrides(args) == {"iters": 5, "flip": False, "train_sets": ["COCO_MVal"]}
    assert args.resume is False

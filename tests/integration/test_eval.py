"""``clickmask eval`` gives identical numbers in-process and through the server (same ONNX file).

Exact equality of a discrete outcome (NoC) is sound here because both sides run the same ONNX
Runtime build on the same CPU, whose answers do not depend on the server's threads or batching
(checked in tests/unit/test_onnxruntime_determinism.py). Against torch, or across CPUs, they
would not be exact (tests/integration/test_validation_equals_eval.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

CLI = [sys.executable, "-m", "clickmask.cli"]
KEYS = {"dataset", "num_samples", "max_clicks", "noc85", "noc90", "noc95", "failures90", "miou_curve",
        "seconds_per_click"}


def _eval(args, tmp_path, name, wire=None):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, **({"CLICKMASK_WIRE": wire} if wire else {}))
    result = subprocess.run(CLI + ["eval", "--limit", "3", "--max-clicks", "4", "--no-progress",
                                   "--json", str(out), "--csv", str(tmp_path / f"{name}.csv"),
                                   "--plot", str(tmp_path / f"{name}.png")] + args,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_eval_in_process_and_through_the_server_agree(grpc_url, grabcut_dir, tmp_path):
    onnx = DEFAULT_MODEL_REPOSITORY / "clickmask" / "1" / "model.onnx"
    local = _eval(["--dataset", str(grabcut_dir), "--onnx", str(onnx), "--threads", "2"], tmp_path, "local")
    served = _eval(["--dataset", str(grabcut_dir), "--url", grpc_url], tmp_path, "served")
    compact = _eval(["--dataset", str(grabcut_dir), "--url", grpc_url], tmp_path, "compact", wire="compact")
    assert local["session"] == served["session"] == {"flip": False, "refine": False}  # the default: fast
    # over loopback the default sends raw tensors; the compact entry gives the same numbers
    assert (local["wire"], served["wire"], compact["wire"]) == ("in-process", "raw", "compact")
    for key in ("noc85", "noc90", "noc95", "failures90", "miou_curve"):
        assert compact[key] == served[key], key
    assert KEYS <= set(local) and KEYS <= set(served)
    assert local["num_samples"] == served["num_samples"] == 3
    assert len(local["miou_curve"]) == 4
    for key in ("noc85", "noc90", "noc95", "failures90"):
        assert local[key] == served[key], key
    assert max(abs(a - b) for a, b in zip(local["miou_curve"], served["miou_curve"])) < 1e-3
    assert (tmp_path / "local.png").stat().st_size > 1000
    assert len((tmp_path / "local.csv").read_text().splitlines()) == 4


def test_accurate_passes_agree_in_process_and_through_the_server(grpc_url, grabcut_dir, tmp_path):
    """The passes live in the client Session, so the server answers either kind like any request
    (the accurate preset's flip pair goes as one batch of two); the default is one call a click."""
    onnx = DEFAULT_MODEL_REPOSITORY / "clickmask" / "1" / "model.onnx"
    options = ["--passes", "accurate"]
    local = _eval(["--dataset", str(grabcut_dir), "--onnx", str(onnx), "--threads", "2", *options], tmp_path, "l")
    served = _eval(["--dataset", str(grabcut_dir), "--url", grpc_url, *options], tmp_path, "s")
    assert local["session"] == served["session"] == {"flip": True, "refine": True}
    for key in ("noc85", "noc90", "noc95", "failures90"):
        assert local[key] == served[key], key
    assert max(abs(a - b) for a, b in zip(local["miou_curve"], served["miou_curve"])) < 1e-3
    default = _eval(["--dataset", str(grabcut_dir), "--onnx", str(onnx), "--threads", "2"], tmp_path, "p")
    assert default["session"] == {"flip": False, "refine": False}
    assert default["miou_curve"] != local["miou_curve"]  # the passes change the answers

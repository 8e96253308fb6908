"""Shared fixtures and helpers: dataset locations, free ports, the real in-process model (counted),
and a decoder of row-major runs independent of the code under test."""
from __future__ import annotations

import os
import pathlib

import pytest
from clickmask.serving.ports import free_port

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DATASETS = pathlib.Path(os.environ.get("CLICKMASK_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))




@pytest.fixture(scope="session")
def datasets_dir() -> pathlib.Path:
    if not DATASETS.is_dir():
        pytest.fail(f"datasets not found at {DATASETS}; put ../shared beside the repo or set CLICKMASK_DATASETS")
    return DATASETS


@pytest.fixture(scope="session")
def grabcut_dir(datasets_dir) -> pathlib.Path:
    return datasets_dir / "GrabCut"


@pytest.fixture
def fast_passes(monkeypatch):
    """Sessions made without ``flip``/``refine`` run fast passes (one model call a click),
    whatever the default: for tests about what one call sends and returns. The passes
    themselves are tested in tests/unit/test_client_session_passes.py."""
    from clickmask.client.session import PASSES_ENV

    monkeypatch.setenv(PASSES_ENV, "fast")


class CountingPredictor:
    """The real in-process model, counting the inferences it runs."""

    def __init__(self, inner) -> None:
        self.inner, self.size, self.calls = inner, inner.size, 0

    def infer(self, inputs):
        self.calls += 1
        return self.inner.infer(inputs)


@pytest.fixture(scope="module")
def local_model():
    """The served ONNX file run in-process by ONNX Runtime (clickmask.serving.local)."""
    from clickmask.serving.local import LocalPredictor
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

    onnx = pathlib.Path(DEFAULT_MODEL_REPOSITORY) / "clickmask" / "1" / "model.onnx"
    if not onnx.is_file():
        pytest.fail(f"{onnx} is missing: run 'make model'")
    return LocalPredictor(onnx, threads=2)


def runs_to_mask(runs, height: int, width: int):
    """Decode row-major runs (zeros first) into an HxW bool mask."""
    import numpy as np

    flat = np.zeros(height * width, bool)
    offset = 0
    for index, run in enumerate(runs):
        if index % 2:
            flat[offset:offset + run] = True
        offset += run
    assert offset == height * width, f"runs cover {offset} pixels, the mask has {height * width}"
    return flat.reshape(height, width)

"""In-process predictor: the served ONNX file run by ONNX Runtime, with the Client's session().

Evaluation (``clickmask eval --onnx``) and ``clickmask segment --onnx`` use it to get exactly
what the server computes without a server: same file, same contract, same client encoding.
"""
from __future__ import annotations

import pathlib

import numpy as np

from clickmask.client.session import Session
from clickmask.serving import OnnxPredictor


class LocalPredictor:
    """``Client``-like object over an ONNX file: ``.size``, ``infer(inputs)``, ``session(image)``."""

    def __init__(self, onnx_path: pathlib.Path | str, threads: int = 0):
        self._predictor = OnnxPredictor(pathlib.Path(onnx_path), threads=threads)
        self.size = self._predictor.size

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Per-request contract tensors (no batch dim) → ``mask_prob`` uint8 [1, S, S]."""
        return self._predictor.infer(inputs)

    def session(self, image: np.ndarray, **options) -> Session:
        return Session(self, image, **options)

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalPredictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

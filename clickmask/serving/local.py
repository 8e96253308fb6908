"""In-process predictor: the served ONNX file run by ONNX Runtime, with the Client's session().

Evaluation (``clickmask eval --onnx``) and ``clickmask segment --onnx`` use it to get exactly
what the server computes without a server: same file, same contract, same client encoding.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

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

    def infer_batch(self, requests: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """Several requests as one ONNX Runtime batch (a session's flip pair): uint8 [N, 1, S, S].

        One batch of two costs about 0.85x two single runs on this CPU
        (``benchmarks/passes.py``), and gives the same answers."""
        if not requests:
            raise ValueError("infer_batch needs at least one request")
        batch = {name: np.stack([np.asarray(r[name]) for r in requests]) for name in requests[0]}
        return self._predictor.infer(batch)

    def session(self, image: np.ndarray, **options) -> Session:
        return Session(self, image, **options)

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalPredictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

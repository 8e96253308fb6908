"""Serving: the tritonserver launcher and supervisor (``server``), the batch logic and status
codes of the Python-backend adapter (``batching``), and the in-process ONNX Runtime predictor
(``local``). The adapter ``model_repository/clickmask/1/model.py`` imports from here.
"""
from .batching import OnnxPredictor, run_batch, validate_request

__all__ = ["OnnxPredictor", "run_batch", "validate_request"]

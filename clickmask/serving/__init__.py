"""Serving: the tritonserver launcher and supervisor (``server``), the batch logic and status
codes of the Python-backend adapter (``batching``), the in-process ONNX Runtime predictor
(``local``), the GPU predictor (``cuda``, torch; its options in ``cuda_options``, torch-free),
the choice between them from a model config (``predictors``), and a stand-in for Triton's
dynamic batcher that benchmarks drive ``run_batch`` through (``batcher``). The adapter
``model_repository/clickmask/1/model.py`` imports from here; nothing here imports torch unless
the GPU predictor is asked for.
"""
from .batching import OnnxPredictor, run_batch, validate_request

__all__ = ["OnnxPredictor", "run_batch", "validate_request"]

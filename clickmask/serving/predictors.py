"""Which predictor a Python-backend model runs, chosen by its config parameter ``predictor``.

``onnxruntime`` (the default, and what a config without the parameter gets): the ONNX file
``onnx_file`` in ONNX Runtime on the CPU, ``intra_op_threads`` threads. ``torch-cuda``: the
checkpoint ``checkpoint_file`` as :class:`~clickmask.serving.cuda.CudaPredictor` (FP16,
channels_last, compiled, CUDA graphs), options from the parameters it names. Only the chosen
one's dependencies are imported (no torch for ONNX Runtime).
"""
from __future__ import annotations

import os
from typing import Mapping

from clickmask.client.contract import SIZE_PARAMETER

PREDICTORS = ("onnxruntime", "torch-cuda")


def parse_spinning(value: str | None) -> bool | None:
    """The config parameter ``allow_spinning``: ``1``/``true`` or ``0``/``false``; absent or
    empty keeps ONNX Runtime's default (spinning)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"config parameter allow_spinning {value!r} is not one of 0, 1, true, false")


def load_predictor(params: Mapping[str, str], model_dir: str, device: str | None = None):
    """The ``InferFn`` of a model version folder ``model_dir`` (``.size`` is checked against
    ``input_size``). ``device`` is Triton's instance device (``cuda:N``) for ``torch-cuda``."""
    kind = params.get("predictor", "onnxruntime")
    size = int(params[SIZE_PARAMETER])
    if kind == "onnxruntime":
        from .batching import OnnxPredictor  # noqa: PLC0415

        source = os.path.join(model_dir, params.get("onnx_file", "model.onnx"))
        predictor = OnnxPredictor(source, threads=int(params.get("intra_op_threads", "0")),
                                  spinning=parse_spinning(params.get("allow_spinning")))
        if predictor.size != size:
            raise ValueError(f"{source} takes {predictor.size}x{predictor.size} inputs but config.pbtxt "
                             f"advertises {SIZE_PARAMETER} {size}; re-export with --size {size}")
        return predictor
    elif kind == "torch-cuda":
        from .cuda import CudaOptions, CudaPredictor  # noqa: PLC0415 - torch only on this path

        source = os.path.join(model_dir, params.get("checkpoint_file", "model.pt"))
        if not os.path.isfile(source):
            raise FileNotFoundError(f"checkpoint {source} not found; write the repository with 'clickmask export "
                                    "repository --backend torch-cuda --checkpoint FILE'")
        # the network is convolutional: it runs at the advertised S (the size it was trained at is best)
        return CudaPredictor.from_checkpoint(source, CudaOptions.from_parameters(params, device), size=size)
    raise ValueError(f"config parameter predictor {kind!r} is unknown; choose one of {list(PREDICTORS)}")

"""The PyTorch network as a client ``Predictor``: training validation and checkpoint selection
run it through the very ``Session`` and protocol runner that evaluation and serving use.

Only the arithmetic differs from serving: FP32 (or FP16 on CUDA) torch instead of ONNX Runtime.
The uint8 contract is the same (:class:`~clickmask.export.onnx_export.ContractWrapper`), so the
two agree to about one uint8 level per pixel (the export parity check's tolerance is 2 levels).
"""
from __future__ import annotations

import numpy as np
import torch

from clickmask.client.contract import INPUT_NAMES
from clickmask.client.session import Session

from .onnx_export import ContractWrapper

INPUT_ORDER = INPUT_NAMES


class TorchPredictor:
    """``.size``, ``.infer(inputs)`` and ``.session(image)`` over a network in memory."""

    def __init__(self, net: torch.nn.Module, size: int, device: torch.device | str = "cpu", half: bool = False):
        self.size = int(size)
        self.device = torch.device(device)
        self.half = bool(half)
        self._wrapper = ContractWrapper(net).eval()

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n]))[None].to(self.device) for n in INPUT_ORDER]
        if self.half:
            with torch.autocast(self.device.type, dtype=torch.float16):
                out = self._wrapper(*tensors)
        else:
            out = self._wrapper(*tensors)
        return out[0].cpu().numpy()

    def session(self, image: np.ndarray, **options) -> Session:
        return Session(self, image, **options)

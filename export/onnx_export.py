"""ONNX export of the tensor contract, with a torch vs ONNX Runtime parity check.

The exported graph takes the contract tensors of the Triton model ``clickmask``::

    image      uint8 [B, 3, S, S]  RGB
    clicks     uint8 [B, 2, S, S]  0/1 disks (channel 0 positive, 1 negative; any non-zero is 1)
    prev_mask  uint8 [B, 1, S, S]  previous probability x 255
    mask_prob  uint8 [B, 1, S, S]  object probability x 255 (output)

with a dynamic batch axis and fixed S. Parity against torch is checked as part of exporting.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clickmask.client.contract import INPUT_NAMES, OUTPUT_NAME

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PARITY_BATCH_SIZES = (1, 4)
# Tolerances: max |torch - onnx| in uint8 levels, and the fraction of pixels whose 0.5
# threshold (mask_prob >= 128) differs.
MAX_ABS_DIFF_LEVELS = 2
MAX_FLIP_FRACTION = 1e-3


class ParityError(RuntimeError):
    """ONNX Runtime does not reproduce the torch output within tolerance."""


class ContractWrapper(nn.Module):
    """Export-only wrapper: uint8 contract tensors in, ``mask_prob`` uint8 out.

    Trace-friendly on purpose: casts and arithmetic only, no indexing or data-dependent flow.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
        image_f = image.float() / 255.0
        clicks_f = (clicks > 0).float()
        prev_f = prev_mask.float() / 255.0
        logits = self.net(image_f, clicks_f, prev_f)["instances"]
        prob = torch.sigmoid(logits) * 255.0
        return torch.clamp(torch.round(prob), 0.0, 255.0).to(torch.uint8)


@dataclass(frozen=True)
class ParityReport:
    """Torch vs ONNX Runtime comparison of ``mask_prob`` on synthetic contract inputs."""

    path: str
    size: int
    opset: int
    batch_sizes: tuple[int, ...]
    max_abs_diff_levels: int
    flip_fraction: float
    torch_ms_per_image: float
    onnx_ms_per_image: float
    passed: bool

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"ONNX parity {verdict}: {self.path} (S={self.size}, opset {self.opset}, "
                f"batches {list(self.batch_sizes)}): max |torch-onnx| = {self.max_abs_diff_levels} "
                f"uint8 levels (tol {MAX_ABS_DIFF_LEVELS}), 0.5-threshold flips = "
                f"{self.flip_fraction:.2e} (tol {MAX_FLIP_FRACTION:.0e}); "
                f"torch {self.torch_ms_per_image:.1f} ms/image, onnxruntime {self.onnx_ms_per_image:.1f} ms/image")


def synthetic_inputs(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-ish but image-like contract inputs: smooth colour fields, a few disks, a blob."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(batch, 3, 8, 8)).astype(np.float32)
    image = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bicubic",
                                            align_corners=False)
    image = image.numpy() + rng.normal(0, 8, size=(batch, 3, size, size))
    yy, xx = np.mgrid[:size, :size]
    clicks = np.zeros((batch, 2, size, size), np.uint8)
    prev = np.zeros((batch, 1, size, size), np.float32)
    radius = max(2, size // 64)
    for b in range(batch):
        for _ in range(rng.integers(1, 4)):
            ch = int(rng.integers(0, 2))
            cx, cy = rng.uniform(0, size, size=2)
            clicks[b, ch][(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = 1
        if b % 2:  # half the samples carry a previous mask
            cx, cy = rng.uniform(size * 0.25, size * 0.75, size=2)
            r = rng.uniform(size * 0.1, size * 0.3)
            prev[b, 0] = 1.0 / (1.0 + np.exp(((xx - cx) ** 2 + (yy - cy) ** 2 - r ** 2) / (r * 4)))
    return {
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "clicks": clicks,
        "prev_mask": np.clip(np.rint(prev * 255), 0, 255).astype(np.uint8),
    }


def _onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(net: nn.Module, path: str | Path, size: int, opset: int = DEFAULT_OPSET,
                 batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES, seed: int = 0) -> ParityReport:
    """Run torch and ONNX Runtime on the same synthetic inputs and compare ``mask_prob``."""
    import time

    path = Path(path)
    wrapper = ContractWrapper(net).eval()
    session = _onnx_session(path)
    max_diff, flips, pixels = 0, 0, 0
    torch_s = onnx_s = 0.0
    images = 0
    for i, batch in enumerate(batch_sizes):
        feeds = synthetic_inputs(batch, size, seed=seed + i)
        t0 = time.perf_counter()
        with torch.inference_mode():
            expected = wrapper(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES)).numpy()
        t1 = time.perf_counter()
        (got,) = session.run([OUTPUT_NAME], feeds)
        t2 = time.perf_counter()
        torch_s += t1 - t0
        onnx_s += t2 - t1
        images += batch
        if got.dtype != np.uint8 or got.shape != expected.shape:
            raise ParityError(f"ONNX output {OUTPUT_NAME} is {got.dtype}{list(got.shape)}, "
                              f"expected uint8{list(expected.shape)}")
        diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
        max_diff = max(max_diff, int(diff.max()))
        flips += int(np.count_nonzero((got >= 128) != (expected >= 128)))
        pixels += expected.size
    flip_fraction = flips / pixels
    return ParityReport(
        path=str(path), size=size, opset=opset, batch_sizes=tuple(batch_sizes),
        max_abs_diff_levels=max_diff, flip_fraction=flip_fraction,
        torch_ms_per_image=1000 * torch_s / images, onnx_ms_per_image=1000 * onnx_s / images,
        passed=max_diff <= MAX_ABS_DIFF_LEVELS and flip_fraction <= MAX_FLIP_FRACTION,
    )


def fold_constants(model):
    """Evaluate every node whose inputs are all constants and store its outputs as initializers.

    The TorchScript exporter builds the paddings of ``F.pad`` with a small Shape/Slice
    subgraph that its own folding skips (a step -1 Slice); folding it here leaves plain
    constant ``Pad`` nodes, a static graph that TensorRT and every runtime like.
    """
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept, folded = [], {}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(i in known for i in node.input if i)):
            if node.op_type == "Constant" or all(
                    np.asarray(known[i]).size <= 64 for i in node.input if i):  # only small shape math
                outputs = ReferenceEvaluator(node).run(None, {i: known[i] for i in node.input if i})
                for name, value in zip(node.output, outputs):
                    known[name] = folded[name] = np.asarray(value)
                continue
        kept.append(node)
    used = {i for node in kept for i in node.input} | {o.name for o in graph.output}
    new_inits = [numpy_helper.from_array(v, name) for name, v in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    keep_inits = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits + new_inits)
    return onnx.shape_inference.infer_shapes(model)


def export_onnx(net: nn.Module, path: str | Path, size: int = 320, opset: int = DEFAULT_OPSET,
                check: bool = True, batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES) -> ParityReport | None:
    """Export ``net`` behind :class:`ContractWrapper` to ``path`` and check parity.

    Args:
        net: a registry network (float inputs, dict output); it is put in eval mode on the CPU.
        path: output ``.onnx`` file; parent folders are created.
        size: the fixed spatial size S (a multiple of 32).
        opset: ONNX opset.
        check: run ONNX Runtime against torch on batches ``batch_sizes``; raise
            :class:`ParityError` when it fails.

    Returns:
        The :class:`ParityReport` (``None`` when ``check`` is false).
    """
    if size <= 0 or size % 32:
        raise ValueError(f"size must be a positive multiple of 32, got {size}")
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    wrapper = ContractWrapper(net).eval()
    dummy = synthetic_inputs(1, size)
    args = tuple(torch.from_numpy(dummy[n]) for n in INPUT_NAMES)
    dynamic_axes = {name: {0: "batch"} for name in (*INPUT_NAMES, OUTPUT_NAME)}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter notes a Slice it cannot fold; harmless for this graph.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # The TorchScript exporter is chosen on purpose: the dynamo exporter needs onnxscript.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(
            wrapper, args, str(path),
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
            dynamo=False,
        )
    model = fold_constants(onnx.load(str(path)))
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    log.info("exported %s (S=%d, opset %d)", path, size, opset)
    if not check:
        return None
    report = check_parity(net, path, size, opset, batch_sizes)
    if not report.passed:
        raise ParityError(str(report))
    return report

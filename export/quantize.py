"""int8 export: ONNX Runtime static quantization (QDQ, per-channel) of the contract ONNX file.

The graph keeps the uint8 tensor contract. Which nodes run in int8 is the ``scope``:

- ``late`` (default): the second half of the EfficientNet-Lite backbone (MBConv blocks 8-15, low
  resolution, many channels). It passes the parity check with room to spare.
- ``all``: every node ORT can quantize. Faster, but the high-resolution early blocks (few
  channels, wide activation ranges) move the mask too far: it fails the parity check on the
  shipped model, so it is written only with ``--no-check``, for CPUs where int8 pays (VNNI).

Activations are uint8 (U8S8, the format ORT's x86 kernels expect), weights int8 per channel. Activation ranges come from real click inputs: annotation sessions on training
objects of ``COCO_MVal`` that are not on the validation list, recorded at the network input
while the FP32 model runs the standard protocol (so the inputs carry zoom-in crops, negative
clicks and previous masks, like traffic does).

The parity check replays inputs of other sessions (other objects) through both files and
compares the thresholded masks: int8 is not bit-exact, so the bar is on mask IoU, and the
number that decides whether to serve it is validation NoC (``clickmask select --precision int8``).

    clickmask export int8 --onnx model_repository/clickmask/1/model.onnx \\
        --output model_repository/clickmask/1/model.int8.onnx
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import tempfile
from typing import Sequence

import numpy as np

from clickmask.client.contract import INPUT_NAMES, PROB_THRESHOLD
from clickmask.datasets import ObjectRef, list_objects, load_object, read_object_list

log = logging.getLogger(__name__)

CALIBRATION_SET = "COCO_MVal"
DEFAULT_CALIBRATION_INPUTS = 72
DEFAULT_PARITY_INPUTS = 48
CLICKS_PER_SESSION = 4
SCOPES = ("late", "all")
#: ``late`` scope: backbone MBConv blocks from this index on (EfficientNet-Lite has 16).
LATE_FROM_BLOCK = 8
_BLOCK = re.compile(r"/_blocks\.(\d+)/")
#: Parity bars on the thresholded mask of each replayed input (int8 against FP32).
MIN_MEAN_IOU = 0.97
MIN_P10_IOU = 0.90


class QuantizationError(RuntimeError):
    """The int8 file could not be made, or it fails the parity check."""


class _Recorder:
    """A ``Client``-like wrapper that keeps every contract input the session sends."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.size = predictor.size
        self.inputs: list[dict[str, np.ndarray]] = []

    def infer(self, inputs):
        self.inputs.append({name: np.ascontiguousarray(inputs[name]) for name in INPUT_NAMES})
        return self._predictor.infer(inputs)

    def session(self, image, **options):
        from clickmask.client.session import Session  # noqa: PLC0415

        return Session(self, image, **options)


def held_out_objects(data_root: pathlib.Path | str, val_list: pathlib.Path | str | None,
                     dataset: str = CALIBRATION_SET) -> list[ObjectRef]:
    """Objects of ``dataset`` that are not on the validation list (deterministic order)."""
    objects = list_objects(pathlib.Path(data_root), dataset, training=True)
    if val_list is not None and pathlib.Path(val_list).is_file():
        taken = {o.key for o in read_object_list(val_list, data_root)}
        objects = [o for o in objects if o.key not in taken]
    if not objects:
        raise QuantizationError(f"no {dataset} objects under {data_root} to calibrate on; "
                                "pass --data-root (the shared datasets folder)")
    # spread over the set rather than its first ids
    step = max(1, len(objects) // 64)
    return objects[::step]


def record_inputs(onnx_path: pathlib.Path, objects: Sequence[ObjectRef], count: int,
                  clicks_per_session: int = CLICKS_PER_SESSION, threads: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` contract inputs from protocol sessions (FP32 model) on ``objects``, in order."""
    from clickmask.client.protocol import ProtocolRun  # noqa: PLC0415
    from clickmask.serving.local import LocalPredictor  # noqa: PLC0415

    recorder = _Recorder(LocalPredictor(onnx_path, threads=threads))
    for obj in objects:
        if len(recorder.inputs) >= count:
            break
        image, gt, ignore = load_object(obj)
        # fast passes whatever CLICKMASK_PASSES says: the same calibration inputs in every environment
        run = ProtocolRun(recorder.session(image, flip=False, refine=False), gt, ignore,
                          max_clicks=clicks_per_session)
        run.run()
    if len(recorder.inputs) < count:
        raise QuantizationError(f"only {len(recorder.inputs)} inputs from {len(objects)} objects; need {count}")
    return recorder.inputs[:count]


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over recorded inputs (batch of one)."""

    def __init__(self, inputs: Sequence[dict[str, np.ndarray]]):
        self._items = iter([{k: v[None] for k, v in item.items()} for item in inputs])

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # pragma: no cover - not called by MinMax calibration
        pass


def scope_nodes(model, scope: str) -> list[str] | None:
    """Names of the nodes to quantize (None: all of them)."""
    if scope not in SCOPES:
        raise QuantizationError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if scope == "all":
        return None
    nodes = [n.name for n in model.graph.node
             if (m := _BLOCK.search(n.name)) and int(m.group(1)) >= LATE_FROM_BLOCK]
    if not nodes:
        raise QuantizationError("scope 'late' found no EfficientNet-Lite backbone blocks "
                                f"(node names with '/_blocks.N/', N >= {LATE_FROM_BLOCK}) in the graph; "
                                "use --scope all")
    return nodes


def quantize_int8(fp32_path: pathlib.Path, out_path: pathlib.Path,
                  calibration: Sequence[dict[str, np.ndarray]], scope: str = "late",
                  per_channel: bool = True) -> pathlib.Path:
    """Write the QDQ int8 version of ``fp32_path`` to ``out_path``."""
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        nodes = scope_nodes(onnx.load(str(prepared)), scope)
        quantize_static(str(prepared), str(out_path), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=nodes,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return out_path


@dataclasses.dataclass(frozen=True)
class Int8Parity:
    ious: tuple[float, ...]
    min_mean_iou: float = MIN_MEAN_IOU
    min_p10_iou: float = MIN_P10_IOU

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious))

    @property
    def p10_iou(self) -> float:
        return float(np.percentile(self.ious, 10))

    @property
    def passed(self) -> bool:
        return self.mean_iou >= self.min_mean_iou and self.p10_iou >= self.min_p10_iou

    def as_dict(self) -> dict:
        return {"inputs": len(self.ious), "mean_iou": round(self.mean_iou, 4), "p10_iou": round(self.p10_iou, 4),
                "min_iou": round(float(min(self.ious)), 4), "passed": self.passed,
                "bars": {"mean_iou": self.min_mean_iou, "p10_iou": self.min_p10_iou}}

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"int8 parity {verdict}: mask IoU against FP32 over {len(self.ious)} session inputs: "
                f"mean {self.mean_iou:.4f} (bar {self.min_mean_iou}), 10th percentile {self.p10_iou:.4f} "
                f"(bar {self.min_p10_iou}), min {min(self.ious):.4f}")


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def compare(fp32_path: pathlib.Path, int8_path: pathlib.Path, inputs: Sequence[dict[str, np.ndarray]],
            threads: int = 0) -> Int8Parity:
    """Thresholded-mask IoU of the int8 file against the FP32 file on the same inputs."""
    from clickmask.serving import OnnxPredictor  # noqa: PLC0415

    fp32, int8 = OnnxPredictor(fp32_path, threads=threads), OnnxPredictor(int8_path, threads=threads)
    level = PROB_THRESHOLD * 255.0
    ious = []
    for item in inputs:
        a, b = fp32.infer(item), int8.infer(item)
        ious.append(_mask_iou(a >= level, b >= level))
    return Int8Parity(tuple(ious))


def export_int8(fp32_path: pathlib.Path, out_path: pathlib.Path, data_root: pathlib.Path | str,
                val_list: pathlib.Path | str | None, calibration_inputs: int = DEFAULT_CALIBRATION_INPUTS,
                parity_inputs: int = DEFAULT_PARITY_INPUTS, check: bool = True,
                threads: int = 0, keep_failed: bool = False, scope: str = "late") -> Int8Parity | None:
    """Calibrate, quantize and (unless ``check`` is False) check parity on other sessions.

    Raises :class:`QuantizationError` when the check fails (the file is removed then), unless
    ``keep_failed`` (validation scoring: the report travels with the score instead)."""
    fp32_path, out_path = pathlib.Path(fp32_path), pathlib.Path(out_path)
    if not fp32_path.is_file():
        raise QuantizationError(f"{fp32_path} not found; create it with 'clickmask export onnx'")
    if scope not in SCOPES:
        raise QuantizationError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if fp32_path.resolve() == out_path.resolve():
        raise QuantizationError("--output must differ from --onnx (the FP32 file is the reference)")
    objects = held_out_objects(data_root, val_list)
    half = len(objects) // 2
    # calibration from the first half of the objects, parity from the second: no shared session
    calibration = record_inputs(fp32_path, objects[:half], calibration_inputs, threads=threads)
    log.info("calibrating on %d inputs from %s", len(calibration), CALIBRATION_SET)
    quantize_int8(fp32_path, out_path, calibration, scope=scope)
    if not check:
        return None
    replay = record_inputs(fp32_path, objects[half:], parity_inputs, threads=threads)
    report = compare(fp32_path, out_path, replay, threads=threads)
    if not report.passed and not keep_failed:
        out_path.unlink(missing_ok=True)
        raise QuantizationError(f"{report}; the int8 file was removed")
    return report


"""Server-side batching logic, kept free of Triton so it is tested without a server.

The Python-backend adapter (``model_repository/clickmask/1/model.py``) hands every request of
one ``execute`` call to :func:`run_batch`, which validates each request on its own, stacks the
valid ones into one batch, runs the network once and splits the result. A malformed request
gets its own :class:`~clickmask.errors.RequestError`; the others in the batch still succeed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Callable, Mapping, Sequence

import numpy as np

from clickmask.client.contract import INPUT_CHANNELS, OUTPUT_NAME

from clickmask.errors import ModelFault, RequestError

LOGGER = logging.getLogger(__name__)

#: Contract inputs and their channel count; every tensor is UINT8 [batch, C, S, S].

InferFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def validate_request(inputs: Mapping[str, np.ndarray | None], size: int) -> int:
    """Check one request's tensors against the contract; return its batch size.

    Raises :class:`RequestError` with a message that names the tensor and the fix.
    """
    batch = None
    for name, channels in INPUT_CHANNELS.items():
        array = inputs.get(name)
        expected = f"[batch, {channels}, {size}, {size}]"
        if array is None:
            raise RequestError(f"input '{name}' is missing: send UINT8 {expected}")
        if array.dtype != np.uint8:
            raise RequestError(f"input '{name}' must be UINT8, got {array.dtype}: send UINT8 {expected}")
        if array.ndim != 4 or tuple(array.shape[1:]) != (channels, size, size):
            raise RequestError(f"input '{name}' has shape {list(array.shape)}; expected {expected}")
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise RequestError(f"inputs disagree on the batch size: '{name}' has {array.shape[0]}, expected {batch}")
    clicks = inputs["clicks"]
    if clicks.max(initial=0) > 1:
        raise RequestError(
            "input 'clicks' must hold 0/1 disks (channel 0 positive, 1 negative); "
            f"found the value {int(clicks.max())}: encode clicks with clickmask.client.encoding"
        )
    if batch == 0:
        raise RequestError("empty batch: send at least one item")
    return int(batch)


def run_batch(requests: Sequence[Mapping[str, np.ndarray | None]], infer: InferFn, size: int
              ) -> list[np.ndarray | RequestError | ModelFault]:
    """Run every valid request in one call of ``infer``; return one result per request.

    Each result is the request's ``mask_prob`` (UINT8 [batch, 1, S, S]), the RequestError that
    explains why it was refused (INVALID_ARGUMENT), or the ModelFault of a failed inference
    (INTERNAL: the request was fine).
    """
    results: list[np.ndarray | RequestError | ModelFault | None] = [None] * len(requests)
    valid: list[tuple[int, int]] = []
    for index, request in enumerate(requests):
        try:
            valid.append((index, validate_request(request, size)))
        except RequestError as exc:
            results[index] = exc
    if valid:
        try:
            feeds = _stack(requests, valid, infer)
            output = np.asarray(infer(feeds))
        except Exception as exc:  # noqa: BLE001 - one failure must not kill the model instance
            LOGGER.exception("inference failed for a batch of %d", sum(n for _, n in valid))
            for index, _ in valid:
                results[index] = ModelFault(f"inference failed: {exc}")
        else:
            offset = 0
            for index, count in valid:
                results[index] = output[offset:offset + count]
                offset += count
    return results  # type: ignore[return-value]


def _stack(requests, valid: list[tuple[int, int]], infer: InferFn) -> dict[str, np.ndarray]:
    """The valid requests as one batch, stacked where ``infer.host_buffers(batch)`` says (a GPU
    predictor's page-locked staging memory: one host copy fewer), else in new arrays."""
    staging = getattr(infer, "host_buffers", None)
    if staging is None and len(valid) == 1:  # one request: its own tensors, no copy
        index = valid[0][0]
        return {name: requests[index][name] for name in INPUT_CHANNELS}
    out = staging(sum(n for _, n in valid)) if staging is not None else None
    return {name: np.concatenate([requests[i][name] for i, _ in valid], axis=0,
                                 out=None if out is None else out[name]) for name in INPUT_CHANNELS}


@dataclasses.dataclass
class OnnxPredictor:
    """The contract model in ONNX Runtime, in-process (CPU by default).

    ``infer`` takes the contract tensors with or without the batch dimension and returns
    ``mask_prob`` UINT8 of shape [batch, 1, S, S] ([1, S, S] for an unbatched request).
    """

    path: pathlib.Path
    threads: int = 0
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    #: ONNX Runtime's worker threads busy-wait for work after a run (its default, None/True) or
    #: sleep at once (False): spinning shaves a little off back-to-back runs on idle cores and
    #: steals a core from everything else on a busy one (``benchmarks/serving_overhead.py``).
    spinning: bool | None = None

    def __post_init__(self) -> None:
        try:
            import onnxruntime as ort  # noqa: PLC0415 - 'serve' extra
        except ImportError as exc:  # pragma: no cover
            raise RequestError("ONNX Runtime is missing: pip install 'clickmask[serve]'") from exc
        self.path = pathlib.Path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} not found; create it with 'clickmask export onnx'")
        options = ort.SessionOptions()
        threads = self.threads or int(os.environ.get("CLICKMASK_ORT_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.spinning is not None:
            flag = "1" if self.spinning else "0"
            options.add_session_config_entry("session.intra_op.allow_spinning", flag)
            options.add_session_config_entry("session.inter_op.allow_spinning", flag)
        self.session = ort.InferenceSession(str(self.path), options, providers=list(self.providers))
        shape = self.session.get_inputs()[0].shape
        self.size = int(shape[-1])

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {name: feeds[name] for name in INPUT_CHANNELS})[0]

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        unbatched = inputs["image"].ndim == 3
        feeds = {name: (inputs[name][None] if unbatched else inputs[name]) for name in INPUT_CHANNELS}
        output = self(feeds)
        return output[0] if unbatched else output

"""The contract network on a CUDA GPU for the Python-backend adapter: FP16, channels_last,
``torch.compile`` with a dynamic batch dimension, and one CUDA graph per batch bucket.

:class:`CudaPredictor` is an ``InferFn`` for :func:`clickmask.serving.run_batch` (stacked uint8
contract tensors in, ``mask_prob`` uint8 [batch, 1, S, S] out), so the adapter, the validation
and the per-request errors stay those of the ONNX Runtime path. One call:

1. the batch is padded up to the smallest bucket that holds it (a batch above the largest
   bucket runs in chunks);
2. the three inputs go host → device from page-locked staging buffers (one set per calling
   thread; :meth:`CudaPredictor.host_buffers` lets ``run_batch`` stack the requests straight
   into them);
3. the bucket's CUDA graph is replayed (or the compiled / eager module runs);
4. ``mask_prob`` comes back device → host and the padding is dropped.

The device work runs on one of ``streams`` slots (a CUDA stream with its own static buffers
and graphs), so a second caller's copies overlap the first one's network. Everything that
costs time (compilation, cuDNN's algorithm search, graph capture) happens in :meth:`warm`,
which the adapter calls in ``initialize``: a ready model serves at steady-state speed.

On a machine without CUDA the same class runs on the CPU (``device="cpu"``, without graphs):
tests and the dry run of ``clickmask bench gpu`` execute its code paths there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from clickmask.client.contract import INPUT_CHANNELS, INPUT_NAMES, OUTPUT_CHANNELS

from .cuda_options import CudaOptions, CudaPredictorError

__all__ = ["ContractModule", "CudaOptions", "CudaPredictor", "CudaPredictorError", "contract_module"]

LOGGER = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


class ContractModule(nn.Module):
    """uint8 contract tensors in, ``mask_prob`` uint8 out, the network in ``dtype``.

    The arithmetic of :class:`~clickmask.export.onnx_export.ContractWrapper` with the inputs
    cast to the network's dtype (and memory format); the sigmoid and the rounding run in FP32.
    """

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = False):
        super().__init__()
        self.net, self.dtype, self.channels_last = net, dtype, channels_last

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.dtype)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
        logits = self.net(self._cast(image) / 255.0, self._cast(clicks > 0), self._cast(prev_mask) / 255.0)
        prob = torch.sigmoid(logits["instances"].float()) * 255.0
        return torch.clamp(torch.round(prob), 0.0, 255.0).to(torch.uint8)


def contract_module(net: nn.Module, device: torch.device | str, precision: str = "fp16",
                    channels_last: bool = False) -> ContractModule:
    """A copy of ``net`` on ``device`` in ``precision`` (and channels_last) behind the contract, in eval mode."""
    import copy

    net = copy.deepcopy(net).to(device=torch.device(device), dtype=DTYPES[precision]).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return ContractModule(net, DTYPES[precision], channels_last).eval()


def indexed_device(device: torch.device, current_index) -> torch.device:
    """``device`` with its index filled in: ``torch.cuda.set_device`` refuses a bare ``cuda``
    (torch 2.11 raised "Expected a torch.device with a specified index" on the first GPU run).
    ``current_index`` is a callable giving the current CUDA device index."""
    if device.type != "cuda" or device.index is not None:
        return device
    return torch.device("cuda", int(current_index()))


@dataclasses.dataclass
class _Slot:
    """One stream's static device inputs and outputs, and its graphs, per bucket."""

    stream: Any  # torch.cuda.Stream, or None on the CPU
    inputs: dict[int, list[torch.Tensor]] = dataclasses.field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    graphs: dict[int, Any] = dataclasses.field(default_factory=dict)


class CudaPredictor:
    """The served GPU path: ``predictor(feeds)`` for ``run_batch``; ``infer``/``infer_batch``/``session`` for a ``Session``."""

    def __init__(self, net: nn.Module, size: int, options: CudaOptions | None = None, *, warm: bool = True):
        self.options = options or CudaOptions()
        self.size = int(size)
        if self.size <= 0 or self.size % 32:
            raise CudaPredictorError(f"input size S must be a positive multiple of 32, got {self.size}")
        self.device = torch.device(self.options.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise CudaPredictorError(f"device {self.options.device!r} asked for, but torch {torch.__version__} sees "
                                     "no CUDA GPU: install a CUDA build of torch, or set device cpu and "
                                     "cuda_graphs false")
        if self.cuda:
            self.device = indexed_device(self.device, torch.cuda.current_device)
            torch.cuda.set_device(self.device)  # wants an index: plain "cuda" failed here on the H200
            torch.backends.cudnn.benchmark = True  # shapes are fixed per bucket: search once, in warm()
        self.module = contract_module(net, self.device, self.options.precision, self.options.channels_last)
        self._run = self.module
        if self.options.compile:
            self._run = torch.compile(self.module, backend=self.options.compile_backend)
        self._compiled_once = False
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for _ in range(self.options.streams):
            self._slots.put(_Slot(torch.cuda.Stream(self.device) if self.cuda else None))
        self._local = threading.local()
        self._compile_lock = threading.Lock()
        self.warm_report: dict[str, Any] | None = None
        if warm:
            self.warm()

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, path, options: CudaOptions | None = None, size: int | None = None,
                        warm: bool = True) -> "CudaPredictor":
        """Load a clickmask checkpoint (S from its ``input_size`` unless given)."""
        from clickmask.export.checkpoint import load_checkpoint  # noqa: PLC0415 - torch-side package

        net, config = load_checkpoint(path, map_location="cpu")
        return cls(net, size or int(config.get("input_size", 320)), options, warm=warm)

    # --------------------------------------------------------------------------- warm-up
    def warm(self) -> dict[str, Any]:
        """Compile, let cuDNN pick its algorithms and capture the graphs, for every bucket and
        stream; returns the seconds each part took (the model's start-up cost)."""
        started = time.perf_counter()
        report: dict[str, Any] = {"buckets": {}, "options": dataclasses.asdict(self.options)}
        slots = [self._slots.get() for _ in range(self.options.streams)]
        try:
            # largest bucket first: the compiled module is traced once, with a dynamic batch
            for bucket in sorted(self.options.buckets, reverse=True):
                t0 = time.perf_counter()
                for slot in slots:
                    self._prepare(slot, bucket)
                report["buckets"][bucket] = round(time.perf_counter() - t0, 3)
        finally:
            for slot in slots:
                self._slots.put(slot)
        self._host(self.options.max_batch)
        report["seconds"] = round(time.perf_counter() - started, 3)
        self.warm_report = report
        LOGGER.info("CudaPredictor warm in %.1f s on %s (%s)", report["seconds"], self.device, self.options)
        return report

    def _stream(self, slot: _Slot):
        return torch.cuda.stream(slot.stream) if slot.stream is not None else contextlib.nullcontext()

    def _forward(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.options.compile and not self._compiled_once:
            with self._compile_lock:  # the first call traces and compiles: once, with a dynamic batch
                if not self._compiled_once:
                    for tensor in tensors:
                        torch._dynamo.mark_dynamic(tensor, 0, min=self.options.buckets[0],
                                                   max=self.options.max_batch)
                    out = self._run(*tensors)
                    self._compiled_once = True
                    return out
        return self._run(*tensors)

    def _prepare(self, slot: _Slot, bucket: int) -> None:
        """Static inputs and output of ``bucket`` on ``slot``; warm-up runs; the graph capture."""
        with torch.inference_mode():
            inputs = [torch.zeros((bucket, INPUT_CHANNELS[name], self.size, self.size), dtype=torch.uint8,
                                  device=self.device) for name in INPUT_NAMES]
            if slot.stream is not None:
                slot.stream.wait_stream(torch.cuda.current_stream(self.device))
            with self._stream(slot):
                for _ in range(3 if self.cuda else 1):
                    output = self._forward(inputs)
            if self.options.cuda_graphs:
                slot.stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=slot.stream, capture_error_mode="thread_local"):
                    output = self._run(*inputs)
                slot.graphs[bucket] = graph
            if slot.stream is not None:
                slot.stream.synchronize()
        slot.inputs[bucket], slot.outputs[bucket] = inputs, output

    # -------------------------------------------------------------------------- host side
    def _host(self, batch: int) -> dict[str, np.ndarray]:
        """This thread's page-locked staging buffers (numpy views of the first ``batch`` rows)."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            shapes = {name: (self.options.max_batch, c, self.size, self.size) for name, c in INPUT_CHANNELS.items()}
            shapes["output"] = (self.options.max_batch, OUTPUT_CHANNELS, self.size, self.size)
            buffers = {name: torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda)
                       for name, shape in shapes.items()}
            self._local.buffers = buffers
            self._local.arrays = {name: t.numpy() for name, t in buffers.items()}
        return {name: array[:batch] for name, array in self._local.arrays.items()}

    def host_buffers(self, batch: int) -> dict[str, np.ndarray] | None:
        """Where ``run_batch`` may stack a batch of ``batch`` (this thread's staging memory), or
        None when it exceeds the largest bucket. Valid until this thread's next call."""
        if not 1 <= batch <= self.options.max_batch:
            return None
        host = self._host(batch)
        return {name: host[name] for name in INPUT_NAMES}

    # ---------------------------------------------------------------------------- calls
    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Stacked contract tensors (uint8 [batch, C, S, S]) → ``mask_prob`` uint8 [batch, 1, S, S]."""
        batch = int(feeds[INPUT_NAMES[0]].shape[0])
        if batch > self.options.max_batch:
            step = self.options.max_batch
            return np.concatenate([self({n: feeds[n][i:i + step] for n in INPUT_NAMES})
                                   for i in range(0, batch, step)], axis=0)
        host = self._host(batch)
        for name in INPUT_NAMES:
            source = feeds[name]
            if source.shape != host[name].shape:
                raise CudaPredictorError(f"input '{name}' has shape {list(source.shape)}; expected "
                                         f"{list(host[name].shape)}")
            if source.__array_interface__["data"][0] != host[name].__array_interface__["data"][0]:
                np.copyto(host[name], source)  # run_batch stacked elsewhere: stage it
        bucket = self.options.bucket(batch)
        slot = self._slots.get()
        try:
            if bucket not in slot.inputs:  # a bucket warm() did not see (warm=False)
                self._prepare(slot, bucket)
            with torch.inference_mode(), self._stream(slot):
                staged = self._local.buffers
                inputs = slot.inputs[bucket]
                for name, target in zip(INPUT_NAMES, inputs):
                    target[:batch].copy_(staged[name][:batch], non_blocking=self.cuda)
                if bucket in slot.graphs:
                    slot.graphs[bucket].replay()
                    output = slot.outputs[bucket]
                else:
                    output = self._forward(inputs)
                staged["output"][:batch].copy_(output[:batch], non_blocking=self.cuda)
                if slot.stream is not None:
                    slot.stream.synchronize()
        finally:
            self._slots.put(slot)
        return host["output"].copy()

    def network_call(self, batch: int):
        """A no-argument callable that runs the network alone at ``batch``'s bucket on the first
        stream's static inputs (no copies, no synchronisation): what a benchmark times."""
        bucket = self.options.bucket(batch)
        slot = self._slots.get()
        self._slots.put(slot)
        if bucket not in slot.inputs:
            self._prepare(slot, bucket)
        if bucket in slot.graphs:
            return slot.graphs[bucket].replay
        inputs = slot.inputs[bucket]
        return lambda: self._forward(inputs)

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One request without the batch dimension → ``mask_prob`` uint8 [1, S, S]."""
        return self({name: np.asarray(inputs[name])[None] for name in INPUT_NAMES})[0]

    def infer_batch(self, requests: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        """Several requests (a session's flip pair) as one batch: uint8 [N, 1, S, S]."""
        if not requests:
            raise ValueError("infer_batch needs at least one request")
        return self({name: np.stack([np.asarray(r[name]) for r in requests]) for name in INPUT_NAMES})

    def session(self, image: np.ndarray, **options):
        from clickmask.client.session import Session  # noqa: PLC0415

        return Session(self, image, **options)


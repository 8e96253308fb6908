"""TensorRT FP16 engine from the contract ONNX file, checked against ONNX Runtime FP32.

``clickmask export tensorrt`` runs three steps:

1. :func:`build_engine`: parse the ONNX file with TensorRT's parser, FP16 builder flag, one
   optimisation profile over the batch dimension (min 1, ``opt_batch``, ``max_batch``; S is
   fixed by the ONNX file), a timing cache file, a workspace limit, and the layers that are
   known to overflow in FP16 pinned to FP32 (:func:`fp32_reason`) with
   ``OBEY_PRECISION_CONSTRAINTS``. The plan is written with a ``<plan>.json`` beside it
   (S, profile, TensorRT version, pinned layers) that ``clickmask export repository`` reads.
2. :func:`compare_on_images`: the engine against ONNX Runtime FP32 on real images, driven by
   the client's own encoding, zoom-in and clicker; per-image mask IoU must be >= 0.99.
3. :func:`time_batches`: trtexec-style latency and throughput at a few batch sizes.

Only steps that need TensorRT import it (lazily, :func:`require_tensorrt`); the layer
selection, profile shapes, parity and timing summaries are plain functions that run, and are
tested, without TensorRT or a GPU.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
import statistics
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from clickmask.client.clicker import iou
from clickmask.client.contract import INPUT_NAMES, OUTPUT_NAME
from clickmask.client.encoding import CropTransform, decode_prob
from clickmask.client.protocol import ProtocolRun
from clickmask.client.session import PROB_THRESHOLD, Session
from clickmask.datasets import default_root, list_objects, load_object

LOGGER = logging.getLogger(__name__)

DEFAULT_OPT_BATCH = 4
DEFAULT_MAX_BATCH = 16
DEFAULT_WORKSPACE_MIB = 4096
MIN_PARITY_IOU = 0.99
TENSORRT_MISSING = ("TensorRT is not installed: pip install 'clickmask[tensorrt]' on a machine with an NVIDIA GPU "
                    "(or run inside nvcr.io/nvidia/tensorrt / tritonserver images)")
DEFAULT_DATASET = default_root() / "GrabCut"


class TensorRTUnavailableError(RuntimeError):
    """TensorRT or a CUDA device is missing; the message says what to install."""


class TensorRTBuildError(RuntimeError):
    """The ONNX file does not parse or the engine does not build."""


def require_tensorrt():
    """Import and return the ``tensorrt`` module, or raise :class:`TensorRTUnavailableError`."""
    try:
        import tensorrt  # noqa: PLC0415 - optional extra 'tensorrt'
    except ImportError as exc:
        raise TensorRTUnavailableError(TENSORRT_MISSING) from exc
    return tensorrt


# ------------------------------------------------------------------- FP16 precision policy
@dataclasses.dataclass(frozen=True)
class Fp16Policy:
    """Which layers stay in FP32 inside an FP16 engine.

    - Softmax and MatMul under an OCR scope (HRNet-OCR's spatial gather and object attention):
      the attention logits are sums over thousands of pixels and their exponentials overflow
      FP16's 65504.
    - ReduceMean / ReduceSum over at least ``reduce_elements`` elements per sample: the
      accumulated sum can exceed FP16's range or lose precision.
    """

    scope: str = "ocr"
    reduce_elements: int = 4096


ATTENTION_OPS = ("Softmax", "MatMul")
REDUCE_OPS = ("ReduceMean", "ReduceSum")


def _in_scope(name: str, scope: str) -> bool:
    """True when ``scope`` is one word of the layer's path (``/feature_extractor/ocr_gather_head/Softmax``)."""
    return scope.lower() in re.split(r"[/._:\-]+", name.lower())


def fp32_reason(name: str, op: str, reduced_elements: int | None, policy: Fp16Policy = Fp16Policy()) -> str | None:
    """Why the layer ``name`` (ONNX op type ``op``) must run in FP32, or None to leave it FP16.

    ``reduced_elements`` is the number of elements a reduction sums per sample (None when
    unknown: an unknown reduction is pinned, to be safe). Used on the ONNX graph
    (:func:`fp32_onnx_nodes`) and on TensorRT's parsed network alike.
    """
    if op in ATTENTION_OPS and _in_scope(name, policy.scope):
        return f"{op} under an '{policy.scope}' scope (attention logits overflow FP16)"
    if op in REDUCE_OPS:
        if reduced_elements is None:
            return f"{op} over an unknown number of elements"
        if reduced_elements >= policy.reduce_elements:
            return f"{op} over {reduced_elements} elements (>= {policy.reduce_elements})"
    return None


@dataclasses.dataclass(frozen=True)
class PinnedLayer:
    name: str
    op: str
    reason: str


def _reduced_elements(shape: Sequence[int | None] | None, axes: Sequence[int] | None) -> int | None:
    """Elements a reduction sums per sample; the batch dim counts as 1; None if a dim is unknown."""
    if shape is None:
        return None
    rank = len(shape)
    axes = range(rank) if not axes else [a % rank for a in axes]
    count = 1
    for axis in axes:
        if axis == 0:
            continue  # the batch dimension: per sample
        if shape[axis] is None or shape[axis] <= 0:
            return None
        count *= int(shape[axis])
    return count


def fp32_onnx_nodes(model, policy: Fp16Policy = Fp16Policy()) -> list[PinnedLayer]:
    """The nodes of an ONNX model (``onnx.ModelProto``) that :func:`fp32_reason` pins to FP32."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    pinned = []
    for node in model.graph.node:
        reduced = None
        if node.op_type in REDUCE_OPS:
            axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = constants.get(node.input[1])
                axes = None if axes is None else [int(a) for a in np.ravel(axes)]
            reduced = _reduced_elements(shapes.get(node.input[0]), axes)
        reason = fp32_reason(node.name, node.op_type, reduced, policy)
        if reason:
            pinned.append(PinnedLayer(node.name, node.op_type, reason))
    return pinned


def _trt_layer_op(layer, trt) -> tuple[str, int | None]:
    """A TensorRT layer as (ONNX-like op name, reduced elements) for :func:`fp32_reason`."""
    if layer.type == trt.LayerType.SOFTMAX:
        return "Softmax", None
    if layer.type == trt.LayerType.MATRIX_MULTIPLY:
        return "MatMul", None
    if layer.type == trt.LayerType.REDUCE:
        layer.__class__ = trt.IReduceLayer  # downcast, as Polygraphy does, to read op and axes
        op = {trt.ReduceOperation.AVG: "ReduceMean", trt.ReduceOperation.SUM: "ReduceSum"}.get(layer.op)
        if op is None:
            return "Reduce", None
        shape = [d if d >= 0 else None for d in layer.get_input(0).shape]
        axes = [i for i in range(len(shape)) if layer.axes >> i & 1]
        return op, _reduced_elements(shape, axes)
    return str(layer.type), None


def pin_fp32_layers(network, trt, policy: Fp16Policy = Fp16Policy()) -> list[PinnedLayer]:
    """Set FP32 precision and output types on the layers of a parsed network that need it."""
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        op, reduced = _trt_layer_op(layer, trt)
        reason = fp32_reason(layer.name, op, reduced, policy)
        if reason:
            layer.precision = trt.float32
            for out in range(layer.num_outputs):
                layer.set_output_type(out, trt.float32)
            pinned.append(PinnedLayer(layer.name, op, reason))
    return pinned


# --------------------------------------------------------------------------------- profile
def profile_shapes(inputs: Mapping[str, Sequence[int]], opt_batch: int, max_batch: int
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes per input: batch 1 / ``opt_batch`` / ``max_batch``, the rest fixed.

    ``inputs`` maps a name to its network shape with a dynamic batch (-1 or None) first.
    """
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt batch <= max batch, got opt {opt_batch}, max {max_batch}")
    shapes = {}
    for name, shape in inputs.items():
        shape = tuple(shape)
        rest = shape[1:]
        if not shape or (shape[0] not in (-1, None)):
            raise TensorRTBuildError(f"input '{name}' has shape {list(shape)}: expected a dynamic batch dimension "
                                     "first; export with 'clickmask export onnx'")
        if any(d is None or d <= 0 for d in rest):
            raise TensorRTBuildError(f"input '{name}' has shape {list(shape)}: only the batch dimension may be "
                                     "dynamic (S is fixed per deployment)")
        shapes[name] = ((1, *rest), (opt_batch, *rest), (max_batch, *rest))
    return shapes


def onnx_input_shapes(model) -> dict[str, tuple[int | None, ...]]:
    """Input shapes of an ONNX model, symbolic dims as None."""
    return {tensor.name: tuple(d.dim_value if d.HasField("dim_value") else None
                               for d in tensor.type.tensor_type.shape.dim)
            for tensor in model.graph.input}


def trtexec_command(onnx_path: pathlib.Path | str, plan_path: pathlib.Path | str,
                    shapes: Mapping[str, tuple[tuple[int, ...], ...]], workspace_mib: int,
                    timing_cache: pathlib.Path | str | None, pinned: Sequence[PinnedLayer]) -> str:
    """The equivalent ``trtexec`` build command line (for people who prefer the CLI tool)."""
    def fmt(index: int) -> str:
        return ",".join(f"{n}:{'x'.join(map(str, s[index]))}" for n, s in shapes.items())

    parts = [f"trtexec --onnx={onnx_path}", f"--saveEngine={plan_path}", "--fp16",
             f"--minShapes={fmt(0)}", f"--optShapes={fmt(1)}", f"--maxShapes={fmt(2)}",
             f"--memPoolSize=workspace:{workspace_mib}M"]
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    if pinned:
        parts += ["--precisionConstraints=obey",
                  "--layerPrecisions=" + ",".join(f"{p.name}:fp32" for p in pinned),
                  "--layerOutputTypes=" + ",".join(f"{p.name}:fp32" for p in pinned)]
    return " \\\n    ".join(parts)


# ----------------------------------------------------------------------------------- build
@dataclasses.dataclass(frozen=True)
class BuildConfig:
    onnx_path: pathlib.Path
    plan_path: pathlib.Path
    opt_batch: int = DEFAULT_OPT_BATCH
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    timing_cache: pathlib.Path | None = None
    fp16: bool = True
    policy: Fp16Policy = Fp16Policy()


@dataclasses.dataclass(frozen=True)
class BuildResult:
    plan_path: str
    size: int
    profile: dict
    pinned: tuple[PinnedLayer, ...]
    tensorrt_version: str
    build_s: float

    def metadata(self, config: BuildConfig) -> dict:
        return {"size": self.size, "min_batch": 1, "opt_batch": config.opt_batch, "max_batch": config.max_batch,
                "fp16": config.fp16, "workspace_mib": config.workspace_mib,
                "tensorrt_version": self.tensorrt_version, "onnx": str(config.onnx_path),
                "fp32_layers": [dataclasses.asdict(p) for p in self.pinned], "build_s": round(self.build_s, 1)}


def build_engine(config: BuildConfig) -> BuildResult:
    """Build and serialise the FP16 plan (TensorRT >= 10 and a GPU are needed)."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from TensorRT 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(config.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT cannot parse {config.onnx_path}: {errors}")
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    shapes = profile_shapes(inputs, config.opt_batch, config.max_batch)

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if config.fp16:
        builder_config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    builder_config.add_optimization_profile(profile)
    cache_bytes = b""
    if config.timing_cache is not None and config.timing_cache.is_file():
        cache_bytes = config.timing_cache.read_bytes()
        LOGGER.info("timing cache %s (%d bytes)", config.timing_cache, len(cache_bytes))
    cache = builder_config.create_timing_cache(cache_bytes)
    builder_config.set_timing_cache(cache, False)
    pinned = pin_fp32_layers(network, trt, config.policy) if config.fp16 else []
    if pinned:
        builder_config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for layer in pinned:
            LOGGER.info("FP32: %s (%s)", layer.name, layer.reason)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, builder_config)
    build_s = time.perf_counter() - started
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build {config.onnx_path}; see the TensorRT log above")
    config.plan_path.parent.mkdir(parents=True, exist_ok=True)
    config.plan_path.write_bytes(bytes(serialized))
    if config.timing_cache is not None:
        config.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        config.timing_cache.write_bytes(bytes(builder_config.get_timing_cache().serialize()))
    size = int(shapes[INPUT_NAMES[0]][0][-1])
    result = BuildResult(str(config.plan_path), size, {n: [list(s) for s in v] for n, v in shapes.items()},
                         tuple(pinned), trt.__version__, build_s)
    pathlib.Path(str(config.plan_path) + ".json").write_text(json.dumps(result.metadata(config), indent=2) + "\n")
    return result


class TensorRTPredictor:
    """A plan run by the TensorRT runtime on one GPU; device memory through torch.

    Same interface as :class:`clickmask.serving.OnnxPredictor`: ``size``, ``__call__(feeds)``
    on batched contract tensors (split into chunks of the profile's max batch) and
    ``infer(inputs)`` on one request, so the client's :class:`Session` runs on it unchanged.
    """

    def __init__(self, plan_path: pathlib.Path | str, device: int = 0):
        trt = require_tensorrt()
        import torch  # noqa: PLC0415 - 'export' extra

        if not torch.cuda.is_available():
            raise TensorRTUnavailableError("no CUDA device is visible: a TensorRT plan runs on an NVIDIA GPU")
        self._torch = torch
        self.device = torch.device("cuda", device)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(pathlib.Path(plan_path).read_bytes())
        if self.engine is None:
            raise TensorRTBuildError(f"cannot deserialise {plan_path} with TensorRT {trt.__version__} on this GPU; "
                                     "rebuild it here (plans are tied to the TensorRT version and GPU)")
        self.context = self.engine.create_execution_context()
        self.size = int(self.engine.get_tensor_shape(INPUT_NAMES[0])[-1])
        self.max_batch = int(self.engine.get_tensor_profile_shape(INPUT_NAMES[0], 0)[2][0])
        self.stream = torch.cuda.Stream(device=self.device)

    def _run_device(self, tensors: Mapping[str, object]):
        torch = self._torch
        batch = int(tensors[INPUT_NAMES[0]].shape[0])
        out = torch.empty((batch, 1, self.size, self.size), dtype=torch.uint8, device=self.device)
        for name in INPUT_NAMES:
            self.context.set_input_shape(name, tuple(tensors[name].shape))
            self.context.set_tensor_address(name, tensors[name].data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return out

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        total = int(feeds[INPUT_NAMES[0]].shape[0])
        outputs = []
        with torch.cuda.stream(self.stream):
            for start in range(0, total, self.max_batch):
                chunk = {n: torch.from_numpy(np.ascontiguousarray(feeds[n][start:start + self.max_batch]))
                         .to(self.device, non_blocking=True) for n in INPUT_NAMES}
                outputs.append(self._run_device(chunk).cpu())
        self.stream.synchronize()
        return torch.cat(outputs).numpy()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        unbatched = inputs[INPUT_NAMES[0]].ndim == 3
        output = self({n: (inputs[n][None] if unbatched else inputs[n]) for n in INPUT_NAMES})
        return output[0] if unbatched else output

    def time_compute(self, batch: int, warmup: int = 20, iterations: int = 200) -> list[float]:
        """GPU compute time per execution in ms (CUDA events, inputs already on the device)."""
        torch = self._torch
        tensors = {n: torch.zeros((batch, c, self.size, self.size), dtype=torch.uint8, device=self.device)
                   for n, c in zip(INPUT_NAMES, (3, 2, 1))}
        samples = []
        with torch.cuda.stream(self.stream):
            for i in range(warmup + iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(self.stream)
                self._run_device(tensors)
                end.record(self.stream)
                end.synchronize()
                if i >= warmup:
                    samples.append(start.elapsed_time(end))
        return samples


# ---------------------------------------------------------------------------------- parity
@dataclasses.dataclass(frozen=True)
class ImageParity:
    sample_id: str
    clicks: int
    min_iou: float            # worst click of this image: IoU of the two full-resolution masks
    max_abs_diff_levels: int  # largest |reference - candidate| of mask_prob, uint8 levels


@dataclasses.dataclass(frozen=True)
class ParityReport:
    images: tuple[ImageParity, ...]
    min_iou_required: float

    @property
    def worst(self) -> ImageParity:
        return min(self.images, key=lambda r: (r.min_iou, -r.max_abs_diff_levels))

    @property
    def failures(self) -> tuple[ImageParity, ...]:
        return tuple(r for r in self.images if r.min_iou < self.min_iou_required)

    @property
    def passed(self) -> bool:
        return bool(self.images) and not self.failures

    @property
    def mean_iou(self) -> float:
        return float(np.mean([r.min_iou for r in self.images]))

    def as_dict(self) -> dict:
        return {"passed": self.passed, "min_iou_required": self.min_iou_required, "mean_iou": self.mean_iou,
                "worst": dataclasses.asdict(self.worst), "failures": [r.sample_id for r in self.failures],
                "images": [dataclasses.asdict(r) for r in self.images]}

    def __str__(self) -> str:
        worst = self.worst
        verdict = "PASS" if self.passed else "FAIL"
        return (f"parity {verdict} on {len(self.images)} images ({sum(r.clicks for r in self.images)} clicks): "
                f"per-image mask IoU >= {self.min_iou_required} needed; mean {self.mean_iou:.4f}, "
                f"worst {worst.sample_id} IoU {worst.min_iou:.4f} (max |diff| {worst.max_abs_diff_levels} levels); "
                f"{len(self.failures)} below the bar")


class _Tee:
    """Predictor that answers with ``reference`` and runs ``candidate`` on the same inputs."""

    def __init__(self, reference, candidate):
        if reference.size != candidate.size:
            raise ValueError(f"the two models take different sizes: {reference.size} vs {candidate.size}")
        self.size = reference.size
        self.reference, self.candidate = reference, candidate
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def infer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        ref = np.asarray(self.reference.infer(inputs))
        self.last = (ref, np.asarray(self.candidate.infer(inputs)))
        return ref


def compare_on_images(reference, candidate, samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
                      clicks_per_image: int = 5, min_iou: float = MIN_PARITY_IOU) -> ParityReport:
    """Per-image mask IoU of ``candidate`` against ``reference`` along the standard clicker.

    ``reference`` and ``candidate`` are predictors (``size``, ``infer(inputs)``); ``samples``
    yields ``(id, HxWx3 uint8 RGB image, HxW bool gt, HxW bool ignore)``. The client's Session
    runs on the reference, so both models see byte-identical inputs at every click (clicks,
    zoom-in crops and previous masks come from the reference); each click's two outputs are
    pasted back at full resolution, thresholded at 0.5 and compared. An image's IoU is its
    worst click.
    """
    results = []
    for sample_id, image, gt, ignore in samples:
        tee = _Tee(reference, candidate)
        session = Session(tee, image, flip=False, refine=False)  # one model call a click: the file's parity
        run = ProtocolRun(session, gt, ignore, max_clicks=clicks_per_image)
        ious, diff = [], 0
        while not run.done:
            if run.intended() is None:
                break
            run.step()
            ref, cand = tee.last
            x0, y0, x1, y1 = session.history[-1].crop
            transform = CropTransform(x0, y0, x1, y1, tee.size)
            masks = [decode_prob(out, transform, gt.shape) > PROB_THRESHOLD for out in (ref, cand)]
            ious.append(iou(masks[0], masks[1]))
            diff = max(diff, int(np.abs(ref.astype(np.int16) - cand.astype(np.int16)).max()))
        results.append(ImageParity(sample_id, len(ious), float(min(ious, default=1.0)), diff))
    return ParityReport(tuple(results), min_iou)


def load_samples(dataset: pathlib.Path | str, limit: int | None = None):
    """Yield ``(id, image, gt, ignore)`` arrays for :func:`compare_on_images` (the one dataset reader)."""
    for obj in list_objects(dataset, limit=limit):
        yield (obj.key, *load_object(obj))


# ---------------------------------------------------------------------------------- timing
@dataclasses.dataclass(frozen=True)
class TimingResult:
    """Latency of one execution at ``batch`` (ms) and the resulting throughput, like trtexec."""

    batch: int
    iterations: int
    mean_ms: float
    median_ms: float
    p99_ms: float
    min_ms: float
    images_per_s: float
    kind: str = "host"  # 'host': wall time incl. copies; 'gpu': CUDA-event compute time

    def __str__(self) -> str:
        return (f"batch {self.batch:>3} [{self.kind}]: mean {self.mean_ms:7.2f} ms, median {self.median_ms:7.2f} ms, "
                f"p99 {self.p99_ms:7.2f} ms, min {self.min_ms:7.2f} ms; {self.images_per_s:8.1f} images/s")


def summarize_timings(batch: int, samples_ms: Sequence[float], kind: str = "host") -> TimingResult:
    """trtexec-style summary of per-execution times in ms."""
    if not samples_ms:
        raise ValueError("no timing samples")
    values = np.sort(np.asarray(samples_ms, dtype=np.float64))
    median = statistics.median(values)
    return TimingResult(batch, len(values), float(values.mean()), float(median),
                        float(np.percentile(values, 99)), float(values[0]), 1000.0 * batch / float(median), kind)


def timing_inputs(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Contract inputs for timing: random image, one positive disk, an empty previous mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clicks = np.zeros((batch, 2, size, size), np.uint8)
    clicks[:, 0] = ((xx - size // 2) ** 2 + (yy - size // 2) ** 2 <= 25).astype(np.uint8)
    return {"image": rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8), "clicks": clicks,
            "prev_mask": np.zeros((batch, 1, size, size), np.uint8)}


def time_batches(run: Callable[[Mapping[str, np.ndarray]], np.ndarray], size: int, batch_sizes: Sequence[int],
                 warmup: int = 10, iterations: int = 100) -> list[TimingResult]:
    """Wall-clock latency of ``run`` (a batched predictor) per batch size, host copies included."""
    results = []
    for batch in batch_sizes:
        feeds = timing_inputs(batch, size, seed=batch)
        samples = []
        for i in range(warmup + iterations):
            started = time.perf_counter()
            run(feeds)
            if i >= warmup:
                samples.append(1000.0 * (time.perf_counter() - started))
        results.append(summarize_timings(batch, samples))
    return results

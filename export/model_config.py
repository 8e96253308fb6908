"""Triton model configurations for every backend, generated from one tensor contract.

Every variant of the model ``clickmask`` keeps the contract of ``../shared/DESIGN.md``::

    image      UINT8 [3, S, S]    clicks  UINT8 [2, S, S]    prev_mask  UINT8 [1, S, S]
    mask_prob  UINT8 [1, S, S]    (output; Triton adds the batch dimension to all four)

and advertises S as ``parameters { key: "input_size" ... }``, which is how the client learns
it. Three generators share that part and differ only in how the model runs:

- :func:`python_config`: the embedded default (ONNX Runtime inside Triton's Python backend,
  ``model_repository/clickmask/config.pbtxt`` is its output).
- :func:`onnxruntime_config`: the ``onnxruntime_onnx`` platform of NVIDIA's container image,
  on the CPU, or on a GPU with the optional TensorRT execution accelerator in FP16.
- :func:`tensorrt_config`: a TensorRT plan on the GPU (``tensorrt_plan``), dynamic batching
  whose preferred sizes follow the engine's optimisation profile, optional CUDA graphs.
- :func:`torch_cuda_config`: the checkpoint in torch on the GPU inside the Python backend
  (``clickmask.serving.cuda.CudaPredictor``: FP16, channels_last, compiled, a CUDA graph per
  batch bucket), the GPU path that runs where TensorRT does not (docs/gpu-serving.md).

:func:`write_repository` lays out a whole model repository (``clickmask export repository``).
Nothing here imports torch at import time; :func:`onnx_input_size` imports ``onnx`` and
:func:`checkpoint_input_size` torch when called.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil

from clickmask.client.contract import (INPUT_CHANNELS, MODEL_NAME, OUTPUT_CHANNELS, OUTPUT_NAME,  # noqa: F401
                                      SIZE_PARAMETER)

LOGGER = logging.getLogger(__name__)

#: Contract tensors and their channel count (per request; Triton adds the batch dimension).
INPUTS = tuple(INPUT_CHANNELS.items())
OUTPUT = (OUTPUT_NAME, OUTPUT_CHANNELS)
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_QUEUE_DELAY_US = 2000
#: Queue policy of the embedded default: past this many queued requests Triton rejects at once
#: (UNAVAILABLE "Exceeds maximum queue size"), and a request that waited this long in the
#: queue is rejected (UNAVAILABLE "Request timeout expired"). 32 requests are two full
#: batches, about 0.9 s of work at the measured CPU capacity (~37 clicks/s).
DEFAULT_MAX_QUEUE_SIZE = 32
DEFAULT_QUEUE_TIMEOUT_US = 2_000_000
EMBEDDED_DYNAMIC_BATCHING = False
"""The embedded raw entry runs each request alone since session 13: on a 2-core CPU one run of
one request already takes both cores, and Triton's dynamic batcher held fewer annotators at a
higher p95 than no batcher at all (benchmarks/results/locust-capacity-session13: 72 against 80).
``dynamic_batching=True`` (``clickmask export repository --dynamic-batching``) brings it back;
the GPU configs always batch."""
EMBEDDED_INSTANCE_COUNT = 2
EMBEDDED_INTRA_OP_THREADS = 1
"""The embedded raw entry runs two model instances of one ONNX Runtime thread each since
session 14 (one instance of two threads before). Each request then runs on one core from start
to end: a lone click takes about 1.5x as long (36 against 24 ms in process), but no run waits
for a second core that Locust, the gRPC front end or another request holds, so under load the
tail is shorter and the CPU per click lower. Same hour, 2-core Xeon: 72 annotators at p95 <=
300 ms against 56 (benchmarks/results/locust-capacity-session14b), and under a flood of
malformed requests a p95 ratio of 1.46x against 1.61x and 1.54x against 1.62x in two pairs
(benchmarks/results/hostile/session14).
The masks are the same bit for bit (GrabCut and Berkeley evaluated with 1 and 2 threads).
``clickmask export repository --instance-count 1 --intra-op-threads 2`` restores the old layout."""
EMBEDDED_PREFER_FIRST_INSTANCE = True
"""Since session 15 the first instance of the embedded raw entry is preferred: it has rate-limiter
priority 1 and the others ``OTHER_INSTANCE_PRIORITY``. With ``--rate-limit=execution_count``
(``ServerConfig.rate_limit``, the embedded server's default) Triton hands a request to the free
instance whose executions times priority is lowest, so a lone click always meets the same warm
stub process, and a request that arrives while it is busy goes to the next. Without a preference
two instances take turns on lone clicks, and each run then meets caches the other process
evicted: 1.21x against 1.13x in-process blocked, +3.8 ms a request (benchmarks/results/
serving-overhead-session15*.md). Under load both run, as before. Triton ignores the priorities
with its rate limiter off (``clickmask serve --rate-limit off``, or a stock tritonserver)."""
OTHER_INSTANCE_PRIORITY = 1000
EMBEDDED_MAX_QUEUE_SIZE = 0
EMBEDDED_QUEUE_TIMEOUT_US = 0
"""The embedded CPU entries (raw and compact) have no queue policy since session 13. Any policy
turns off Triton's prefetching of the next batch (``support_prefetching`` in Triton core's
``PriorityQueue``), and then a request that arrives while the one instance finishes its run
waits until the batcher's 500 ms sleep ends (docs/wire.md, "A stall"). Their overload bound is
the client's deadline instead: a request whose caller has gone is dropped before it runs
(Triton core at batch formation, ``1/model.py`` otherwise), docs/reliability.md. ``queue_policy``
in :func:`write_repository` (``clickmask export repository --queue-policy``) restores the old
bound, stall included."""
DEFAULT_ALLOW_SPINNING: bool | None = False
"""The embedded default's ONNX Runtime thread spinning: off since session 10. Spinning workers
hold a core after each run, which on two cores slows whatever runs next (gRPC, the Python
backend, the load generator); ``benchmarks/serving_overhead.py`` measures it."""
EMBEDDED_QUEUE_DELAY_US = 0
"""The embedded default's batching delay (since session 10; 2 ms before): one CPU instance is
busy for ~20 ms a run, so requests that arrive meanwhile queue and are batched anyway, and a
lone request need not wait (``benchmarks/serving_overhead.py``: about 1 ms of the served path)."""
#: A GPU drains a queue an order of magnitude faster: the same 2 s bound holds more requests.
GPU_MAX_QUEUE_SIZE = 256
BACKENDS = ("python", "onnxruntime", "tensorrt", "torch-cuda")
#: File names inside the version folder ``1/``.
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
CHECKPOINT_FILE = "model.pt"
#: torch-cuda defaults, from the H200 timings of 2026-12-04 (../shared/gpu-h200-2026-12-04.md):
#: compiled + channels_last FP16 ran batch 64 in 4.5 ms and 128 in 8.0 ms (16,000 inferences/s),
#: so batches up to 128 keep a request's GPU time far inside a 30 ms p95; two instances let one
#: stack and copy while the other computes; 1 ms of queue delay is an eighth of a full batch.
#: `clickmask bench gpu` (serving step) measures these settings; adjust them from its results.
TORCH_CUDA_MAX_BATCH_SIZE = 128
TORCH_CUDA_QUEUE_DELAY_US = 1000
TORCH_CUDA_INSTANCES = 2
def _python_adapter() -> pathlib.Path:
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY  # noqa: PLC0415 - stdlib only

    return DEFAULT_MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py"


PYTHON_ADAPTER = _python_adapter()  # the adapter shipped with the package


class ModelConfigError(ValueError):
    """Arguments that cannot make a valid model configuration; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Contract:
    """The part every backend shares: model name, S and the largest batch Triton may form."""

    size: int
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    name: str = MODEL_NAME

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % 32:
            raise ModelConfigError(f"input size S must be a positive multiple of 32, got {self.size}")
        if self.max_batch_size < 1:
            raise ModelConfigError(f"max_batch_size must be at least 1, got {self.max_batch_size}")


def preferred_batch_sizes(max_batch_size: int, opt_batch: int | None = None) -> tuple[int, ...]:
    """Preferred sizes for the dynamic batcher: powers of two from 4, the profile's opt and max.

    ``preferred_batch_sizes(16) == (4, 8, 16)``; with a TensorRT profile (opt 4, max 12) it is
    ``(4, 8, 12)``: every size lies within the profile, and opt and max are always included.
    """
    sizes = {max_batch_size}
    power = 4
    while power < max_batch_size:
        sizes.add(power)
        power *= 2
    if opt_batch is not None:
        if not 1 <= opt_batch <= max_batch_size:
            raise ModelConfigError(f"opt batch {opt_batch} must lie in 1..{max_batch_size}")
        sizes.add(opt_batch)
    return tuple(sorted(s for s in sizes if s > 1)) or (max_batch_size,)


# ------------------------------------------------------------------------ text building blocks
def _dims(channels: int, size: int) -> str:
    return f"[ {channels}, {size}, {size} ]"


def _io_block(size: int) -> str:
    inputs = ",\n".join(f'  {{ name: "{name}", data_type: TYPE_UINT8, dims: {_dims(c, size)} }}'
                        for name, c in INPUTS)
    name, c = OUTPUT
    return (f"input [\n{inputs}\n]\n"
            f"output [\n  {{ name: \"{name}\", data_type: TYPE_UINT8, dims: {_dims(c, size)} }}\n]\n")


def _batching_block(preferred: tuple[int, ...], queue_delay_us: int, max_queue_size: int = 0,
                    queue_timeout_us: int = 0) -> str:
    """The dynamic batcher; a queue policy (REJECT) when a size or a timeout is given."""
    policy = ""
    if max_queue_size or queue_timeout_us:
        if max_queue_size < 0 or queue_timeout_us < 0:
            raise ModelConfigError("max_queue_size and queue_timeout_us must be >= 0 (0: unbounded)")
        policy = ("  default_queue_policy {\n"
                  f"    max_queue_size: {max_queue_size}\n"
                  "    timeout_action: REJECT\n"
                  f"    default_timeout_microseconds: {queue_timeout_us}\n"
                  "    allow_timeout_override: true\n"
                  "  }\n")
    return ("dynamic_batching {\n"
            f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: {queue_delay_us}\n"
            + policy + "}\n")


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params.items())


def _warmup_block(size: int, batch_sizes: tuple[int, ...]) -> str:
    entries = []
    for batch in batch_sizes:
        inputs = "".join(
            f'    inputs {{ key: "{name}" value {{ data_type: TYPE_UINT8, dims: {_dims(c, size)}, zero_data: true }} }}\n'
            for name, c in INPUTS)
        entries.append(f'  {{\n    name: "zeros_batch{batch}"\n    batch_size: {batch}\n{inputs}  }}')
    return "model_warmup [\n" + ",\n".join(entries) + "\n]\n"


def _preamble(contract: Contract, comments: tuple[str, ...]) -> str:
    """Comment lines, then the model name."""
    return "".join(f"# {line}\n" for line in comments) + f'name: "{contract.name}"\n'


def _python_backend(contract: Contract, comments: tuple[str, ...], batching: str, instances: str,
                    params: dict[str, str]) -> str:
    """A Python-backend model (the adapter ``1/model.py``) up to its parameters."""
    return (_preamble(contract, comments) + 'backend: "python"\n' + f"max_batch_size: {contract.max_batch_size}\n"
            + _io_block(contract.size) + batching + f"instance_group [ {instances} ]\n" + _parameters(params))


# -------------------------------------------------------------------------------- generators
def python_config(contract: Contract, *, onnx_file: str = ONNX_FILE, intra_op_threads: int = EMBEDDED_INTRA_OP_THREADS,
                  instance_count: int = EMBEDDED_INSTANCE_COUNT, queue_delay_us: int = EMBEDDED_QUEUE_DELAY_US,
                  max_queue_size: int = EMBEDDED_MAX_QUEUE_SIZE, queue_timeout_us: int = EMBEDDED_QUEUE_TIMEOUT_US,
                  dynamic_batching: bool = EMBEDDED_DYNAMIC_BATCHING, warmup: bool = True,
                  allow_spinning: bool | None = DEFAULT_ALLOW_SPINNING,
                  prefer_first_instance: bool = EMBEDDED_PREFER_FIRST_INSTANCE) -> str:
    """The embedded default: ONNX Runtime on the CPU inside Triton's Python backend.

    ``dynamic_batching`` (off by default since session 13, ``EMBEDDED_DYNAMIC_BATCHING``) puts
    Triton's dynamic batcher in front of the instances; without it each request runs alone.
    ``instance_count`` model instances of ``intra_op_threads`` ONNX Runtime threads each (2 of 1
    by default since session 14, ``EMBEDDED_INSTANCE_COUNT``).

    With the defaults and S=320 this is exactly ``model_repository/clickmask/config.pbtxt``.
    ``1/model.py`` reads ``input_size``, ``onnx_file`` and ``intra_op_threads``. Past
    ``max_queue_size`` queued requests, or after ``queue_timeout_us`` in the queue, Triton
    rejects a request at once instead of letting the queue grow (0 turns either off; both are
    off by default, see ``EMBEDDED_MAX_QUEUE_SIZE``).
    ``allow_spinning`` (None: ONNX Runtime's default, which spins) is written as the parameter
    of the same name. ``prefer_first_instance`` (with two or more instances) gives the first
    instance rate-limiter priority 1 and the others ``OTHER_INSTANCE_PRIORITY``; see
    ``EMBEDDED_PREFER_FIRST_INSTANCE``.
    """
    _check_count(instance_count)
    batching = (_batching_block(preferred_batch_sizes(contract.max_batch_size), queue_delay_us, max_queue_size,
                                queue_timeout_us) if dynamic_batching else "")
    params = {SIZE_PARAMETER: str(contract.size), "onnx_file": onnx_file, "intra_op_threads": str(intra_op_threads)}
    if allow_spinning is not None:
        params["allow_spinning"] = "1" if allow_spinning else "0"
    text = _python_backend(contract, (
        "clickmask: the embedded default. ONNX Runtime on the CPU inside Triton's Python backend.",
        "Tensor contract: ../../../shared/DESIGN.md (UINT8 in, UINT8 out, S advertised below).",
    ), batching, _cpu_instances(instance_count, prefer_first_instance), params)
    if warmup:
        text += _warmup_block(contract.size, (1,))
    return text


def _cpu_instances(count: int, prefer_first: bool) -> str:
    """The instance groups of a CPU model: ``count`` alike, or a preferred first one and the rest."""
    if not prefer_first or count == 1:
        return f"{{ count: {count}, kind: KIND_CPU }}"
    return (f"{{ count: 1, kind: KIND_CPU, rate_limiter {{ priority: 1 }} }}, "
            f"{{ count: {count - 1}, kind: KIND_CPU, rate_limiter {{ priority: {OTHER_INSTANCE_PRIORITY} }} }}")


#: The compact entry (issue #27): a Python model in front of the raw network; see
#: clickmask.client.compact and clickmask.serving.compact.
COMPACT_MODEL_NAME = "clickmask_compact"
COMPACT_MAX_BATCH_SIZE = 8  # with flip, 16 network inputs: the raw model's max_batch_size
DEFAULT_COMPACT_CACHE_BYTES = 512 * 1024 * 1024


def _compact_adapter() -> pathlib.Path:
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY  # noqa: PLC0415

    return DEFAULT_MODEL_REPOSITORY / COMPACT_MODEL_NAME / "1" / "model.py"


def compact_config(contract: Contract, *, cache_bytes: int = DEFAULT_COMPACT_CACHE_BYTES,
                   max_queue_size: int = EMBEDDED_MAX_QUEUE_SIZE, queue_timeout_us: int = EMBEDDED_QUEUE_TIMEOUT_US,
                   inline: bool = True,
                   intra_op_threads: int = 2, allow_spinning: bool | None = DEFAULT_ALLOW_SPINNING) -> str:
    """The compact entry in front of ``contract.name``: PNG/packed BYTES in, PNG out, image crops
    cached by content key (``cache_bytes``). One instance: each Python-backend instance is its own
    process, and the crop cache must not split across them (the adapter refuses count > 1).

    ``inline`` (the CPU default) runs the network in the entry's own process from the raw model's
    ONNX file (ONNX Runtime, ``intra_op_threads``, ``allow_spinning`` as in :func:`python_config`),
    which saves the BLS hop to the raw model; ``inline=False`` calls the raw model over BLS.

    With the defaults and S=320 this is exactly ``model_repository/clickmask_compact/config.pbtxt``."""
    if cache_bytes < 0:
        raise ModelConfigError(f"cache_bytes must be >= 0, got {cache_bytes}")
    params = {SIZE_PARAMETER: str(contract.size), "network_model": contract.name, "cache_bytes": str(cache_bytes),
              "network": "inline" if inline else "bls"}
    if inline:
        params.update({"onnx_file": f"../../{contract.name}/1/{ONNX_FILE}", "intra_op_threads": str(intra_op_threads)})
        if allow_spinning is not None:
            params["allow_spinning"] = "1" if allow_spinning else "0"
    inputs = ",\n".join(f'  {{ name: "{name}", data_type: TYPE_STRING, dims: [ 1 ] }}'
                        for name in ("crop_key", "crop", "clicks", "prev_mask", "flip"))
    batch = min(COMPACT_MAX_BATCH_SIZE, contract.max_batch_size)
    return ("# clickmask: the compact wire entry. Image crops by content key, clicks bit-packed, masks as PNG;\n"
            + (f"# the network runs here, from the ONNX file of the raw model '{contract.name}'. "
               if inline else f"# the network runs in the raw model '{contract.name}' (BLS). ")
            + "Format: clickmask/client/compact.py.\n"
            f'name: "{COMPACT_MODEL_NAME}"\nbackend: "python"\nmax_batch_size: {batch}\n'
            f"input [\n{inputs}\n]\n"
            'output [\n  { name: "mask", data_type: TYPE_STRING, dims: [ 1 ] }\n]\n'
            + _batching_block(preferred_batch_sizes(batch), 0, max_queue_size, queue_timeout_us)
            + "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
            + _parameters(params))


def write_compact(output: pathlib.Path | str, size: int, **options) -> pathlib.Path:
    """Lay out ``OUTPUT/clickmask_compact/{config.pbtxt, 1/model.py}``; return the config path."""
    model_dir = pathlib.Path(output) / COMPACT_MODEL_NAME
    return _write(model_dir, compact_config(Contract(size), **options), {_compact_adapter(): model_dir / "1" / "model.py"},
                  "compact", size)


def onnxruntime_config(contract: Contract, *, gpu: bool = False, tensorrt_fp16: bool = False,
                       instance_count: int = 1, intra_op_threads: int = 0,
                       workspace_bytes: int = 2 << 30, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                       max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
                       queue_timeout_us: int = DEFAULT_QUEUE_TIMEOUT_US) -> str:
    """``onnxruntime_onnx`` in NVIDIA's Triton image: CPU by default, or one GPU.

    ``tensorrt_fp16`` turns on ONNX Runtime's TensorRT execution provider in FP16 (GPU only):
    the engine is built when the model loads, so the first start takes minutes.
    """
    _check_count(instance_count)
    if tensorrt_fp16 and not gpu:
        raise ModelConfigError("the TensorRT execution accelerator needs a GPU instance: pass gpu=True (--gpu)")
    where = "one GPU" if gpu else "the CPU"
    accel = ", TensorRT execution accelerator in FP16" if tensorrt_fp16 else ""
    text = _preamble(contract, (
        f"clickmask: ONNX Runtime backend of the NGC Triton image on {where}{accel}.",
        "Generated by 'clickmask export repository'; tensor contract in shared/DESIGN.md.",
    ))
    text += 'platform: "onnxruntime_onnx"\n'
    text += f'default_model_filename: "{ONNX_FILE}"\n'
    text += f"max_batch_size: {contract.max_batch_size}\n"
    text += _io_block(contract.size)
    text += _batching_block(preferred_batch_sizes(contract.max_batch_size), queue_delay_us,
                            max_queue_size, queue_timeout_us)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    text += f"instance_group [ {{ count: {instance_count}, kind: {kind} }} ]\n"
    params = {SIZE_PARAMETER: str(contract.size)}
    if intra_op_threads:
        params["intra_op_thread_count"] = str(intra_op_threads)
    text += _parameters(params)
    if tensorrt_fp16:
        text += ("optimization { execution_accelerators {\n"
                 "  gpu_execution_accelerator: [ {\n"
                 '    name: "tensorrt"\n'
                 '    parameters { key: "precision_mode" value: "FP16" }\n'
                 f'    parameters {{ key: "max_workspace_size_bytes" value: "{workspace_bytes}" }}\n'
                 '    parameters { key: "trt_engine_cache_enable" value: "1" }\n'
                 "  } ]\n"
                 "} }\n")
    text += _warmup_block(contract.size, (1,))
    return text


def tensorrt_config(contract: Contract, *, opt_batch: int | None = None, instance_count: int = 1,
                    cuda_graphs: bool = False, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                    max_queue_size: int = GPU_MAX_QUEUE_SIZE, queue_timeout_us: int = DEFAULT_QUEUE_TIMEOUT_US) -> str:
    """``tensorrt_plan`` on the GPU; ``contract.max_batch_size`` must be the profile's max.

    The preferred batch sizes lie inside the engine's profile (they include ``opt_batch`` and
    the max); warm-up runs batch 1 and the max so both ends of the profile are touched before
    the model reports ready. ``cuda_graphs`` captures one graph per preferred size and batch 1
    (Triton pads a batch up to the next captured size).
    """
    _check_count(instance_count)
    preferred = preferred_batch_sizes(contract.max_batch_size, opt_batch)
    text = _preamble(contract, (
        "clickmask: TensorRT FP16 plan on the GPU (NGC Triton image).",
        "Generated by 'clickmask export repository'; tensor contract in shared/DESIGN.md.",
    ))
    text += 'platform: "tensorrt_plan"\n'
    text += f'default_model_filename: "{PLAN_FILE}"\n'
    text += f"max_batch_size: {contract.max_batch_size}\n"
    text += _io_block(contract.size)
    text += _batching_block(preferred, queue_delay_us, max_queue_size, queue_timeout_us)
    text += f"instance_group [ {{ count: {instance_count}, kind: KIND_GPU }} ]\n"
    text += _parameters({SIZE_PARAMETER: str(contract.size)})
    if cuda_graphs:
        specs = "".join(f"  graph_spec {{ batch_size: {b} }}\n" for b in sorted({1, *preferred}))
        text += f"optimization {{ cuda {{\n  graphs: true\n{specs}}} }}\n"
    warm = (1, contract.max_batch_size) if contract.max_batch_size > 1 else (1,)
    text += _warmup_block(contract.size, warm)
    return text


def torch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Batch buckets of the CUDA predictor: powers of two from 2, and the max (a batch of 1 is
    padded to 2). They hold every preferred batch size, so a preferred batch needs no padding."""
    if max_batch_size < 2:
        raise ModelConfigError(f"torch-cuda needs max_batch_size >= 2, got {max_batch_size}")
    return tuple(sorted({max_batch_size, *(2 ** k for k in range(1, max_batch_size.bit_length())
                                           if 2 ** k < max_batch_size)}))


def torch_cuda_config(contract: Contract, *, instance_count: int = TORCH_CUDA_INSTANCES,
                      queue_delay_us: int = TORCH_CUDA_QUEUE_DELAY_US, max_queue_size: int = GPU_MAX_QUEUE_SIZE,
                      queue_timeout_us: int = DEFAULT_QUEUE_TIMEOUT_US, checkpoint_file: str = CHECKPOINT_FILE,
                      predictor_options: dict[str, str] | None = None) -> str:
    """The Python backend on GPU instances running ``clickmask.serving.cuda.CudaPredictor``.

    ``1/model.py`` is the same adapter as the CPU default; the parameter ``predictor`` selects
    the GPU path and the others are its options (``predictor_options`` overrides them, e.g.
    ``{"compile": "false"}``). Each instance compiles and captures its graphs in
    ``initialize``, so the model is ready only when it runs at steady-state speed.
    """
    _check_count(instance_count)
    from clickmask.serving.cuda_options import PARAMETER_KEYS, CudaOptions, CudaPredictorError  # noqa: PLC0415

    # Triton calls execute() of an instance from one thread: one stream each; instances overlap
    options = CudaOptions(buckets=torch_buckets(contract.max_batch_size), streams=1).as_parameters()
    del options["device"]  # Triton's instance device (cuda:N) unless overridden
    unknown = sorted(set(predictor_options or {}) - set(PARAMETER_KEYS))
    if unknown:
        raise ModelConfigError(f"unknown torch-cuda options {unknown}; known: {list(PARAMETER_KEYS)}")
    options.update(predictor_options or {})
    try:
        chosen = CudaOptions.from_parameters(options)
    except CudaPredictorError as exc:
        raise ModelConfigError(f"torch-cuda options: {exc}") from None
    if chosen.max_batch < contract.max_batch_size:
        raise ModelConfigError(f"the largest batch bucket {chosen.max_batch} is below max_batch_size "
                               f"{contract.max_batch_size}: a full batch would run in chunks")
    text = _python_backend(contract, (
        "clickmask: the checkpoint in torch on the GPU (FP16, channels_last, compiled, CUDA graphs) inside",
        "Triton's Python backend. Generated by 'clickmask export repository'; docs/gpu-serving.md.",
    ), _batching_block(preferred_batch_sizes(contract.max_batch_size), queue_delay_us, max_queue_size,
                       queue_timeout_us), f"{{ count: {instance_count}, kind: KIND_GPU }}",
        {SIZE_PARAMETER: str(contract.size), "predictor": "torch-cuda", "checkpoint_file": checkpoint_file, **options})
    text += _warmup_block(contract.size, (1,))
    return text


def _check_count(instance_count: int) -> None:
    if instance_count < 1:
        raise ModelConfigError(f"instance count must be at least 1, got {instance_count}")


# ------------------------------------------------------------------------- repository writer
def onnx_input_size(onnx_path: pathlib.Path | str) -> int:
    """S of an exported contract ONNX file (the last dimension of its ``image`` input)."""
    import onnx  # noqa: PLC0415 - 'export' extra

    model = onnx.load(str(onnx_path), load_external_data=False)
    for tensor in model.graph.input:
        if tensor.name == INPUTS[0][0]:
            dims = [d.dim_value for d in tensor.type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[1] == 3 and dims[2] == dims[3] > 0:
                return int(dims[3])
            raise ModelConfigError(f"{onnx_path}: input 'image' has dims {dims}; expected [batch, 3, S, S]")
    raise ModelConfigError(f"{onnx_path} has no input 'image'; export it with 'clickmask export onnx'")


def read_plan_metadata(plan_path: pathlib.Path | str) -> dict | None:
    """The ``<plan>.json`` written beside a plan by ``clickmask export tensorrt`` (None if absent)."""
    meta = pathlib.Path(str(plan_path) + ".json")
    return json.loads(meta.read_text()) if meta.is_file() else None


def checkpoint_input_size(checkpoint_path: pathlib.Path | str) -> int:
    """S of a clickmask checkpoint (its recorded ``input_size``, else 320), after checking that
    the network builds and its weights load (imports torch)."""
    from clickmask.export.checkpoint import CheckpointError, load_checkpoint  # noqa: PLC0415 - 'export' extra

    try:
        _, config = load_checkpoint(checkpoint_path)
    except CheckpointError as exc:
        raise ModelConfigError(str(exc)) from None
    return int(config.get("input_size", 320))


def write_repository(backend: str, output: pathlib.Path | str, *, onnx_path: pathlib.Path | str | None = None,
                     plan_path: pathlib.Path | str | None = None, max_batch_size: int | None = None,
                     opt_batch: int | None = None, instance_count: int | None = None, gpu: bool = False,
                     tensorrt_fp16: bool = False, cuda_graphs: bool = False,
                     checkpoint_path: pathlib.Path | str | None = None, size: int | None = None,
                     queue_delay_us: int | None = None,
                     predictor_options: dict[str, str] | None = None,
                     dynamic_batching: bool | None = None, queue_policy: bool = False,
                     intra_op_threads: int | None = None,
                     prefer_first_instance: bool | None = None) -> pathlib.Path:
    """Lay out ``OUTPUT/clickmask/{config.pbtxt, 1/...}`` for ``backend``; return the config path.

    S comes from the ONNX file; for ``torch-cuda`` (no ONNX file) from the checkpoint, or
    ``size``. For ``tensorrt`` the plan's profile (read from the ``<plan>.json`` that the
    builder writes) sets the default max batch and opt batch, and a larger ``max_batch_size``
    than the profile allows is refused. ``instance_count`` defaults to 2 for ``torch-cuda`` and
    ``python`` (``EMBEDDED_INSTANCE_COUNT``), else 1; ``intra_op_threads`` (python only) to
    ``EMBEDDED_INTRA_OP_THREADS``. ``dynamic_batching`` None: off for python (``EMBEDDED_DYNAMIC_BATCHING``), on for the
    others, which cannot turn it off. ``queue_policy`` (python only, with the batcher) gives the
    raw and compact entries the queue policy they had until session 12
    (``DEFAULT_MAX_QUEUE_SIZE`` requests, ``DEFAULT_QUEUE_TIMEOUT_US``).
    """
    if backend not in BACKENDS:
        raise ModelConfigError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    model_dir = pathlib.Path(output) / MODEL_NAME
    version_dir = model_dir / "1"
    if backend == "torch-cuda":
        if checkpoint_path is None or not pathlib.Path(checkpoint_path).is_file():
            raise ModelConfigError(f"--checkpoint {checkpoint_path} not found: torch-cuda serves a clickmask "
                                   "checkpoint (.pt), e.g. export/checkpoints/clickmask-lite0.pt")
        recorded = checkpoint_input_size(checkpoint_path)  # loads it: a broken file fails here, not at serving
        size = size or recorded
        delay = TORCH_CUDA_QUEUE_DELAY_US if queue_delay_us is None else queue_delay_us
        text = torch_cuda_config(Contract(size, max_batch_size or TORCH_CUDA_MAX_BATCH_SIZE),
                                 instance_count=instance_count or TORCH_CUDA_INSTANCES, queue_delay_us=delay,
                                 predictor_options=predictor_options)
        return _write(model_dir, text, {pathlib.Path(checkpoint_path): version_dir / CHECKPOINT_FILE,
                                        PYTHON_ADAPTER: version_dir / "model.py"}, backend, size)
    if predictor_options:
        raise ModelConfigError("predictor options apply to --backend torch-cuda only")
    if intra_op_threads is not None and backend != "python":
        raise ModelConfigError("--intra-op-threads applies to --backend python only (the ONNX Runtime threads of "
                               "the embedded CPU default)")
    if intra_op_threads is not None and intra_op_threads < 1:
        raise ModelConfigError(f"--intra-op-threads must be at least 1, got {intra_op_threads}")
    if prefer_first_instance is not None and backend != "python":
        raise ModelConfigError("--prefer-first-instance applies to --backend python only (the instances of the "
                               "embedded CPU default)")
    if dynamic_batching is False and backend != "python":
        raise ModelConfigError("--no-dynamic-batching applies to --backend python only")
    if dynamic_batching is None:
        dynamic_batching = EMBEDDED_DYNAMIC_BATCHING if backend == "python" else True
    if queue_policy and backend != "python":
        raise ModelConfigError("--queue-policy applies to --backend python only (the onnxruntime, tensorrt and "
                               "torch-cuda configs always have one)")
    if queue_policy and not dynamic_batching:
        raise ModelConfigError("--queue-policy needs the dynamic batcher: Triton's queue policy is part of it; "
                               "add --dynamic-batching")
    if onnx_path is None:
        raise ModelConfigError(f"--backend {backend} serves an ONNX file: pass --onnx FILE (make one with "
                               "'clickmask export onnx')")
    if not pathlib.Path(onnx_path).is_file():
        raise ModelConfigError(f"ONNX file {onnx_path} not found; create it with 'clickmask export onnx'")
    onnx_path = pathlib.Path(onnx_path)
    size = onnx_input_size(onnx_path)
    instance_count = instance_count or (EMBEDDED_INSTANCE_COUNT if backend == "python" else 1)

    if backend == "tensorrt":
        if plan_path is None or not pathlib.Path(plan_path).is_file():
            raise ModelConfigError(f"--plan {plan_path} not found; build it with 'clickmask export tensorrt'")
        meta = read_plan_metadata(plan_path) or {}
        if meta and int(meta.get("size", size)) != size:
            raise ModelConfigError(f"{plan_path} was built for S={meta['size']} but {onnx_path} has S={size}")
        profile_max = int(meta.get("max_batch", max_batch_size or DEFAULT_MAX_BATCH_SIZE))
        max_batch_size = max_batch_size or profile_max
        if max_batch_size > profile_max:
            raise ModelConfigError(f"max_batch_size {max_batch_size} exceeds the plan's profile max {profile_max}")
        opt_batch = opt_batch or meta.get("opt_batch")
        if opt_batch is not None:
            opt_batch = min(int(opt_batch), max_batch_size)
        text = tensorrt_config(Contract(size, max_batch_size), opt_batch=opt_batch,
                               instance_count=instance_count, cuda_graphs=cuda_graphs)
        files = {pathlib.Path(plan_path): version_dir / PLAN_FILE}
    elif backend == "onnxruntime":
        text = onnxruntime_config(Contract(size, max_batch_size or DEFAULT_MAX_BATCH_SIZE), gpu=gpu,
                                  tensorrt_fp16=tensorrt_fp16, instance_count=instance_count)
        files = {onnx_path: version_dir / ONNX_FILE}
    else:
        policy = ({"max_queue_size": DEFAULT_MAX_QUEUE_SIZE, "queue_timeout_us": DEFAULT_QUEUE_TIMEOUT_US}
                  if queue_policy else {})
        text = python_config(Contract(size, max_batch_size or DEFAULT_MAX_BATCH_SIZE), instance_count=instance_count,
                             intra_op_threads=intra_op_threads or EMBEDDED_INTRA_OP_THREADS,
                             dynamic_batching=dynamic_batching, **policy,
                             prefer_first_instance=(EMBEDDED_PREFER_FIRST_INSTANCE if prefer_first_instance is None
                                                    else prefer_first_instance))
        files = {onnx_path: version_dir / ONNX_FILE, PYTHON_ADAPTER: version_dir / "model.py"}
        write_compact(output, size, **policy)  # the compact wire entry in front of it

    return _write(model_dir, text, files, backend, size)


def _write(model_dir: pathlib.Path, text: str, files: dict[pathlib.Path, pathlib.Path], backend: str,
           size: int) -> pathlib.Path:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    for source, target in files.items():
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    config_path = model_dir / "config.pbtxt"
    config_path.write_text(text)
    LOGGER.info("wrote %s model repository at %s (S=%d)", backend, model_dir, size)
    return config_path

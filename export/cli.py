"""``clickmask export ...`` and ``clickmask train`` subcommands.

``clickmask/cli.py`` calls :func:`add_export_parser` and :func:`add_train_parser` on its
subparsers and then ``args.func(args)``. Building the parsers imports neither torch nor onnx;
the commands import them when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

from .deploy_files import add_deploy_args_parser
from .network_names import NETWORK_NAMES
from .train_config import add_train_arguments, train_overrides  # noqa: F401 - train_overrides: API

log = logging.getLogger(__name__)

DEFAULT_NETWORK = "efficientnet-lite0"
DEFAULT_ONNX_OUTPUT = str(DEFAULT_MODEL_REPOSITORY / "clickmask" / "1" / "model.onnx")


# ---------------------------------------------------------------------------------- export
def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``export onnx`` and ``export tensorrt`` to the main CLI's subparsers."""
    p = subparsers.add_parser("export", help="export a network to ONNX (or TensorRT)",
                              description="Export a network behind the uint8 tensor contract.")
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT")
    sub.required = True

    onnx_p = sub.add_parser(
        "onnx", help="export to ONNX and check parity with torch",
        description="Export to ONNX (fixed size S, dynamic batch) and compare ONNX Runtime with torch. "
                    "Without --checkpoint the network gets the ImageNet encoder and a seeded random "
                    "decoder (a placeholder until a trained checkpoint exists).")
    onnx_p.add_argument("--network", default=None, choices=NETWORK_NAMES,
                        help=f"registered network (default: the checkpoint's, else {DEFAULT_NETWORK}); "
                             "with --checkpoint, the network the file must hold")
    onnx_p.add_argument("--checkpoint", type=Path, default=None,
                        help="trained checkpoint (.pt): clickmask's, or an official RITM HRNet-OCR .pth")
    onnx_p.add_argument("--size", type=int, default=None,
                        help="input size S (default: the checkpoint's input_size, else 320)")
    onnx_p.add_argument("--output", type=Path, default=Path(DEFAULT_ONNX_OUTPUT), help="default: %(default)s")
    onnx_p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    onnx_p.add_argument("--seed", type=int, default=0, help="seed of the random decoder without --checkpoint")
    onnx_p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    onnx_p.set_defaults(func=_cmd_export_onnx)

    _add_tensorrt_parser(sub)
    _add_int8_parser(sub)
    _add_repository_parser(sub)
    add_deploy_args_parser(sub)
    return p


def _cmd_export_onnx(args) -> int:
    import torch

    from .checkpoint import CheckpointError, load_checkpoint
    from .networks import build_network
    from .onnx_export import ParityError, export_onnx

    try:
        if args.checkpoint is not None:
            net, config = load_checkpoint(args.checkpoint, network=args.network)
            size = args.size or int(config.get("input_size", 320))
            source = f"checkpoint {args.checkpoint} ({config['network']})"
        else:
            network = args.network or DEFAULT_NETWORK
            torch.manual_seed(args.seed)
            net = build_network(network)
            size = args.size or 320
            weights = ("random weights" if network.startswith("ritm-")
                       else "ImageNet encoder and random decoder")
            source = f"{network} with {weights} (seed {args.seed})"
        report = export_onnx(net, args.output, size=size, opset=args.opset, check=not args.no_check)
    except (CheckpointError, ParityError, ValueError) as exc:
        print(f"clickmask export onnx: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {source} to {args.output} (S={size})")
    if report is not None:
        print(report)
    return 0


def _add_tensorrt_parser(sub) -> None:
    p = sub.add_parser(
        "tensorrt", help="build a TensorRT FP16 plan, check it against ONNX Runtime, time it (TensorRT + GPU)",
        description="Build a TensorRT FP16 engine from the contract ONNX file (one profile over the batch "
                    "dimension, S fixed), pin FP16-unsafe layers to FP32, then check per-image mask IoU against "
                    "ONNX Runtime FP32 on real images and time the engine. --dry-run prints the build plan "
                    "(profile, FP32 layers, trtexec equivalent) without TensorRT.")
    p.add_argument("--onnx", type=Path, default=Path(DEFAULT_ONNX_OUTPUT), help="input ONNX file (default: %(default)s)")
    p.add_argument("--output", type=Path, default=Path("model_repository/clickmask/1/model.plan"),
                   help="plan file; <plan>.json with the profile is written beside it (default: %(default)s)")
    p.add_argument("--opt-batch", type=int, default=4, help="profile opt batch (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="profile max batch = Triton max_batch_size (default: %(default)s)")
    p.add_argument("--workspace-mib", type=int, default=4096, help="builder workspace limit (default: %(default)s)")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="timing cache file, read if present and rewritten (default: <output>.timing-cache)")
    p.add_argument("--reduce-elements", type=int, default=4096,
                   help="pin ReduceMean/ReduceSum over at least this many elements to FP32 (default: %(default)s)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="images/ + masks/ folder for the parity check (default: ../shared/datasets/GrabCut)")
    p.add_argument("--parity-images", type=int, default=20, help="images in the parity check (default: %(default)s)")
    p.add_argument("--parity-clicks", type=int, default=5, help="clicks per image (default: %(default)s)")
    p.add_argument("--min-iou", type=float, default=0.99, help="per-image mask IoU bar (default: %(default)s)")
    p.add_argument("--timing-batches", type=int, nargs="*", default=[1, 4, 8, 16],
                   help="batch sizes to time; none to skip (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="write build, parity and timing as JSON")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument("--dry-run", action="store_true", help="print the build plan only; needs no TensorRT")
    p.set_defaults(func=_cmd_export_tensorrt)


def _cmd_export_tensorrt(args) -> int:
    import json

    import onnx

    from . import tensorrt_export as te

    name = "clickmask export tensorrt"
    if not args.dry_run:
        try:
            te.require_tensorrt()
        except te.TensorRTUnavailableError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            return 2
    if not args.onnx.is_file():
        print(f"{name}: error: {args.onnx} not found; create it with 'clickmask export onnx'", file=sys.stderr)
        return 2
    policy = te.Fp16Policy(reduce_elements=args.reduce_elements)
    cache = args.timing_cache or Path(str(args.output) + ".timing-cache")
    model = onnx.load(str(args.onnx), load_external_data=False)
    try:
        shapes = te.profile_shapes(te.onnx_input_shapes(model), args.opt_batch, args.max_batch)
    except (ValueError, te.TensorRTBuildError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    pinned = te.fp32_onnx_nodes(model, policy)
    if args.dry_run:
        print("profile (min / opt / max): " + "; ".join(f"{n} {[list(s) for s in v]}" for n, v in shapes.items()))
        print(f"FP32-pinned layers ({len(pinned)}):" + "".join(f"\n  {p.name} [{p.op}]: {p.reason}" for p in pinned))
        print("trtexec equivalent:\n  " + te.trtexec_command(args.onnx, args.output, shapes, args.workspace_mib,
                                                            cache, pinned))
        return 0

    config = te.BuildConfig(args.onnx, args.output, args.opt_batch, args.max_batch, args.workspace_mib, cache,
                            policy=policy)
    report: dict = {}
    try:
        result = te.build_engine(config)
        print(f"built {result.plan_path} (S={result.size}, TensorRT {result.tensorrt_version}, "
              f"{result.build_s:.0f} s, {len(result.pinned)} layers pinned to FP32)")
        report["build"] = result.metadata(config)
        engine = te.TensorRTPredictor(args.output)
        if not args.no_check:
            from clickmask.serving import OnnxPredictor

            dataset = args.dataset or te.DEFAULT_DATASET
            parity = te.compare_on_images(OnnxPredictor(args.onnx), engine,
                                          te.load_samples(dataset, args.parity_images),
                                          clicks_per_image=args.parity_clicks, min_iou=args.min_iou)
            print(parity)
            report["parity"] = parity.as_dict()
        timings = []
        for batch in args.timing_batches:
            timings.append(te.summarize_timings(batch, engine.time_compute(batch), kind="gpu"))
        timings += te.time_batches(engine, engine.size, args.timing_batches)
        for timing in timings:
            print(timing)
        report["timing"] = [dataclasses.asdict(t) for t in timings]
    except (te.TensorRTUnavailableError, te.TensorRTBuildError, FileNotFoundError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.json is not None and report:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    if "parity" in report and not report["parity"]["passed"]:
        print(f"{name}: error: {args.output} failed the parity check; do not deploy it", file=sys.stderr)
        return 2
    return 0


def _add_int8_parser(sub) -> None:
    from .quantize import DEFAULT_CALIBRATION_INPUTS, DEFAULT_PARITY_INPUTS, SCOPES

    p = sub.add_parser(
        "int8", help="quantize the ONNX file to int8 (QDQ, per-channel), calibrated on real click inputs",
        description="ONNX Runtime static quantization of the contract ONNX file (QDQ, uint8 activations, "
                    "per-channel int8 weights); activation ranges from protocol sessions on COCO_MVal objects "
                    "that are not on the validation list. The parity check replays inputs of other sessions and "
                    "compares the thresholded masks with FP32. Serve it with 'clickmask export repository "
                    "--backend python --onnx FILE --output DIR' and 'clickmask serve --model-repository DIR'; "
                    "validate its clicks with 'clickmask select --precision int8'. See docs/int8.md.")
    p.add_argument("--onnx", type=Path, default=Path(DEFAULT_ONNX_OUTPUT), help="FP32 input (default: %(default)s)")
    p.add_argument("--output", type=Path, default=None,
                   help="int8 file (default: model.int8.onnx beside --onnx)")
    p.add_argument("--data-root", type=Path, default=None, help="datasets folder (default: ../shared/datasets)")
    p.add_argument("--calibration-inputs", type=int, default=DEFAULT_CALIBRATION_INPUTS,
                   help="click inputs to calibrate on (default: %(default)s)")
    p.add_argument("--parity-inputs", type=int, default=DEFAULT_PARITY_INPUTS,
                   help="click inputs of other sessions in the parity check (default: %(default)s)")
    p.add_argument("--scope", choices=SCOPES, default="late",
                   help="late: backbone blocks 8-15 only (passes parity); all: every node (default: %(default)s)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.set_defaults(func=_cmd_export_int8)


def _cmd_export_int8(args) -> int:
    from clickmask.datasets import DatasetError, default_root

    from .quantize import QuantizationError, export_int8
    from .val_list import DEFAULT_LIST

    output = args.output or args.onnx.with_name("model.int8.onnx")
    try:
        report = export_int8(args.onnx, output, args.data_root or default_root(), DEFAULT_LIST,
                             calibration_inputs=args.calibration_inputs, parity_inputs=args.parity_inputs,
                             check=not args.no_check, scope=args.scope)
    except (QuantizationError, DatasetError, FileNotFoundError) as exc:
        print(f"clickmask export int8: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {output} (int8 QDQ of {args.onnx}, scope {args.scope})")
    if report is not None:
        print(report)
    return 0


def _add_repository_parser(sub) -> None:
    from .model_config import BACKENDS, TORCH_CUDA_INSTANCES, TORCH_CUDA_MAX_BATCH_SIZE, TORCH_CUDA_QUEUE_DELAY_US

    p = sub.add_parser(
        "repository", help="write a Triton model repository (python, onnxruntime, tensorrt or torch-cuda)",
        description="Lay out OUTPUT/clickmask/{config.pbtxt,1/...} with a config generated from the tensor "
                    "contract; S comes from the ONNX file (torch-cuda: from the checkpoint), the TensorRT profile "
                    "from <plan>.json. torch-cuda serves the checkpoint in torch on the GPU inside the Python "
                    "backend (FP16, channels_last, compiled, CUDA graphs); see docs/gpu-serving.md.")
    p.add_argument("--backend", choices=BACKENDS, required=True)
    p.add_argument("--onnx", type=Path, default=None,
                   help="the contract ONNX file (S is read from it); every backend but torch-cuda")
    p.add_argument("--checkpoint", type=Path, default=None, help="torch-cuda: the clickmask checkpoint to serve")
    p.add_argument("--size", type=int, default=None, help="torch-cuda: S (default: the checkpoint's input_size)")
    p.add_argument("--plan", type=Path, default=None, help="TensorRT plan (--backend tensorrt)")
    p.add_argument("--output", type=Path, required=True, help="model repository folder")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help=f"default: the plan's profile max for tensorrt, {TORCH_CUDA_MAX_BATCH_SIZE} for torch-cuda, "
                        "else 16")
    p.add_argument("--opt-batch", type=int, default=None, help="tensorrt: default from <plan>.json")
    p.add_argument("--instance-count", type=int, default=None,
                   help=f"default: {TORCH_CUDA_INSTANCES} for torch-cuda, 2 for python (two instances of one "
                        "ONNX Runtime thread: on a 2-core CPU 72 annotators against 56 for one of two threads, "
                        "benchmarks/results/capacity.md), else 1")
    p.add_argument("--intra-op-threads", type=int, default=None,
                   help="python: ONNX Runtime threads of each instance (default: 1; the layout before session 14 "
                        "was --instance-count 1 --intra-op-threads 2)")
    p.add_argument("--prefer-first-instance", action=argparse.BooleanOptionalAction, default=None,
                   help="python, two or more instances: the first instance takes every request it is free for "
                        "(rate-limiter priorities 1 and 1000; the server runs with --rate-limit execution_count), "
                        "so a lone click meets a warm process (default: on since session 15; "
                        "--no-prefer-first-instance: the instances take turns, as in session 14)")
    p.add_argument("--queue-delay-us", type=int, default=None,
                   help=f"torch-cuda: dynamic batcher queue delay (default: {TORCH_CUDA_QUEUE_DELAY_US})")
    p.add_argument("--dynamic-batching", action=argparse.BooleanOptionalAction, default=None,
                   help="python: put Triton's dynamic batcher in front of the model (default: off, each request "
                        "runs alone; on a 2-core CPU that held 80 annotators against 72 with the batcher, "
                        "benchmarks/results/capacity.md, session 13). The other backends always batch")
    p.add_argument("--queue-policy", action="store_true",
                   help="python, with --dynamic-batching: bound the queue as until session 12 (32 requests, then UNAVAILABLE at once; "
                        "2 s at most in the queue). Costs a stall of up to 500 ms on some requests "
                        "(docs/reliability.md, 'Overload'); by default a request waits at most its client's deadline")
    p.add_argument("--predictor-option", action="append", default=None, metavar="KEY=VALUE",
                   help="torch-cuda: a predictor parameter, e.g. compile=false, cuda_graphs=false, "
                        "precision=fp32, streams=1 (repeatable)")
    p.add_argument("--gpu", action="store_true", help="onnxruntime: run on one GPU (KIND_GPU)")
    p.add_argument("--tensorrt-fp16", action="store_true",
                   help="onnxruntime: TensorRT execution accelerator in FP16 (needs --gpu)")
    p.add_argument("--cuda-graphs", action="store_true", help="tensorrt: capture CUDA graphs")
    p.set_defaults(func=_cmd_export_repository)


def _cmd_export_repository(args) -> int:
    from .model_config import ModelConfigError, write_repository

    name = "clickmask export repository"
    options = {}
    for item in args.predictor_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            print(f"{name}: error: --predictor-option {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        options[key.strip()] = value.strip()
    try:
        path = write_repository(args.backend, args.output, onnx_path=args.onnx, plan_path=args.plan,
                                max_batch_size=args.max_batch_size, opt_batch=args.opt_batch,
                                instance_count=args.instance_count, gpu=args.gpu,
                                tensorrt_fp16=args.tensorrt_fp16, cuda_graphs=args.cuda_graphs,
                                checkpoint_path=args.checkpoint, size=args.size, queue_delay_us=args.queue_delay_us,
                                predictor_options=options or None, dynamic_batching=args.dynamic_batching,
                                queue_policy=args.queue_policy, intra_op_threads=args.intra_op_threads,
                                prefer_first_instance=args.prefer_first_instance)
    except ModelConfigError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path.parent} ({args.backend})")
    return 0


# --------------------------------------------------------------------------------- average
def add_average_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "average", help="average the weights of checkpoints of one network (a model soup)",
        description="Write the weighted mean of clickmask checkpoints (snapshots of one fine-tuning run, or a run "
                    "and its start) as a new checkpoint; score it like any other with 'clickmask select'.")
    p.add_argument("checkpoints", nargs="+", type=Path, help="two or more checkpoints of the same network")
    p.add_argument("--output", "-o", type=Path, required=True, help="the averaged checkpoint to write")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one weight per checkpoint, normalised to sum to 1 (default: equal)")
    p.add_argument("--float32", action="store_true", help="store float32 tensors (default: float16, half the size)")
    p.set_defaults(func=_cmd_average)
    return p


def _cmd_average(args) -> int:
    from .checkpoint import CheckpointError, average_checkpoints

    try:
        path = average_checkpoints(args.checkpoints, args.output, args.weights, half=not args.float32)
    except CheckpointError as exc:
        print(f"clickmask average: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: the mean of {len(args.checkpoints)} checkpoints")
    return 0


# ----------------------------------------------------------------------------------- train
def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train``: one option per :class:`TrainConfig` field, plus ``--resume``."""
    p = subparsers.add_parser(
        "train", help="train a network on the training sets (CPU or CUDA)",
        description="Train with the RITM recipe (normalized focal loss + 0.4 aux BCE, iterative clicks). "
                    "Checkpoints, config.json and metrics.jsonl go to --output; best.pt is selected by "
                    "validation NoC@90 on the validation list, through the same runner as clickmask eval.")
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_train(args) -> int:
    from .train import train

    overrides = train_overrides(args)
    try:
        result = train(overrides, resume=args.resume)
    except (FileNotFoundError, ValueError) as exc:
        print(f"clickmask train: error: {exc}", file=sys.stderr)
        return 2
    print(result)
    return 0

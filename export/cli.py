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
import typing
from pathlib import Path

from .train_config import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_NETWORK = "efficientnet-lite0"
DEFAULT_ONNX_OUTPUT = "model_repository/clickmask/1/model.onnx"
TENSORRT_MISSING = ("TensorRT is not installed: pip install 'clickmask[tensorrt]' on a machine with an "
                    "NVIDIA GPU")


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
    onnx_p.add_argument("--network", default=DEFAULT_NETWORK,
                        help="registered network name when no checkpoint is given (default: %(default)s)")
    onnx_p.add_argument("--checkpoint", type=Path, default=None, help="trained checkpoint (.pt)")
    onnx_p.add_argument("--size", type=int, default=None,
                        help="input size S (default: the checkpoint's input_size, else 320)")
    onnx_p.add_argument("--output", type=Path, default=Path(DEFAULT_ONNX_OUTPUT), help="default: %(default)s")
    onnx_p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    onnx_p.add_argument("--seed", type=int, default=0, help="seed of the random decoder without --checkpoint")
    onnx_p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    onnx_p.set_defaults(func=_cmd_export_onnx)

    trt_p = sub.add_parser("tensorrt", help="build a TensorRT FP16 plan (needs TensorRT and a GPU)")
    trt_p.add_argument("--onnx", type=Path, default=Path(DEFAULT_ONNX_OUTPUT), help="input ONNX file")
    trt_p.add_argument("--output", type=Path, default=Path("model_repository/clickmask/1/model.plan"))
    trt_p.set_defaults(func=_cmd_export_tensorrt)
    return p


def _cmd_export_onnx(args) -> int:
    import torch

    from .checkpoint import CheckpointError, load_checkpoint
    from .networks import build_network
    from .onnx_export import ParityError, export_onnx

    try:
        if args.checkpoint is not None:
            net, config = load_checkpoint(args.checkpoint)
            size = args.size or int(config.get("input_size", 320))
            source = f"checkpoint {args.checkpoint} ({config['network']})"
        else:
            torch.manual_seed(args.seed)
            net = build_network(args.network)
            size = args.size or 320
            source = f"{args.network} with ImageNet encoder and random decoder (seed {args.seed})"
        report = export_onnx(net, args.output, size=size, opset=args.opset, check=not args.no_check)
    except (CheckpointError, ParityError, ValueError) as exc:
        print(f"clickmask export onnx: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {source} to {args.output} (S={size})")
    if report is not None:
        print(report)
    return 0


def _cmd_export_tensorrt(args) -> int:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print(f"clickmask export tensorrt: error: {TENSORRT_MISSING}", file=sys.stderr)
        return 2
    print("clickmask export tensorrt: error: TensorRT engine building is not implemented yet", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------- train
def _field_type(f: dataclasses.Field):
    hints = typing.get_type_hints(TrainConfig)
    return hints[f.name]


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train``: one option per :class:`TrainConfig` field, plus ``--resume``."""
    p = subparsers.add_parser(
        "train", help="train a network on the training sets (CPU or CUDA)",
        description="Train with the RITM recipe (normalized focal loss + 0.4 aux BCE, iterative clicks). "
                    "Checkpoints, config.json and metrics.jsonl go to --output; best.pt is selected by "
                    "validation NoC@90 on a held-out part of the training sets.")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/last.pt with its recorded config (options given here override it)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = _field_type(f)
        kw = {"dest": f.name, "default": None, "help": f"{f.metadata['help']} (default: {f.default!r})"}
        if tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(tp) is tuple:
            p.add_argument(flag, nargs="+", **kw)
        else:
            p.add_argument(flag, type=tp, **kw)
    p.set_defaults(func=_cmd_train)
    return p


def train_overrides(args) -> dict:
    """The TrainConfig fields given explicitly on the command line."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


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

"""The session's passes side by side: time per click of fast, flip, refine and accurate (flip+refine).

Every variant runs the standard protocol (the real ``Session``, clicker and zoom-in, in-process
ONNX Runtime on the served file) on the same objects, ``--clicks`` clicks each, in rotating
blocks of one object (fast, flip, refine, accurate, fast, ...), so a noisy shared machine slows
them alike. Prints the median and mean milliseconds per click, model calls per click, and the
ratio of each mean to fast's. The objects are COCO_MVal objects off the validation list (timing
only; no set is scored).

    python -m clickmask.benchmarks.passes [--onnx model_repository/clickmask/1/model.onnx] [--objects 12]
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np

from clickmask.datasets import default_root

VARIANTS = {
    "fast": {"flip": False, "refine": False},
    "flip": {"flip": True, "refine": False},
    "refine": {"flip": False, "refine": True},
    "accurate": {"flip": True, "refine": True},
}


class _Counting:
    """The predictor, counting model calls."""

    def __init__(self, inner) -> None:
        self.inner, self.size, self.calls = inner, inner.size, 0

    def infer(self, inputs):
        self.calls += 1
        return self.inner.infer(inputs)


def main(argv=None) -> int:
    from clickmask.client.protocol import run_protocol
    from clickmask.client.session import Session
    from clickmask.datasets import load_object
    from clickmask.export.quantize import held_out_objects
    from clickmask.export.val_list import DEFAULT_LIST
    from clickmask.serving.local import LocalPredictor
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

    parser = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.passes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=pathlib.Path, default=DEFAULT_MODEL_REPOSITORY / "clickmask" / "1" / "model.onnx")
    parser.add_argument("--data-root", type=pathlib.Path, default=None)
    parser.add_argument("--objects", type=int, default=12, help="objects (default: %(default)s)")
    parser.add_argument("--clicks", type=int, default=5, help="clicks per object (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.onnx.is_file():
        parser.error(f"{args.onnx} not found: run 'make model' or give --onnx")

    root = args.data_root or default_root()
    objects = held_out_objects(root, DEFAULT_LIST, "COCO_MVal")[: args.objects]
    loaded = [load_object(o) for o in objects]
    predictor = _Counting(LocalPredictor(args.onnx, threads=args.threads))
    image, gt, ignore = loaded[0]
    for options in VARIANTS.values():  # warm-up
        run_protocol(Session(predictor, image, **options), gt, ignore, max_clicks=2)
    seconds: dict[str, list[float]] = {k: [] for k in VARIANTS}
    calls = dict.fromkeys(VARIANTS, 0)
    for image, gt, ignore in loaded:
        for name, options in VARIANTS.items():
            before = predictor.calls
            run = run_protocol(Session(predictor, image, **options), gt, ignore, max_clicks=args.clicks)
            calls[name] += predictor.calls - before
            seconds[name] += [s for s in run.seconds if s > 0]
    base = float(np.mean(seconds["fast"]))
    print(f"{len(loaded)} COCO_MVal objects, {args.clicks} clicks each, {args.onnx.name}, {args.threads} threads")
    print(f"{'passes':10s} {'median ms':>10s} {'mean ms':>8s} {'calls/click':>12s} {'vs fast':>8s}")
    for name in VARIANTS:
        values = np.array(seconds[name]) * 1e3
        print(f"{name:10s} {np.median(values):10.1f} {values.mean():8.1f} {calls[name] / len(values):12.2f} "
              f"{values.mean() / 1e3 / base:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

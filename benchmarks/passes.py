"""The session's passes side by side: time per click of fast, flip, refine and accurate (flip+refine).

Every variant runs the standard protocol (the real ``Session``, clicker and zoom-in, in-process
ONNX Runtime on the served file) on the same objects, ``--clicks`` clicks each, in rotating
blocks of one object (fast, flip, refine, accurate, flip+batch, accurate+batch, fast, ...), so a
noisy shared machine slows them alike. ``+batch`` sends the flip pair as one batch of two
(``infer_batch``, what sessions on the in-process predictor and the gRPC client do); the plain
rows run the two requests one after the other. Prints the median and mean milliseconds per click,
requests per click, and the ratio of each mean to fast's. The objects are COCO_MVal objects off the validation list (timing
only; no set is scored).

    python -m clickmask.benchmarks.passes [--onnx model_repository/clickmask/1/model.onnx] [--objects 12]
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np

from clickmask.datasets import default_root
from clickmask.machine import describe as describe_cpu

VARIANTS = {
    "fast": {"flip": False, "refine": False},
    "flip": {"flip": True, "refine": False},
    "refine": {"flip": False, "refine": True},
    "accurate": {"flip": True, "refine": True},
}
BATCHED = ("flip", "accurate")  # also timed with the flip pair as one batch ("<name>+batch")


class _Counting:
    """The predictor, counting requests (a batch of two counts two)."""

    def __init__(self, inner) -> None:
        self.inner, self.size, self.calls = inner, inner.size, 0

    def infer(self, inputs):
        self.calls += 1
        return self.inner.infer(inputs)


class _Batching(_Counting):
    """The same, taking a flip pair as one ONNX Runtime batch (what the session does when the
    predictor has ``infer_batch``: the in-process predictor and the gRPC client)."""

    def infer_batch(self, requests):
        self.calls += len(requests)
        return self.inner.infer_batch(requests)


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
    local = LocalPredictor(args.onnx, threads=args.threads)
    single, batching = _Counting(local), _Batching(local)
    variants = [(name, options, single) for name, options in VARIANTS.items()]
    variants += [(f"{name}+batch", VARIANTS[name], batching) for name in BATCHED]
    image, gt, ignore = loaded[0]
    for _, options, predictor in variants:  # warm-up
        run_protocol(Session(predictor, image, **options), gt, ignore, max_clicks=2)
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    calls = dict.fromkeys(seconds, 0)
    for image, gt, ignore in loaded:
        for name, options, predictor in variants:
            before = predictor.calls
            run = run_protocol(Session(predictor, image, **options), gt, ignore, max_clicks=args.clicks)
            calls[name] += predictor.calls - before
            seconds[name] += [s for s in run.seconds if s > 0]
    base = float(np.mean(seconds["fast"]))
    print(f"{len(loaded)} COCO_MVal objects, {args.clicks} clicks each, {args.onnx.name}, {args.threads} threads")
    print(f"CPU: {describe_cpu()}")
    print(f"{'passes':15s} {'median ms':>10s} {'mean ms':>8s} {'requests/click':>15s} {'vs fast':>8s}")
    for name in seconds:
        values = np.array(seconds[name]) * 1e3
        print(f"{name:15s} {np.median(values):10.1f} {values.mean():8.1f} {calls[name] / len(values):15.2f} "
              f"{values.mean() / 1e3 / base:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""FP32 against int8 (both scopes) on this CPU: time per request and mask parity, side by side.

Quantizes the FP32 file with ``clickmask export int8`` in each scope (calibrated on COCO_MVal
sessions off the validation list), records click inputs of other sessions, and runs every file
on the same inputs in rotating blocks (10 FP32, 10 late, 10 all, 10 FP32, ...), so a noisy
shared machine slows them alike. Blocks rather than single requests: ONNX Runtime's intra-op
threads spin for a while after a run, and one session's spinning threads would slow the next
session's run if they alternated request by request. Prints median and p95 milliseconds per request, the ratio of each median to FP32,
and the parity of each int8 file's thresholded mask against FP32.

    python -m clickmask.benchmarks.int8 [--onnx model_repository/clickmask/1/model.onnx] [--repeat 60]
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile

import numpy as np

from clickmask.datasets import default_root
from clickmask.machine import describe as describe_cpu


def main(argv=None) -> int:
    import time

    from clickmask.export.quantize import (SCOPES, compare, held_out_objects, quantize_int8, record_inputs)
    from clickmask.export.val_list import DEFAULT_LIST
    from clickmask.serving import OnnxPredictor
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=pathlib.Path,
                        default=DEFAULT_MODEL_REPOSITORY / "clickmask" / "1" / "model.onnx")
    parser.add_argument("--data-root", type=pathlib.Path, default=None)
    parser.add_argument("--repeat", type=int, default=60, help="requests per file (default: %(default)s)")
    parser.add_argument("--block", type=int, default=10, help="requests per file in a row (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    parser.add_argument("--calibration-inputs", type=int, default=72)
    parser.add_argument("--parity-inputs", type=int, default=48)
    args = parser.parse_args(argv)
    root = args.data_root or default_root()

    objects = held_out_objects(root, DEFAULT_LIST)
    half = len(objects) // 2
    calibration = record_inputs(args.onnx, objects[:half], args.calibration_inputs, threads=args.threads)
    replay = record_inputs(args.onnx, objects[half:], args.parity_inputs, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": args.onnx}
        for scope in SCOPES:
            files[f"int8 {scope}"] = quantize_int8(args.onnx, pathlib.Path(tmp) / f"{scope}.onnx", calibration, scope)
        parity = {name: compare(args.onnx, path, replay, threads=args.threads)
                  for name, path in files.items() if name != "fp32"}
        predictors = {name: OnnxPredictor(path, threads=args.threads) for name, path in files.items()}
        for predictor in predictors.values():  # warm-up
            predictor.infer(replay[0])
        times: dict[str, list[float]] = {name: [] for name in predictors}
        block = max(1, args.block)
        for first in range(0, args.repeat, block):
            for name, predictor in predictors.items():
                for i in range(first, min(first + block, args.repeat)):
                    inputs = replay[i % len(replay)]
                    start = time.perf_counter()
                    predictor.infer(inputs)
                    times[name].append((time.perf_counter() - start) * 1000)
    size = predictors["fp32"].size
    print(f"S={size}, {args.threads} ORT threads, {args.repeat} requests each, in rotating blocks of {block}; "
          f"CPU {describe_cpu()}")
    base = float(np.median(times["fp32"]))
    print(f"{'model':<12}{'median ms':>11}{'p95 ms':>9}{'vs fp32':>9}  parity (mask IoU against fp32)")
    for name, samples in times.items():
        median, p95 = float(np.median(samples)), float(np.percentile(samples, 95))
        verdict = "-" if name == "fp32" else str(parity[name]).split(": ", 1)[0] + (
            f": mean {parity[name].mean_iou:.4f}, p10 {parity[name].p10_iou:.4f}, min {min(parity[name].ious):.4f}")
        print(f"{name:<12}{median:>11.1f}{p95:>9.1f}{median / base:>9.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``clickmask eval``: NoC@85/90/95 and the mIoU curve, in-process (--onnx) or through a server (--url)."""
from __future__ import annotations

import argparse
import pathlib
import sys

from clickmask.datasets import CONVENTIONS
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY
from clickmask.machine import describe_dict

DEFAULT_ONNX = DEFAULT_MODEL_REPOSITORY / "clickmask" / "1" / "model.onnx"


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="NoC evaluation with the standard automatic clicker",
        description="Evaluate a model with RITM's protocol: up to --max-clicks clicks per object, each at the "
                    "interior point of the largest error region; 128 in a mask is ignored. Runs through a server "
                    "with --url, else in-process on --onnx (default: the served ONNX file).",
    )
    p.add_argument("--dataset", type=pathlib.Path, required=True, help="folder with images/ and masks/")
    p.add_argument("--max-clicks", type=int, default=20, help="default: %(default)s")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples (sorted by id)")
    p.add_argument("--convention", choices=CONVENTIONS, default=None,
                   help="what mask values mean (default: known by the folder's name, else binary: 0 background, "
                        "128 ignored, anything else object); see clickmask.datasets")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--url", default=None, help="Triton gRPC address, e.g. 127.0.0.1:8001")
    source.add_argument("--onnx", type=pathlib.Path, default=None, help=f"ONNX file (default: {DEFAULT_ONNX})")
    p.add_argument("--workers", type=int, default=1, help="concurrent sessions (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads in-process (0: its default)")
    p.add_argument("--passes", choices=("fast", "balanced", "accurate"), default=None,
                   help="fast: one model call a click; balanced: --refine (a second pass on the object's box, "
                        "mostly on the first click); accurate: --flip --refine (about twice the compute). "
                        "Default: $CLICKMASK_PASSES, else fast; --flip/--refine override it")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="Session(flip=...): average every answer with the mirrored request's "
                        "(default: the Session's default)")
    p.add_argument("--flip-first", type=int, default=None, metavar="N",
                   help="Session(flip=N): flip-average the first N clicks only")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="Session(refine=...): a second pass on the object's box after a full-view pass "
                        "(default: the Session's default)")
    p.add_argument("--json", type=pathlib.Path, default=None, help="write the summary JSON here")
    p.add_argument("--csv", type=pathlib.Path, default=None, help="write per-sample results here")
    p.add_argument("--plot", type=pathlib.Path, default=None, help="write the mIoU-vs-clicks plot (PNG) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from clickmask.benchmarks.accuracy import evaluate, list_samples, plot_curves, summarize, write_csv, write_json
    from clickmask.client.errors import InvalidInputError
    from clickmask.client.session import resolve_passes

    if args.max_clicks < 1:
        raise InvalidInputError("--max-clicks must be at least 1")
    samples = list_samples(args.dataset, args.limit, convention=args.convention)
    if args.url:
        from clickmask.client import Client

        predictor = Client(args.url)
        source = f"server {args.url}"
    else:
        from clickmask.serving.local import LocalPredictor

        predictor = LocalPredictor(args.onnx or DEFAULT_ONNX, threads=args.threads)
        source = f"in-process {args.onnx or DEFAULT_ONNX}"
    name = pathlib.Path(args.dataset).resolve().name
    print(f"evaluating {len(samples)} samples of {name} ({source}), {args.max_clicks} clicks each", file=sys.stderr)
    if args.flip_first is not None and (args.flip is not None or args.flip_first < 0):
        raise InvalidInputError("--flip-first N takes a number of clicks >= 0 and goes without --flip/--no-flip")
    flip = args.flip if args.flip_first is None else args.flip_first
    from clickmask.client.session import PASSES

    preset = dict(PASSES[args.passes]) if args.passes else {}
    options = {**preset, **{k: v for k, v in (("flip", flip), ("refine", args.refine)) if v is not None}}
    try:
        results = evaluate(predictor, samples, args.max_clicks, workers=args.workers,
                           progress=not args.no_progress, desc=name, **options)
    finally:
        close = getattr(predictor, "close", None)
        if close:
            close()
    summary = summarize(results, name, args.max_clicks)
    summary["session"] = resolve_passes(options)
    # through a server: which wire the client took (the compact entry when the server offers it)
    summary["wire"] = ("compact" if predictor.compact else "raw") if args.url else "in-process"
    summary["machine"] = describe_dict()  # figures depend on the CPU (docs/cpu.md)
    curve = summary["miou_curve"]
    print(f"{name}: {summary['num_samples']} samples  NoC@85 {summary['noc85']:.2f}  NoC@90 {summary['noc90']:.2f}  "
          f"NoC@95 {summary['noc95']:.2f}  failures@90 {summary['failures90']}  "
          f"mIoU@1 {curve[0]:.3f}  mIoU@5 {curve[min(4, len(curve) - 1)]:.3f}  "
          f"{summary['seconds_per_click'] * 1000:.0f} ms/click")
    if args.json:
        write_json(summary, args.json)
    if args.csv:
        write_csv(results, args.csv, args.max_clicks)
    if args.plot:
        plot_curves([summary], args.plot)
    return 0

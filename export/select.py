"""``clickmask select``: score checkpoints on the committed validation list, object by object.

Each checkpoint is exported to ONNX (with the parity check) and run in-process by ONNX Runtime
through the same ``Session`` and protocol runner as ``clickmask eval``, so the number that picks
a checkpoint is the number users see. Runs stop at IoU 0.90 (NoC@85/90 are known by then).
Per-object NoC@90 is cached beside the output (keyed by the checkpoint's bytes, S and the list),
so re-scoring a run's snapshots costs only the new ones.

The comparison is paired: every candidate against the first checkpoint (the baseline) on the
same objects, with the mean difference, a bootstrap 95% interval of it, and wins/losses.

    clickmask select export/checkpoints/clickmask-lite0.pt runs/v4/step-*.pt --size 448 --out runs/select
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

from clickmask.datasets import read_object_list
from clickmask.machine import describe as describe_cpu

from clickmask.client.session import resolve_passes
from clickmask.client.errors import InvalidInputError

from .val_list import DEFAULT_LIST


def _digest(path: pathlib.Path, extra: str) -> str:
    h = hashlib.sha256(path.read_bytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]


def score_checkpoint(checkpoint: pathlib.Path, objects, size: int | None, threads: int, max_clicks: int,
                     progress: bool = True, session_options: dict | None = None,
                     int8: bool = False, data_root: pathlib.Path | None = None,
                     val_list: pathlib.Path | None = None) -> dict:
    """Per-object NoC@85/NoC@90 of one checkpoint (ONNX Runtime, the eval path).

    ``int8``: score the int8 file ``clickmask export int8`` makes of it (calibrated on COCO_MVal
    objects off ``val_list``), as ``clickmask serve --precision int8`` would serve it."""
    from clickmask.evaluation import evaluate
    from clickmask.serving.local import LocalPredictor

    from .checkpoint import load_checkpoint
    from .onnx_export import export_onnx

    net, config = load_checkpoint(checkpoint)
    size = size or int(config.get("input_size", 320))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = pathlib.Path(tmp) / "model.onnx"
        export_onnx(net, onnx_path, size=size, check=True)
        parity = None
        if int8:
            from .quantize import export_int8

            int8_path = onnx_path.with_name("model.int8.onnx")
            parity = export_int8(onnx_path, int8_path, data_root, val_list, threads=threads, check=True,
                                 keep_failed=True)
            onnx_path = int8_path
        predictor = CountingPredictor(LocalPredictor(onnx_path, threads=threads))
        start = time.perf_counter()
        runs = evaluate(predictor, objects, max_clicks=max_clicks, progress=progress,
                        desc=checkpoint.name, stop_iou=0.90, **(session_options or {}))
    seconds = [s for r in runs for s in r.seconds if s > 0]
    clicks = max(len(seconds), 1)  # clicks placed (a zero time is a click the clicker had no need for)
    return {
        "checkpoint": str(checkpoint), "size": size, "step": config.get("step"), "int8": int8,
        **({"int8_parity": parity.as_dict()} if parity is not None else {}),
        "objects": [o.key for o in objects],
        "noc90": [r.noc(0.90) for r in runs], "noc85": [r.noc(0.85) for r in runs],
        "failed90": [r.failed(0.90) for r in runs],
        "seconds_per_click": float(np.mean(seconds)) if seconds else 0.0,
        "wall_seconds": time.perf_counter() - start,
        "images_per_click": predictor.images / clicks, "requests_per_click": predictor.requests / clicks,
    }


class CountingPredictor:
    """A predictor that counts what it is asked: round trips (``requests``) and network inputs
    (``images``; a flip pair is one request of two images). Their ratio to clicks is the cost of a
    session's passes."""

    def __init__(self, inner) -> None:
        self.inner, self.size, self.requests, self.images = inner, inner.size, 0, 0

    def infer(self, inputs):
        self.requests += 1
        self.images += 1
        return self.inner.infer(inputs)

    def infer_batch(self, requests):
        self.requests += 1
        self.images += len(requests)
        return self.inner.infer_batch(requests)

    def session(self, image, **options):
        from clickmask.client.session import Session  # noqa: PLC0415

        return Session(self, image, **options)


def paired(base: np.ndarray, cand: np.ndarray, rounds: int = 2000, seed: int = 0) -> dict:
    """Mean of ``cand - base``, its bootstrap 95% interval, and wins (fewer clicks) / losses."""
    diff = cand.astype(float) - base.astype(float)
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, diff.size, (rounds, diff.size))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"delta": float(diff.mean()), "ci95": [float(lo), float(hi)],
            "wins": int((diff < 0).sum()), "losses": int((diff > 0).sum()), "ties": int((diff == 0).sum())}


def _by_set(keys: list[str], values: list[int]) -> dict[str, float]:
    groups: dict[str, list[int]] = {}
    for key, value in zip(keys, values):
        groups.setdefault(key.split("/", 1)[0], []).append(value)
    return {k: float(np.mean(v)) for k, v in groups.items()}


#: The sets whose objects look like what users (and GrabCut/Berkeley) click on: whole objects in
#: natural photos. CCP's instances are garments and hair (parts of a person) and MSRC's are coarse.
DEFAULT_FOCUS = ("COCO_MVal", "COCO128seg", "WeizmannHorse")


def _ci(p: dict) -> str:
    return f"{p['delta']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]"


def comparison_table(scores: list[dict], focus: tuple[str, ...] = DEFAULT_FOCUS) -> str:
    """Markdown table: every score against the first, on all objects and on the ``focus`` sets."""
    base = scores[0]
    sets = list(_by_set(base["objects"], base["noc90"]))
    in_focus = np.array([k.split("/", 1)[0] in focus for k in base["objects"]])
    focus_head = [f"Δ on {'+'.join(focus)} ({int(in_focus.sum())})"] if in_focus.any() and not in_focus.all() else []
    head = ["checkpoint", "S", "precision", "session", "NoC@90", "fail@90", "Δ vs first [95% CI]", "wins/losses", *focus_head,
            *sets, "s/click", "images/click"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        p = paired(np.array(base["noc90"]), np.array(s["noc90"]))
        per_set = _by_set(s["objects"], s["noc90"])
        delta = "-" if s is base else _ci(p)
        wl = "-" if s is base else f"{p['wins']}/{p['losses']}"
        focus_cell = []
        if focus_head:
            focus_cell = ["-" if s is base else _ci(paired(np.array(base["noc90"])[in_focus],
                                                           np.array(s["noc90"])[in_focus]))]
        lines.append("| " + " | ".join([pathlib.Path(s["checkpoint"]).name, str(s["size"]),
                                         "int8" if s.get("int8") else "fp32",
                                         session_label(s.get("session_options") or {}),
                                         f"{np.mean(s['noc90']):.2f}", str(sum(s["failed90"])), delta, wl,
                                         *focus_cell,
                                         *(f"{per_set[k]:.2f}" for k in sets),
                                         f"{1000 * s['seconds_per_click']:.0f} ms",
                                         f"{s['images_per_click']:.2f}" if "images_per_click" in s else "-"]) + " |")
    return "\n".join(lines)


def _switch(values: list[str] | None) -> list[bool | int | str | None]:
    """``--flip on off 2 auto:0.1`` -> [True, False, 2, "auto:0.1"]; not given -> [None] (the
    Session's default)."""
    if not values:
        return [None]
    return [v == "on" if v in ("on", "off") else v if v.startswith("auto") else int(v) for v in values]


def _on_off_or_count(value: str) -> str:
    if value in ("on", "off") or (value.isdigit() and int(value) > 0):
        return value
    if value.startswith("auto"):
        try:
            resolve_passes({"flip": value, "refine": False})
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    raise argparse.ArgumentTypeError(f"expected on, off, a number of first clicks or auto[:T], got {value!r}")


ZOOM_OPTIONS = {"expansion_ratio": "expansion", "min_crop_size": "min crop"}
"""Session zoom-in options ``select`` can vary, and their labels in the table."""


def _zoom_defaults() -> dict:
    """The Session's own zoom-in defaults (read off its signature, so they cannot drift)."""
    import inspect  # noqa: PLC0415

    from clickmask.client.session import _SessionCore  # noqa: PLC0415

    params = inspect.signature(_SessionCore.__init__).parameters
    return {k: params[k].default for k in ZOOM_OPTIONS}


def _options_tag(options: dict) -> str:
    """Cache-key part of the session options as the Session resolves them (its defaults filled
    in). Options that are off or at their default add nothing, so caches made before they
    existed still hold."""
    resolved = resolve_passes(options)
    tag = "".join(f":{k}" if resolved[k] is True else f":{k}={resolved[k]}" for k in sorted(resolved)
                  if resolved[k] is not False)
    defaults = _zoom_defaults()
    return tag + "".join(f":{k}={options[k]:g}" for k in ZOOM_OPTIONS
                         if options.get(k) is not None and options[k] != defaults[k])


def session_label(options: dict) -> str:
    """``flip``, ``refine``, ``flip+refine``, ``no refine``, ``expansion 1.6``...; ``default`` when
    nothing is set."""
    if not options:
        return "default"
    passes = [k if v is True else f"no {k}" if v is False else f"{k} {v}" if isinstance(v, str) else f"{k} first {v}"
              for k, v in sorted(options.items()) if k not in ZOOM_OPTIONS]
    zoom = [f"{ZOOM_OPTIONS[k]} {options[k]:g}" for k in ZOOM_OPTIONS if options.get(k) is not None]
    return "+".join(passes + zoom)


def _expansion(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        ratio = float("nan")
    if not ratio >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a zoom-in expansion ratio >= 1, got {value!r}")
    return ratio


def _min_crop(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a minimum crop side in pixels (a positive integer), got {value!r}")
    return int(value)


def add_select_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "select", help="score checkpoints on the validation list (paired, through the eval runner)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=pathlib.Path, help="the first one is the baseline")
    p.add_argument("--val-list", type=pathlib.Path, default=DEFAULT_LIST, help="default: %(default)s")
    p.add_argument("--data-root", type=pathlib.Path, default=pathlib.Path("../shared/datasets"))
    p.add_argument("--size", type=int, nargs="+", default=None,
                   help="serving size(s) S to score at (default: each checkpoint's own)")
    p.add_argument("--limit", type=int, default=None, help="first N objects of the list only")
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    p.add_argument("--focus", default=",".join(DEFAULT_FOCUS),
                   help="comma-separated sets that also get their own paired column: the whole-object sets "
                        "that look like what users click on (default: %(default)s)")
    p.add_argument("--precision", nargs="+", choices=("fp32", "int8"), default=["fp32"],
                   help="fp32: the exported file; int8: its int8 QDQ file (clickmask export int8, late scope), "
                        "as served with the int8 repository. Several: each checkpoint in each (default: fp32)")
    p.add_argument("--flip", nargs="+", type=_on_off_or_count, default=None, metavar="{on,off,N,auto[:T]}",
                   help="Session(flip=...): test-time flip averaging on every click, none, the first N, or passes "
                        "after an uncertain answer (auto, auto:T). "
                        "Several: each checkpoint in each (default: the Session's default)")
    p.add_argument("--refine", nargs="+", choices=("on", "off"), default=None,
                   help="Session(refine=...): a second pass on the object's box after a full-view pass. "
                        "Several: each checkpoint in each (default: the Session's default)")
    p.add_argument("--expansion", nargs="+", type=_expansion, default=None, metavar="RATIO",
                   help="Session(expansion_ratio=...): zoom-in crop side over the object's box side. Several: "
                        "each checkpoint in each (default: the Session's, 1.4)")
    p.add_argument("--min-crop", nargs="+", type=_min_crop, default=None, metavar="PIXELS",
                   help="Session(min_crop_size=...): smallest zoom-in crop side in image pixels. Several: each "
                        "checkpoint in each (default: the Session's, 200)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/select"),
                   help="folder for the cache, scores.json and table.md (default: %(default)s)")
    p.set_defaults(func=_cmd_select)
    return p


def _cmd_select(args) -> int:
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        print(f"clickmask select: error: no such checkpoint: {', '.join(missing)}", file=sys.stderr)
        return 2
    objects = read_object_list(args.val_list, args.data_root)
    if args.limit:
        objects = objects[:args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.out / "cache"
    cache_dir.mkdir(exist_ok=True)
    list_tag = hashlib.sha256("\n".join(o.key for o in objects).encode()).hexdigest()[:12]
    scores = []
    variants = [{k: v for k, v in (("flip", flip), ("refine", refine), ("expansion_ratio", expansion),
                                   ("min_crop_size", min_crop)) if v is not None}
                for flip in _switch(args.flip) for refine in _switch(args.refine)
                for expansion in (args.expansion or [None]) for min_crop in (args.min_crop or [None])]
    runs = [(size, precision, options, ckpt) for size in (args.size or [None]) for precision in args.precision
            for options in variants for ckpt in args.checkpoints]
    for size, precision, options, ckpt in runs:
        int8 = precision == "int8"
        tag = f"{size}:{list_tag}:{args.max_clicks}" + (":int8" if int8 else "") + _options_tag(options)
        cache = cache_dir / f"{_digest(ckpt, tag)}.json"
        if cache.is_file():
            score = json.loads(cache.read_text())
        else:
            score = score_checkpoint(ckpt, objects, size, args.threads, args.max_clicks, int8=int8,
                                     data_root=args.data_root, val_list=args.val_list, session_options=options)
            score["session_options"] = {**resolve_passes(options),
                                        **{k: options[k] for k in ZOOM_OPTIONS if k in options}}
            cache.write_text(json.dumps(score) + "\n")
        score["checkpoint"] = str(ckpt)
        scores.append(score)
        print(f"{ckpt} ({precision}, {session_label(options)}): S={score['size']} NoC@90 {np.mean(score['noc90']):.3f}, "
              f"{sum(score['failed90'])} of {len(objects)} never reach 90%", flush=True)
    table = comparison_table(scores, tuple(x for x in args.focus.split(",") if x))
    (args.out / "scores.json").write_text(json.dumps(scores) + "\n")
    (args.out / "table.md").write_text(f"validation list {args.val_list} ({len(objects)} objects); CPU: {describe_cpu()}\n\n{table}\n")
    print(table)
    return 0

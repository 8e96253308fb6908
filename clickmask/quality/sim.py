"""Simulated annotators and the ``clickmask quality`` command.

Real session logs with known final quality are not available here, so the quality model is
fitted and measured on simulated sessions: an annotator of random skill clicks through the
client library's real :class:`~clickmask.client.session.Session` (zoom-in, previous mask,
the served model), aiming where the standard clicker would but with their own click noise,
misplaced clicks, judgement of when the mask is good enough, patience and pace. The final
mask's IoU with the truth is kept in ``meta.final_iou``; the features never see it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import pathlib
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clickmask import datasets
from clickmask.client.clicks import Click
from clickmask.client.protocol import ProtocolRun
from clickmask.datasets import ObjectRef
from clickmask.client.errors import InvalidInputError
from clickmask.quality.model import BAD_IOU

LOGGER = logging.getLogger(__name__)

EVALUATION_ONLY = frozenset({"GrabCut", "Berkeley"})
SIM_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated sessions get simulated clocks


# ------------------------------------------------------------------------------ annotators
@dataclass(frozen=True)
class Annotator:
    """One simulated annotator's habits (drawn per session)."""

    profile: str
    click_noise: float       # click offset std, as a fraction of sqrt(object area)
    mistake_rate: float      # chance a click lands anywhere, with a random polarity
    target_iou: float        # stops once the mask looks at least this good
    judgement_noise: float   # std of the annotator's estimate of the IoU
    max_clicks: int          # gives up after this many clicks
    tire_rate: float         # chance to stop after any click regardless
    seconds_per_click: float  # median think time before a click
    hesitation: float        # log-normal spread of think times
    review_seconds: float    # median look at the final mask before accepting it


# profile: (weight, {parameter: (low, high)})
PROFILES: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {
    "careful": (0.35, dict(click_noise=(0.0, 0.03), mistake_rate=(0.0, 0.03), target_iou=(0.90, 0.96),
                           judgement_noise=(0.01, 0.03), max_clicks=(10, 20), tire_rate=(0.0, 0.03),
                           seconds_per_click=(2.0, 4.0), hesitation=(0.2, 0.4), review_seconds=(2.0, 5.0))),
    "average": (0.40, dict(click_noise=(0.02, 0.07), mistake_rate=(0.02, 0.10), target_iou=(0.84, 0.92),
                           judgement_noise=(0.02, 0.06), max_clicks=(5, 12), tire_rate=(0.03, 0.10),
                           seconds_per_click=(1.5, 3.0), hesitation=(0.3, 0.6), review_seconds=(1.0, 3.0))),
    "hasty": (0.25, dict(click_noise=(0.05, 0.15), mistake_rate=(0.08, 0.25), target_iou=(0.70, 0.88),
                         judgement_noise=(0.04, 0.10), max_clicks=(1, 6), tire_rate=(0.10, 0.30),
                         seconds_per_click=(0.7, 1.6), hesitation=(0.4, 0.9), review_seconds=(0.3, 1.5))),
}


def draw_annotator(rng: np.random.Generator) -> Annotator:
    names = list(PROFILES)
    weights = np.array([PROFILES[n][0] for n in names])
    profile = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    params: dict[str, Any] = {}
    for key, (low, high) in PROFILES[profile][1].items():
        params[key] = int(rng.integers(int(low), int(high) + 1)) if key == "max_clicks" else float(rng.uniform(low, high))
    return Annotator(profile=profile, **params)


# ------------------------------------------------------------------------------ objects
SimObject = ObjectRef  # one object of a dataset folder (clickmask.datasets)


def list_objects(dataset: pathlib.Path, min_object_fraction: float = 0.01, limit: int | None = None
                 ) -> list[ObjectRef]:
    """Objects of a dataset folder through the one dataset reader (instance sets: one per instance)."""
    return datasets.list_objects(dataset, min_object_fraction=min_object_fraction, limit=limit)


def _name(obj: ObjectRef) -> str:
    return obj.sample_id if obj.instance_id is None else f"{obj.sample_id}#{obj.instance_id}"


# ------------------------------------------------------------------------------ simulation
def simulate_session(predictor, obj: SimObject, annotator: Annotator, rng: np.random.Generator,
                     session_id: str, start: float = SIM_EPOCH) -> dict[str, Any]:
    """One annotation of ``obj`` by ``annotator``; returns its ``clickmask.session/1`` record."""
    image, gt, ignore = datasets.load_object(obj)
    height, width = gt.shape
    session = predictor.session(image)
    run = ProtocolRun(session, gt, ignore, max_clicks=annotator.max_clicks)
    scale = math.sqrt(max(1, int(gt.sum())))
    clock, times, final_iou = start, [], 0.0
    while not run.done:
        intended = run.intended()
        if intended is None:
            break
        clock += annotator.seconds_per_click * float(rng.lognormal(0.0, annotator.hesitation))
        if rng.random() < annotator.mistake_rate:
            x, y, positive = rng.uniform(0, width - 1), rng.uniform(0, height - 1), bool(rng.random() < 0.5)
        else:
            x = float(np.clip(intended.x + rng.normal(0.0, annotator.click_noise * scale), 0, width - 1))
            y = float(np.clip(intended.y + rng.normal(0.0, annotator.click_noise * scale), 0, height - 1))
            positive = intended.positive
        final_iou = run.step(Click(x=x, y=y, positive=positive))
        times.append(clock)
        if final_iou + rng.normal(0.0, annotator.judgement_noise) >= annotator.target_iou:
            break
        if rng.random() < annotator.tire_rate:
            break
    closed_at = clock + annotator.review_seconds * float(rng.lognormal(0.0, 0.3))
    meta = {"dataset": obj.dataset, "sample_id": _name(obj), "simulated": True,
            "final_iou": float(final_iou), "annotator": asdict(annotator)}
    record = session.to_log(session_id=session_id, meta=meta, closed_at=closed_at)
    for click, t in zip(record["clicks"], times):
        click["timestamp"] = t
    return record


def _seed_for(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}:{key}".encode())


def simulate(predictor, objects: Sequence[SimObject], per_object: int = 1, seed: int = 0, workers: int = 1,
             progress: bool = True, desc: str = "simulate",
             on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """``per_object`` sessions per object, each with a freshly drawn annotator; deterministic by seed."""
    jobs = [(obj, k) for obj in objects for k in range(per_object)]

    def run(job: tuple[SimObject, int]) -> dict[str, Any]:
        obj, k = job
        key = f"{obj.dataset}/{_name(obj)}/{k}"
        rng = np.random.default_rng(_seed_for(seed, key))
        return simulate_session(predictor, obj, draw_annotator(rng), rng, session_id=f"sim-{seed}-{key}")

    from clickmask.evaluation import _progress

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        bar = _progress(concurrent.futures.as_completed(futures), len(futures), desc, progress)
        bad = 0
        for done, future in enumerate(bar, 1):
            record = future.result()
            bad += record["meta"]["final_iou"] < BAD_IOU
            if on_record:
                on_record(record)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(bad=f"{bad / done:.0%}", refresh=False)
        return [f.result() for f in futures]


# ------------------------------------------------------------------------------ evaluation
def evaluate_records(records: Sequence[dict[str, Any]], model, grid: int = 100) -> dict[str, Any]:
    """ROC-AUC (pooled and per dataset) and the review curve of ``model`` on labelled sessions."""
    from clickmask.quality.model import feature_matrix, is_bad, review_curve, roc_auc

    labels = np.array([is_bad(r) for r in records])
    scores = model.score_matrix(feature_matrix(records))
    reviewed, found = review_curve(labels, scores)
    n = len(labels)
    fractions = np.linspace(0.0, 1.0, grid + 1)
    at = found[np.ceil(fractions * n - 1e-9).astype(int)]
    per_dataset = {}
    names = sorted({r.get("meta", {}).get("dataset", "?") for r in records})
    for name in names:
        idx = np.array([r.get("meta", {}).get("dataset", "?") == name for r in records])
        sub = {"num_sessions": int(idx.sum()), "num_bad": int(labels[idx].sum())}
        sub["roc_auc"] = roc_auc(labels[idx], scores[idx]) if 0 < sub["num_bad"] < sub["num_sessions"] else None
        per_dataset[name] = sub
    return {
        "roc_auc": roc_auc(labels, scores),
        "num_sessions": n,
        "num_bad": int(labels.sum()),
        "bad_fraction": float(labels.mean()),
        "bad_iou": BAD_IOU,
        "per_dataset": per_dataset,
        "review_curve": {"reviewed": fractions.round(4).tolist(), "found": at.round(4).tolist(),
                         "random": fractions.round(4).tolist(),
                         "oracle": np.minimum(1.0, fractions * n / max(1, labels.sum())).round(4).tolist()},
        "found_at": {f"{f:.2f}": float(found[int(math.ceil(f * n - 1e-9))]) for f in (0.1, 0.2, 0.3, 0.5)},
        "mean_clicks": float(np.mean([len(r["clicks"]) for r in records])),
    }


def plot_review_curve(result: dict[str, Any], path: pathlib.Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["review_curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    ax.plot(curve["reviewed"], curve["oracle"], ":", color="grey", label="perfect ranking")
    ax.plot(curve["reviewed"], curve["found"], "-", color="C0", lw=2,
            label=f"quality model (ROC-AUC {result['roc_auc']:.3f})")
    ax.plot(curve["reviewed"], curve["random"], "--", color="C3", label="random order")
    ax.set_xlabel("fraction of masks reviewed (worst-scored first)")
    ax.set_ylabel("fraction of bad masks found (IoU < %.2f)" % result["bad_iou"])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or f"review queue: {result['num_sessions']} sessions, {result['num_bad']} bad")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------ CLI
def _predictor(args):
    if getattr(args, "url", None):
        from clickmask.client import Client

        return Client(args.url), f"server {args.url}"
    from clickmask.benchmarks.eval_cli import DEFAULT_ONNX
    from clickmask.serving.local import LocalPredictor

    onnx = args.onnx or DEFAULT_ONNX
    if not pathlib.Path(onnx).is_file():
        raise InvalidInputError(f"no ONNX model at {onnx}; run 'make model' or pass --onnx/--url")
    return LocalPredictor(onnx, threads=args.threads), f"in-process {onnx}"


def _simulate_datasets(args, seed: int) -> list[dict[str, Any]]:
    predictor, source = _predictor(args)
    records: list[dict[str, Any]] = []
    try:
        for dataset in args.dataset:
            objects = list_objects(dataset, limit=args.limit)
            name = pathlib.Path(dataset).resolve().name
            print(f"simulating {args.per_object} session(s) on each of {len(objects)} objects of {name} ({source})",
                  file=sys.stderr)
            records += simulate(predictor, objects, args.per_object, seed, args.workers,
                                progress=not args.no_progress, desc=name)
    finally:
        close = getattr(predictor, "close", None)
        if close:
            close()
    return records


def _read_all(paths: Sequence[pathlib.Path]) -> list[dict[str, Any]]:
    from clickmask.client.session_log import read_sessions

    records = []
    for path in paths:
        if not pathlib.Path(path).is_file():
            raise InvalidInputError(f"no session log at {path}")
        records += list(read_sessions(path))
    return records


def _cmd_simulate(args) -> int:
    from clickmask.client.session_log import write_sessions

    records = _simulate_datasets(args, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_sessions(args.out, records)
    bad = sum(r["meta"]["final_iou"] < BAD_IOU for r in records)
    print(f"wrote {len(records)} sessions to {args.out} ({bad} bad, {bad / max(1, len(records)):.0%})")
    return 0


def _cmd_train(args) -> int:
    from clickmask.quality.model import QualityModel, feature_matrix, is_bad, roc_auc

    records = _read_all(args.sessions)
    used = sorted({r.get("meta", {}).get("dataset") for r in records} & EVALUATION_ONLY)
    if used and not args.allow_evaluation_sets:
        raise InvalidInputError(f"sessions from {', '.join(used)} are for evaluation only: never fit on them "
                                "(pass --allow-evaluation-sets only for experiments you will not report)")
    labels = np.array([is_bad(r) for r in records], float)
    datasets = sorted({r.get("meta", {}).get("dataset", "?") for r in records})
    model = QualityModel.fit(feature_matrix(records), labels, l2=args.l2,
                             info={"trained_on": datasets, "sessions": [str(p) for p in args.sessions]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    train_auc = roc_auc(labels.astype(bool), model.score_matrix(feature_matrix(records)))
    print(f"fitted on {len(records)} sessions ({int(labels.sum())} bad) from {', '.join(datasets)}; "
          f"training ROC-AUC {train_auc:.3f}; saved {args.out}")
    return 0


def _cmd_rank(args) -> int:
    from clickmask.quality.model import QualityModel, rank_sessions

    records = _read_all([args.sessions])
    ranked = rank_sessions(records, QualityModel.load(args.model))
    if args.top:
        ranked = ranked[:args.top]
    if args.json:
        for score, record in ranked:
            print(json.dumps({"session_id": record["session_id"], "score": round(score, 4),
                              "clicks": len(record["clicks"]), "meta": record.get("meta", {})}))
        return 0
    print(f"{'rank':>4}  {'P(bad)':>6}  {'clicks':>6}  session")
    for rank, (score, record) in enumerate(ranked, 1):
        meta = record.get("meta", {})
        hint = f"  (final IoU {meta['final_iou']:.3f})" if isinstance(meta.get("final_iou"), (int, float)) else ""
        print(f"{rank:>4}  {score:6.3f}  {len(record['clicks']):>6}  {record['session_id']}{hint}")
    return 0


def _cmd_evaluate(args) -> int:
    from clickmask.quality.model import QualityModel
    from clickmask.client.session_log import write_sessions

    model = QualityModel.load(args.model)
    if args.sessions:
        records = _read_all(args.sessions)
    else:
        records = _simulate_datasets(args, args.seed)
        if args.save_sessions:
            args.save_sessions.parent.mkdir(parents=True, exist_ok=True)
            write_sessions(args.save_sessions, records)
    trained_on = set(model.info.get("trained_on", ()))
    seen = trained_on & {r.get("meta", {}).get("dataset") for r in records}
    if seen:
        print(f"warning: the model was fitted on sessions from {', '.join(sorted(seen))}: "
              "this is not a held-out evaluation", file=sys.stderr)
    result = evaluate_records(records, model)
    result["model"] = str(args.model or "shipped")
    result["seed"] = args.seed
    per = "  ".join(f"{k} {v['roc_auc']:.3f}" for k, v in result["per_dataset"].items() if v["roc_auc"] is not None)
    print(f"{result['num_sessions']} sessions, {result['num_bad']} bad ({result['bad_fraction']:.0%}): "
          f"ROC-AUC {result['roc_auc']:.3f} ({per}); reviewing the worst 20% finds "
          f"{result['found_at']['0.20']:.0%} of the bad masks (random: 20%)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot_review_curve(result, args.plot)
    return 0


def _add_source(p: argparse.ArgumentParser, seed: int) -> None:
    p.add_argument("--per-object", type=int, default=1, help="sessions per object (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N objects of each dataset")
    p.add_argument("--seed", type=int, default=seed, help="annotator draws (default: %(default)s)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--url", default=None, help="Triton gRPC address, e.g. 127.0.0.1:8001")
    source.add_argument("--onnx", type=pathlib.Path, default=None, help="ONNX file (default: the served one)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads in-process (0: its default)")
    p.add_argument("--workers", type=int, default=1, help="concurrent sessions (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_quality_parser(sub) -> None:
    p = sub.add_parser("quality", help="annotation-quality prediction from session logs (review queue)",
                       description="Predict which annotations are bad (final IoU < 0.85) from their session logs, "
                                   "and measure it on simulated annotators. See docs/quality.md.")
    qsub = p.add_subparsers(dest="quality_command", metavar="ACTION")
    qsub.required = True

    r = qsub.add_parser("rank", help="print sessions worst first, with P(bad)")
    r.add_argument("sessions", type=pathlib.Path, help="session log (JSON lines, clickmask.session/1)")
    r.add_argument("--model", type=pathlib.Path, default=None, help="quality model JSON (default: the shipped one)")
    r.add_argument("--top", type=int, default=0, help="only the N worst")
    r.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    r.set_defaults(func=_cmd_rank)

    e = qsub.add_parser("evaluate", help="ROC-AUC and review curve on simulated sessions (or given logs)")
    inputs = e.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--dataset", type=pathlib.Path, nargs="+", help="dataset folders to simulate on")
    inputs.add_argument("--sessions", type=pathlib.Path, nargs="+", help="labelled session logs instead")
    e.add_argument("--model", type=pathlib.Path, default=None, help="quality model JSON (default: the shipped one)")
    e.add_argument("--json", type=pathlib.Path, default=None, help="write roc_auc, the review curve, ... here")
    e.add_argument("--plot", type=pathlib.Path, default=None, help="write the review-curve PNG here")
    e.add_argument("--save-sessions", type=pathlib.Path, default=None, help="keep the simulated sessions here")
    _add_source(e, seed=1)
    e.set_defaults(func=_cmd_evaluate)

    s = qsub.add_parser("simulate", help="write simulated annotation sessions (labelled) as JSON lines")
    s.add_argument("--dataset", type=pathlib.Path, nargs="+", required=True, help="dataset folders")
    s.add_argument("--out", type=pathlib.Path, required=True, help="session log to write")
    _add_source(s, seed=0)
    s.set_defaults(func=_cmd_simulate)

    t = qsub.add_parser("train", help="fit a quality model on labelled session logs")
    t.add_argument("sessions", type=pathlib.Path, nargs="+", help="session logs with meta.final_iou")
    t.add_argument("--out", type=pathlib.Path, required=True, help="model JSON to write")
    t.add_argument("--l2", type=float, default=1.0, help="ridge penalty (default: %(default)s)")
    t.add_argument("--allow-evaluation-sets", action="store_true", help=argparse.SUPPRESS)
    t.set_defaults(func=_cmd_train)

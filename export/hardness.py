"""Hard-object sampling: draw more often the training objects a checkpoint does badly on.

Before training, every training object is run through the standard protocol (the same
``Session`` and clicker as ``clickmask eval``, ONNX Runtime on the exported checkpoint) for
``hard_clicks`` clicks; its IoU after them is its score. Within each training set, a draw then
picks an object uniformly with probability ``1 - hard_mix``, and otherwise in proportion to
``1 - IoU`` (an object the model already segments at IoU 0.98 is rarely picked by that part;
one it gets at 0.3 is picked 35 times as often). The sets' own weights (``--set-weights``)
are unchanged.

The scores are cached in the run's folder (``hardness-<digest>.json``, keyed by the
checkpoint's bytes, S and the click count), so ``--resume`` does not score again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from clickmask.datasets import ObjectRef

log = logging.getLogger(__name__)

#: 1 - IoU never goes below this, so no object's hard share is exactly zero.
MIN_HARDNESS = 0.02


def _digest(checkpoint: Path, size: int, clicks: int) -> str:
    h = hashlib.sha256(Path(checkpoint).read_bytes())
    h.update(f"{size}:{clicks}".encode())
    return h.hexdigest()[:16]


def score_objects(checkpoint: Path | str, objects: Sequence[ObjectRef], size: int, clicks: int = 1,
                  threads: int = 2, cache_dir: Path | None = None, progress: bool = True) -> dict[str, float]:
    """IoU of every object after ``clicks`` protocol clicks with ``checkpoint`` at S = ``size``.

    Returns ``{object key: IoU}``. With ``cache_dir`` the result is read from / written to
    ``hardness-<digest>.json`` there (objects missing from the cache are scored and added).
    """
    from clickmask.evaluation import evaluate
    from clickmask.serving.local import LocalPredictor

    from .checkpoint import load_checkpoint
    from .onnx_export import export_onnx

    if clicks < 1:
        raise ValueError(f"hard_clicks must be at least 1, got {clicks}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--hard-from: no such checkpoint: {checkpoint}")
    cache = Path(cache_dir) / f"hardness-{_digest(checkpoint, size, clicks)}.json" if cache_dir else None
    known: dict[str, float] = {}
    if cache is not None and cache.is_file():
        known = json.loads(cache.read_text())["iou"]
    todo = [o for o in objects if o.key not in known]
    if todo:
        log.info("scoring %d training objects with %s (%d click%s each) for hard-object sampling",
                 len(todo), checkpoint, clicks, "" if clicks == 1 else "s")
        net, _ = load_checkpoint(checkpoint)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            export_onnx(net, onnx_path, size=size, check=False)
            predictor = LocalPredictor(onnx_path, threads=threads)
            # the network's own answer (fast passes), whatever CLICKMASK_PASSES says: the cache key
            # does not hold the passes
            runs = evaluate(predictor, todo, max_clicks=clicks, progress=progress, desc="hardness",
                            flip=False, refine=False)
        known.update({o.key: round(float(r.iou_at(clicks)), 5) for o, r in zip(todo, runs)})
        if cache is not None:
            cache.write_text(json.dumps({"checkpoint": str(checkpoint), "size": size, "clicks": clicks,
                                         "iou": known}) + "\n")
    return {o.key: known[o.key] for o in objects}


def within_set_weights(groups: Sequence[Sequence[ObjectRef]], ious: dict[str, float], mix: float) -> list[np.ndarray]:
    """Per-group draw probabilities: ``(1 - mix)`` uniform plus ``mix`` in proportion to ``1 - IoU``."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"hard_mix must be in [0, 1], got {mix}")
    out = []
    for group in groups:
        hardness = np.array([max(MIN_HARDNESS, 1.0 - ious[o.key]) for o in group], float)
        p = (1.0 - mix) / len(group) + mix * hardness / hardness.sum()
        out.append(p / p.sum())
    return out


def describe(groups: Sequence[Sequence[ObjectRef]], within: Sequence[np.ndarray], ious: dict[str, float]) -> str:
    """One line per set: objects, mean IoU, and how much more often the hardest tenth is drawn."""
    lines = []
    for group, p in zip(groups, within):
        iou = np.array([ious[o.key] for o in group])
        order = np.argsort(iou)
        tenth = max(1, len(group) // 10)
        lift = float(p[order[:tenth]].sum() / (tenth / len(group)))
        name = "+".join(sorted({o.dataset for o in group}))  # one group of every set without --set-weights
        lines.append(f"{name}: {len(group)} objects, mean IoU {iou.mean():.3f}, "
                     f"the hardest tenth drawn {lift:.1f}x as often as uniform")
    return "; ".join(lines)

"""Annotation-quality prediction from session logs: which masks should a reviewer see first?

A session log (:mod:`clickmask.client.session_log`) records how an annotation went: when each
click came, where it fell, how much the mask changed, how sure the model was. None of it needs
the ground truth. :func:`session_features` turns one log into a fixed feature vector and
:class:`QualityModel` (standardised features, L2-regularised logistic regression fitted with
Newton's method, numpy only) gives the probability that the final mask is bad (IoU < 0.85
with the truth). :func:`rank_sessions` sorts a review queue worst first.

The shipped model (``quality_model.json`` beside this module) was fitted on simulated
sessions over the training sets; see ``docs/quality.md`` for how it was made and measured.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clickmask.client.errors import InvalidInputError
from clickmask.client.session_log import check_session

__all__ = [
    "BAD_IOU",
    "FEATURES",
    "DEFAULT_MODEL_PATH",
    "QualityModel",
    "session_features",
    "feature_matrix",
    "is_bad",
    "roc_auc",
    "review_curve",
    "rank_sessions",
]

BAD_IOU = 0.85
"""A final mask with IoU below this against the truth is a bad annotation."""

DEFAULT_MODEL_PATH = pathlib.Path(__file__).with_name("quality_model.json")

FEATURES: tuple[str, ...] = (
    "log_clicks",               # log(1 + number of clicks)
    "single_click",             # 1 when the annotator stopped after one click
    "negative_fraction",        # share of negative clicks
    "log_mean_interval",        # log(1 + mean seconds between clicks)
    "interval_cv",              # std / mean of the seconds between clicks (hesitation)
    "log_max_interval_ratio",   # log(longest interval / median interval)
    "log_review_time",          # log(1 + seconds from the last click to closing)
    "has_review_time",          # closed_at was logged
    "log_final_change",         # log(1 + pixels changed by the last click / final area)
    "log_late_change",          # the same, largest over the last two clicks
    "final_iou_with_previous",  # stability of the last step (0 for one click)
    "mean_iou_with_previous",   # mean stability over clicks 2..n
    "log_uncertain_band",       # log(1 + uncertain pixels / (4 sqrt(area)))  ~ band width in px
    "final_confidence",         # mean |2p - 1| over the last network output
    "confidence_gain",          # final minus first mean confidence
    "log_components",           # log(1 + connected components of the final mask)
    "log_area_fraction",        # log(final area / image area)
    "area_vs_max",              # final area / largest area during the session
    "click_spread",             # std of click positions / sqrt(final area)
    "ignored_clicks",           # share of clicks the final mask contradicts
    "zoomed",                   # the last click was served from a zoom-in crop
)


def _log1p(value: float) -> float:
    return math.log1p(max(0.0, value))


def session_features(record: dict[str, Any]) -> np.ndarray:
    """The feature vector (in :data:`FEATURES` order) of one ``clickmask.session/1`` record."""
    check_session(record)
    clicks = record["clicks"]
    n = len(clicks)
    width, height = record["image_width"], record["image_height"]
    out = dict.fromkeys(FEATURES, 0.0)
    out["log_area_fraction"] = math.log(1.0 / (width * height))
    if n == 0:
        return np.array([out[name] for name in FEATURES], np.float64)
    last = clicks[-1]
    area = max(1, last["area"])
    times = np.array([c["timestamp"] for c in clicks], np.float64)
    intervals = np.diff(times) if n > 1 else np.zeros(0)
    intervals = np.maximum(intervals, 0.0)
    out["log_clicks"] = math.log1p(n)
    out["single_click"] = float(n == 1)
    out["negative_fraction"] = sum(not c["positive"] for c in clicks) / n
    if intervals.size:
        mean = float(intervals.mean())
        out["log_mean_interval"] = _log1p(mean)
        out["interval_cv"] = float(intervals.std() / mean) if mean > 0 else 0.0
        median = float(np.median(intervals))
        out["log_max_interval_ratio"] = math.log(max(1.0, float(intervals.max()) / median)) if median > 0 else 0.0
    if record.get("closed_at") is not None:
        out["has_review_time"] = 1.0
        out["log_review_time"] = _log1p(record["closed_at"] - last["timestamp"])
    changes = [c["changed_pixels"] / area for c in clicks]
    out["log_final_change"] = _log1p(changes[-1]) if n > 1 else 0.0
    out["log_late_change"] = _log1p(max(changes[-2:])) if n > 1 else 0.0
    out["final_iou_with_previous"] = float(last["iou_with_previous"]) if n > 1 else 0.0
    out["mean_iou_with_previous"] = float(np.mean([c["iou_with_previous"] for c in clicks[1:]])) if n > 1 else 0.0
    out["log_uncertain_band"] = _log1p(last["uncertain_pixels"] / (4.0 * math.sqrt(area)))
    out["final_confidence"] = float(last["mean_confidence"])
    out["confidence_gain"] = float(last["mean_confidence"] - clicks[0]["mean_confidence"])
    out["log_components"] = math.log1p(last["components"])
    out["log_area_fraction"] = math.log(max(1, last["area"]) / (width * height))
    out["area_vs_max"] = last["area"] / max(1, max(c["area"] for c in clicks))
    xy = np.array([[c["x"], c["y"]] for c in clicks], np.float64)
    out["click_spread"] = float(xy.std(axis=0).mean() / math.sqrt(area)) if n > 1 else 0.0
    contradicted = sum(c["positive"] != c["in_final_mask"] for c in clicks)
    out["ignored_clicks"] = contradicted / n
    out["zoomed"] = float(last["crop"] != [0, 0, width, height])
    return np.array([out[name] for name in FEATURES], np.float64)


def feature_matrix(records: Iterable[dict[str, Any]]) -> np.ndarray:
    rows = [session_features(r) for r in records]
    return np.vstack(rows) if rows else np.zeros((0, len(FEATURES)))


def is_bad(record: dict[str, Any], threshold: float = BAD_IOU) -> bool:
    """The label of a session whose ``meta.final_iou`` is known (simulated or reviewed)."""
    value = record.get("meta", {}).get("final_iou")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(
            f"session {record.get('session_id')!r} has no meta.final_iou: labels need the IoU of the final "
            "mask against the truth (simulated sessions carry it)")
    return float(value) < threshold


@dataclass
class QualityModel:
    """Logistic regression on standardised session features; ``score`` = P(bad mask)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    info: dict[str, Any]

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50,
            info: dict[str, Any] | None = None) -> "QualityModel":
        """Fit by Newton's method (IRLS) on ``x`` [N, len(FEATURES)] and labels ``y`` (1 = bad)."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURES) or y.shape != (x.shape[0],):
            raise InvalidInputError(f"expected x [N,{len(FEATURES)}] and y [N], got {x.shape} and {y.shape}")
        if len(np.unique(y)) < 2:
            raise InvalidInputError("training needs both good and bad sessions; simulate more or vary the annotators")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
        w = np.zeros(z.shape[1])
        penalty = np.full(z.shape[1], l2)
        penalty[0] = 0.0  # the intercept is not shrunk
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
            grad = z.T @ (p - y) + penalty * w
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(FEATURES, mean, scale, w[1:], float(w[0]), dict(info or {}, l2=l2, num_sessions=len(x),
                                                                    bad_fraction=float(y.mean())))

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(z @ self.coef + self.intercept, -30, 30)))

    def score(self, record: dict[str, Any]) -> float:
        """P(the final mask of this session is bad)."""
        return float(self.score_matrix(session_features(record)[None])[0])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "logistic-regression", "features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept,
                "bad_iou": BAD_IOU, "info": self.info}

    def save(self, path: str | os.PathLike[str]) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "QualityModel":
        """Load a saved model (default: the shipped one)."""
        path = pathlib.Path(path) if path is not None else DEFAULT_MODEL_PATH
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInputError(f"no quality model at {path}; train one with 'clickmask quality train'") from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path} is not a quality model JSON file ({exc.msg})") from None
        if not isinstance(data, dict) or tuple(data.get("features", ())) != FEATURES:
            raise InvalidInputError(f"{path} was fitted on other features than this version computes; "
                                    "refit it with 'clickmask quality train'")
        return cls(FEATURES, np.array(data["mean"]), np.array(data["scale"]), np.array(data["coef"]),
                   float(data["intercept"]), dict(data.get("info", {})))


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic; ties count one half)."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise InvalidInputError(f"labels and scores must be 1-D and of one length, got {y.shape} and {s.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError("ROC-AUC needs both bad and good sessions")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def review_curve(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of bad masks found against fraction of masks reviewed, highest score first.

    Returns ``(reviewed, found)``, both starting at 0 and ending at 1. A random order finds
    bad masks at ``found = reviewed`` on average.
    """
    y = np.asarray(labels, bool)
    s = np.asarray(scores, np.float64)
    if y.shape != s.shape or y.ndim != 1 or y.sum() == 0:
        raise InvalidInputError("the review curve needs 1-D labels and scores of one length, with bad sessions")
    order = np.argsort(-s, kind="mergesort")
    found = np.concatenate([[0.0], np.cumsum(y[order]) / y.sum()])
    reviewed = np.arange(len(y) + 1) / len(y)
    return reviewed, found


def rank_sessions(records: Sequence[dict[str, Any]], model: QualityModel | None = None
                  ) -> list[tuple[float, dict[str, Any]]]:
    """``(P(bad), record)`` pairs, worst first (stable for equal scores)."""
    model = model or QualityModel.load()
    scores = model.score_matrix(feature_matrix(records)) if records else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    return [(float(scores[i]), records[i]) for i in order]

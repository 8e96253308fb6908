"""The one protocol runner: a :class:`~clickmask.client.session.Session` driven by the standard
clicker, one click at a time, for at most ``max_clicks`` clicks or until IoU reaches a target.

Evaluation (``clickmask eval``), training validation and checkpoint selection, the latency
sweep, the Locust file, the annotator simulation and the parity checks all run objects through
:class:`ProtocolRun`, so they share the zoom-in, the threshold (the session's
``PROB_THRESHOLD``: a pixel is object when its probability is > 0.5), the clicker and the rule
that scores a run:

- NoC@t is the first click after which IoU ≥ t; a run that never gets there counts as
  ``max_clicks`` (RITM's rule, so published numbers compare);
- a run *fails* at t when no click reached t. Reaching t exactly at the last click is a success
  with NoC = ``max_clicks``, not a failure.

Callers that simulate people (think time, click noise, misplaced clicks) ask for the intended
click with :meth:`ProtocolRun.intended`, change it, and place it with :meth:`ProtocolRun.step`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .clicker import iou, next_click
from .clicks import Click

__all__ = ["THRESHOLDS", "RunResult", "ProtocolRun", "run_protocol", "summarize_runs"]

THRESHOLDS = (0.85, 0.90, 0.95)
DEFAULT_MAX_CLICKS = 20


@dataclass(frozen=True)
class RunResult:
    """One object's run: IoU and wall time after click k = 1..len(ious).

    ``ious`` holds ``max_clicks`` values unless the run was stopped early at a target IoU
    (``stop_iou``); a click the clicker had no error left for repeats the previous IoU and
    takes 0 s.
    """

    sample_id: str
    ious: tuple[float, ...]
    seconds: tuple[float, ...]
    clicks: tuple[tuple[float, float, bool], ...]
    max_clicks: int = DEFAULT_MAX_CLICKS

    def noc(self, threshold: float) -> int:
        """Clicks to reach ``threshold``; ``max_clicks`` when it is never reached."""
        reached = np.flatnonzero(np.asarray(self.ious) >= threshold)
        return int(reached[0]) + 1 if reached.size else self.max_clicks

    def failed(self, threshold: float) -> bool:
        """True when no click reached ``threshold``."""
        return not bool(np.any(np.asarray(self.ious) >= threshold))

    def iou_at(self, k: int) -> float:
        """IoU after click ``k`` (a run stopped early keeps its last IoU)."""
        if not self.ious:
            return 0.0
        return float(self.ious[min(k, len(self.ious)) - 1])


@dataclass
class ProtocolRun:
    """Step a session through the standard protocol for one object.

    Args:
        session: a fresh ``Session`` on the object's image (the client's zoom-in and previous
            mask are what every caller measures).
        gt, ignore: HxW bool object and ignore maps (see :mod:`clickmask.datasets`).
        max_clicks: the click budget (20 in the standard protocol).
        stop_iou: stop as soon as IoU reaches this (None: always ``max_clicks`` clicks, as
            evaluation does for its mIoU curve).
    """

    session: object
    gt: np.ndarray
    ignore: np.ndarray | None = None
    max_clicks: int = DEFAULT_MAX_CLICKS
    stop_iou: float | None = None
    sample_id: str = ""
    ious: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    placed: list[tuple[float, float, bool]] = field(default_factory=list)
    pred: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pred is None:
            self.pred = np.zeros(self.gt.shape, bool)

    @property
    def done(self) -> bool:
        if len(self.ious) >= self.max_clicks:
            return True
        return self.stop_iou is not None and bool(self.ious) and self.ious[-1] >= self.stop_iou

    @property
    def last_iou(self) -> float:
        return self.ious[-1] if self.ious else 0.0

    def intended(self) -> Click | None:
        """The standard clicker's next click for the current mask (None: no error left)."""
        return next_click(self.gt, self.pred, self.ignore, previous=self.session.clicks)

    def step(self, click: Click | None = None) -> float:
        """Place ``click`` (default: :meth:`intended`) and return the IoU after it."""
        if self.done:
            raise RuntimeError(f"the run is over after {len(self.ious)} clicks")
        if click is None:
            click = self.intended()
        if click is None:  # nothing left to correct: the mask stays as it is
            self.ious.append(self.ious[-1] if self.ious else 1.0)
            self.seconds.append(0.0)
            return self.ious[-1]
        start = time.perf_counter()
        mask = self.session.click(x=click.x, y=click.y, positive=click.positive)
        self.seconds.append(time.perf_counter() - start)
        self.pred = mask.array
        self.ious.append(iou(self.gt, self.pred, self.ignore))
        self.placed.append((float(click.x), float(click.y), bool(click.positive)))
        return self.ious[-1]

    def run(self) -> RunResult:
        """Step until done; the result."""
        while not self.done:
            self.step()
        return self.result()

    def result(self) -> RunResult:
        return RunResult(self.sample_id, tuple(self.ious), tuple(self.seconds), tuple(self.placed), self.max_clicks)


def run_protocol(session, gt: np.ndarray, ignore: np.ndarray | None = None, *, max_clicks: int = DEFAULT_MAX_CLICKS,
                 stop_iou: float | None = None, sample_id: str = "") -> RunResult:
    """Run one object to the end (see :class:`ProtocolRun`)."""
    return ProtocolRun(session, gt, ignore, max_clicks, stop_iou, sample_id).run()


def summarize_runs(results: Sequence[RunResult], dataset: str, max_clicks: int) -> dict:
    """The eval JSON of the contract: NoC@85/90/95, failures, mIoU curve, seconds per click."""
    clicked = [s for r in results for s in r.seconds if s > 0]
    summary: dict = {"dataset": dataset, "num_samples": len(results), "max_clicks": max_clicks}
    for threshold in THRESHOLDS:
        key = f"{round(threshold * 100)}"
        summary[f"noc{key}"] = round(float(np.mean([r.noc(threshold) for r in results])), 4) if results else 0.0
        summary[f"failures{key}"] = int(sum(r.failed(threshold) for r in results))
    curve = [float(np.mean([r.iou_at(k) for r in results])) if results else 0.0 for k in range(1, max_clicks + 1)]
    summary["miou_curve"] = [round(v, 5) for v in curve]
    summary["seconds_per_click"] = round(float(np.mean(clicked)), 5) if clicked else 0.0
    summary["seconds_per_click_p95"] = round(float(np.percentile(clicked, 95)), 5) if clicked else 0.0
    return summary

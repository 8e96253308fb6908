"""NoC evaluation with the standard automatic clicker (RITM's protocol, see DESIGN.md).

For every sample the clicker places up to ``max_clicks`` clicks, each at the interior point of
the largest error region of the previous prediction; the session (zoom-in, previous mask)
is the client library's own. The same code runs in-process on an ONNX file or against a
server, so both give identical numbers for the same model file.
"""
from __future__ import annotations

import csv
import json
import logging
import pathlib
from typing import Sequence

import numpy as np

from clickmask.client.protocol import THRESHOLDS, RunResult, summarize_runs
from clickmask.datasets import ObjectRef, list_objects
from clickmask.evaluation import _progress, evaluate, evaluate_sample, sample_name  # noqa: F401 - re-exported

LOGGER = logging.getLogger(__name__)
SampleResult = RunResult  # one object's run (kept name)
Sample = ObjectRef


def list_samples(dataset: pathlib.Path | str, limit: int | None = None, convention: str | None = None
                 ) -> list[ObjectRef]:
    """The objects of a dataset folder, sorted by id (:func:`clickmask.datasets.list_objects`)."""
    return list_objects(dataset, convention=convention, limit=limit)


def summarize(results: Sequence[RunResult], dataset: str, max_clicks: int) -> dict:
    """The JSON of the contract: NoC@85/90/95, failures, mIoU curve, seconds per click."""
    return summarize_runs(results, dataset, max_clicks)


def write_csv(results: Sequence[SampleResult], path: pathlib.Path, max_clicks: int) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "noc85", "noc90", "noc95", "iou_1", "iou_5", "iou_final", "mean_seconds"]
                        + [f"iou_{k}" for k in range(1, max_clicks + 1)])
        for r in results:
            clicked = [s for s in r.seconds if s > 0]
            writer.writerow([r.sample_id, *(r.noc(t) for t in THRESHOLDS),
                             f"{r.ious[0]:.4f}", f"{r.ious[min(4, len(r.ious) - 1)]:.4f}", f"{r.ious[-1]:.4f}",
                             f"{np.mean(clicked) if clicked else 0:.4f}"] + [f"{v:.4f}" for v in r.ious])


def plot_curves(summaries: Sequence[dict], path: pathlib.Path, title: str = "mean IoU after k clicks") -> None:
    import matplotlib  # noqa: PLC0415 - 'bench' extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for summary in summaries:
        curve = summary["miou_curve"]
        name = summary.get("label", summary["dataset"])
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, linestyle=summary.get("linestyle", "-"),
                label=f"{name} (NoC@90 {summary['noc90']:.2f})")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean IoU")
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, len(summaries[0]["miou_curve"]) + 1, 2 if len(summaries[0]["miou_curve"]) > 10 else 1))
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(summary: dict, path: pathlib.Path) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")

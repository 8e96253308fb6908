"""NoC evaluation with the standard automatic clicker (RITM's protocol, see DESIGN.md).

For every sample the clicker places up to ``max_clicks`` clicks, each at the interior point of
the largest error region of the previous prediction; the session (zoom-in, previous mask)
is the client library's own. The same code runs in-process on an ONNX file or against a
server, so both give identical numbers for the same model file.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import logging
import pathlib
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from clickmask.client.clicker import iou, load_gt, next_click
from clickmask.client.errors import InvalidInputError
from clickmask.imageio import read_mask, read_rgb

LOGGER = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
THRESHOLDS = (0.85, 0.90, 0.95)


@dataclasses.dataclass(frozen=True)
class Sample:
    sample_id: str
    image_path: pathlib.Path
    mask_path: pathlib.Path


@dataclasses.dataclass(frozen=True)
class SampleResult:
    sample_id: str
    ious: tuple[float, ...]          # IoU after click k = 1..max_clicks
    seconds: tuple[float, ...]       # wall time of each click (encode + infer + decode)
    clicks: tuple[tuple[float, float, bool], ...]

    def noc(self, threshold: float, max_clicks: int) -> int:
        """Clicks to reach ``threshold``; ``max_clicks`` when it is never reached (RITM)."""
        reached = np.flatnonzero(np.asarray(self.ious) >= threshold)
        return int(reached[0]) + 1 if reached.size else max_clicks


def list_samples(dataset: pathlib.Path, limit: int | None = None) -> list[Sample]:
    """Pairs ``images/<id>.<ext>`` / ``masks/<id>.png`` of a dataset folder, sorted by id."""
    dataset = pathlib.Path(dataset)
    images_dir, masks_dir = dataset / "images", dataset / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise InvalidInputError(f"{dataset} must hold images/<id>.<ext> and masks/<id>.png (see DESIGN.md)")
    samples = []
    for mask_path in sorted(masks_dir.glob("*.png")):
        sample_id = mask_path.stem
        image_path = next((p for p in (images_dir / f"{sample_id}{s}" for s in IMAGE_SUFFIXES) if p.is_file()), None)
        if image_path is None:  # Berkeley: '<id>a'/'<id>b' instances share the image '<id>'
            base = sample_id.rstrip("ab")
            image_path = next((p for p in (images_dir / f"{base}{s}" for s in IMAGE_SUFFIXES) if p.is_file()), None)
        if image_path is None:
            raise InvalidInputError(f"no image for mask {mask_path} in {images_dir}")
        samples.append(Sample(sample_id, image_path, mask_path))
    if not samples:
        raise InvalidInputError(f"{masks_dir} holds no PNG masks")
    return samples[:limit] if limit else samples


def evaluate_sample(predictor, sample: Sample, max_clicks: int = 20) -> SampleResult:
    """Run the automatic clicker for ``max_clicks`` clicks on one sample."""
    image = read_rgb(sample.image_path)
    gt, ignore = load_gt(read_mask(sample.mask_path))
    session = predictor.session(image)
    pred = np.zeros_like(gt)
    ious, seconds, clicks = [], [], []
    for _ in range(max_clicks):
        click = next_click(gt, pred, ignore, previous=session.clicks)
        if click is None:  # nothing left to correct: the mask stays as it is
            ious.append(ious[-1] if ious else 1.0)
            seconds.append(0.0)
            continue
        start = time.perf_counter()
        mask = session.click(x=click.x, y=click.y, positive=click.positive)
        seconds.append(time.perf_counter() - start)
        pred = mask.array
        ious.append(iou(gt, pred, ignore))
        clicks.append((float(click.x), float(click.y), bool(click.positive)))
    return SampleResult(sample.sample_id, tuple(ious), tuple(seconds), tuple(clicks))


def _progress(iterable, total: int, desc: str, enabled: bool) -> Iterator:
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional
    except ImportError:
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, disable=not enabled, unit="sample", dynamic_ncols=True))


def evaluate(predictor, samples: Sequence[Sample], max_clicks: int = 20, workers: int = 1,
             progress: bool = True, desc: str = "eval",
             on_result: Callable[[SampleResult], None] | None = None) -> list[SampleResult]:
    """Evaluate every sample (``workers`` sessions at a time); results keep the sample order."""
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(evaluate_sample, predictor, s, max_clicks) for s in samples]
        nocs: list[int] = []
        bar = _progress(concurrent.futures.as_completed(futures), len(futures), desc, progress)
        for future in bar:
            result = future.result()
            nocs.append(result.noc(0.9, max_clicks))
            if on_result:
                on_result(result)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(noc90=f"{np.mean(nocs):.2f}")
        results = [f.result() for f in futures]
    return results


def summarize(results: Sequence[SampleResult], dataset: str, max_clicks: int) -> dict:
    """The JSON of the contract: NoC@85/90/95, failures, mIoU curve, seconds per click."""
    ious = np.array([r.ious for r in results], dtype=np.float64)
    clicked = [s for r in results for s in r.seconds if s > 0]
    summary = {
        "dataset": dataset,
        "num_samples": len(results),
        "max_clicks": max_clicks,
    }
    for threshold in THRESHOLDS:
        nocs = [r.noc(threshold, max_clicks) for r in results]
        key = f"{round(threshold * 100)}"
        summary[f"noc{key}"] = round(float(np.mean(nocs)), 4)
        summary[f"failures{key}"] = int(sum(1 for r in results if not np.any(np.asarray(r.ious) >= threshold)))
    summary["miou_curve"] = [round(float(v), 5) for v in ious.mean(axis=0)]
    summary["seconds_per_click"] = round(float(np.mean(clicked)), 5) if clicked else 0.0
    summary["seconds_per_click_p95"] = round(float(np.percentile(clicked, 95)), 5) if clicked else 0.0
    return summary


def write_csv(results: Sequence[SampleResult], path: pathlib.Path, max_clicks: int) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "noc85", "noc90", "noc95", "iou_1", "iou_5", "iou_final", "mean_seconds"]
                        + [f"iou_{k}" for k in range(1, max_clicks + 1)])
        for r in results:
            clicked = [s for s in r.seconds if s > 0]
            writer.writerow([r.sample_id, *(r.noc(t, max_clicks) for t in THRESHOLDS),
                             f"{r.ious[0]:.4f}", f"{r.ious[min(4, len(r.ious) - 1)]:.4f}", f"{r.ious[-1]:.4f}",
                             f"{np.mean(clicked) if clicked else 0:.4f}"] + [f"{v:.4f}" for v in r.ious])


def plot_curves(summaries: Sequence[dict], path: pathlib.Path, title: str = "mean IoU after k clicks") -> None:
    import matplotlib  # noqa: PLC0415 - 'bench' extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for summary in summaries:
        curve = summary["miou_curve"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3,
                label=f"{summary['dataset']} (NoC@90 {summary['noc90']:.2f})")
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

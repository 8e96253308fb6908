"""Objects of a dataset through the one protocol runner: what eval, training validation and
checkpoint selection all call (:mod:`clickmask.client.protocol` + :mod:`clickmask.datasets`)."""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Iterator, Sequence

import numpy as np

from clickmask.client.protocol import RunResult, run_protocol
from clickmask.datasets import ObjectRef, load_object


def sample_name(obj: ObjectRef) -> str:
    return obj.sample_id if obj.instance_id is None else f"{obj.sample_id}#{obj.instance_id}"


def evaluate_sample(predictor, sample: ObjectRef, max_clicks: int = 20, stop_iou: float | None = None,
                    **session_options) -> RunResult:
    """Run the standard protocol on one object through ``predictor.session(image)``."""
    image, gt, ignore = load_object(sample)
    session = predictor.session(image, **session_options)
    return run_protocol(session, gt, ignore, max_clicks=max_clicks, stop_iou=stop_iou, sample_id=sample_name(sample))


def _progress(iterable, total: int, desc: str, enabled: bool) -> Iterator:
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional
    except ImportError:
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, disable=not enabled, unit="sample", dynamic_ncols=True))


def evaluate(predictor, samples: Sequence[ObjectRef], max_clicks: int = 20, workers: int = 1,
             progress: bool = True, desc: str = "eval",
             on_result: Callable[[RunResult], None] | None = None, stop_iou: float | None = None,
             **session_options) -> list[RunResult]:
    """Evaluate every sample (``workers`` sessions at a time); results keep the sample order."""
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(evaluate_sample, predictor, s, max_clicks, stop_iou, **session_options)
                   for s in samples]
        nocs: list[int] = []
        bar = _progress(concurrent.futures.as_completed(futures), len(futures), desc, progress)
        for future in bar:
            result = future.result()
            nocs.append(result.noc(0.9))
            if on_result:
                on_result(result)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(noc90=f"{np.mean(nocs):.2f}")
        results = [f.result() for f in futures]
    return results

"""An in-process stand-in for Triton's dynamic batcher and model instances, over :func:`run_batch`.

``clickmask bench gpu`` measures the served path with it: host (numpy) requests in, host
responses out, through exactly what the Python-backend adapter's ``execute`` runs (validation,
stacking, the predictor's copies and network, the split), under concurrent producers. What
it leaves out is Triton itself (gRPC, the shared memory between server and stub).

The batcher forms a batch when an instance is free: the first queued request, then whatever
arrives within ``queue_delay_s`` of it, up to ``max_batch`` inferences (a request never
splits). Instances are threads here, each calling ``run_batch`` on the shared predictor; in
Triton each Python-backend instance is a process with its own CUDA context.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .batching import InferFn, run_batch

#: An accurate click (flip + refine) makes 2.32 inferences a click on validation: a flip pair
#: (one request of batch 2) every click and a second pair on REFINE_SHARE of the clicks.
REFINE_SHARE = 0.16


@dataclasses.dataclass
class _Item:
    request: Mapping[str, np.ndarray]
    batch: int
    future: concurrent.futures.Future
    submitted: float


class DynamicBatcher:
    """``submit(request) -> Future`` of its ``mask_prob`` (or the RequestError/ModelFault)."""

    def __init__(self, infer: InferFn, size: int, *, max_batch: int, queue_delay_s: float, instances: int = 1):
        if max_batch < 1 or instances < 1 or queue_delay_s < 0:
            raise ValueError(f"max_batch ({max_batch}) and instances ({instances}) must be >= 1 and the queue "
                             f"delay ({queue_delay_s}) >= 0")
        self.infer, self.size, self.max_batch = infer, size, max_batch
        self.queue_delay_s, self.instances = queue_delay_s, instances
        self.batches: list[int] = []  # inferences per executed batch
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._free = threading.Semaphore(instances)
        self._work: queue.Queue[list[_Item] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._form, daemon=True, name="batcher")]
        self._threads += [threading.Thread(target=self._execute, daemon=True, name=f"instance-{i}")
                          for i in range(instances)]
        self._held: _Item | None = None
        for thread in self._threads:
            thread.start()

    def submit(self, request: Mapping[str, np.ndarray]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        batch = int(np.shape(request["image"])[0]) if request.get("image") is not None else 1
        self._queue.put(_Item(request, batch, future, time.perf_counter()))
        return future

    def close(self) -> None:
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10.0)

    def __enter__(self) -> "DynamicBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _form(self) -> None:
        closing = False
        while not closing:
            self._free.acquire()  # Triton forms the next batch when an instance can take it
            first = self._held if self._held is not None else self._queue.get()
            self._held = None
            if first is None:
                break
            items, total = [first], first.batch
            deadline = time.perf_counter() + self.queue_delay_s
            while total < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                if total + item.batch > self.max_batch:
                    self._held = item  # it opens the next batch
                    break
                items.append(item)
                total += item.batch
            self._work.put(items)
        for _ in range(self.instances):
            self._work.put(None)

    def _execute(self) -> None:
        while True:
            items = self._work.get()
            if items is None:
                return
            try:
                results = run_batch([item.request for item in items], self.infer, self.size)
                self.batches.append(sum(item.batch for item in items))
                for item, result in zip(items, results):
                    item.future.set_result(result)
            except BaseException as exc:  # noqa: BLE001 - never leave a producer waiting
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                self._free.release()


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p95": round(float(np.percentile(array, 95)), 3),
            "p99": round(float(np.percentile(array, 99)), 3), "max": round(float(array.max()), 3)}


def served_load(infer: InferFn, size: int, requests: Sequence[Mapping[str, np.ndarray]], *, producers: int,
                seconds: float, ramp_s: float = 1.0, max_batch: int = 128, queue_delay_s: float = 0.001,
                instances: int = 1, refine_share: float = REFINE_SHARE,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """``producers`` closed-loop annotators clicking for ``ramp_s + seconds``; figures from the last ``seconds``.

    Each click sends one request from ``requests`` (a flip pair: batch 2) and waits for it; a
    ``refine_share`` of the clicks then send a second one (the refine pass). Returns inferences
    and clicks a second, per-request and per-click latency percentiles (ms), the mean batch.
    """
    if producers < 1 or seconds <= 0 or not requests:
        raise ValueError("served_load needs producers >= 1, seconds > 0 and at least one request")
    per_request = [int(np.shape(r["image"])[0]) for r in requests]
    stop = threading.Event()
    window: list[float] = []
    lock = threading.Lock()
    records: list[tuple[float, float, int]] = []  # (done, latency s, inferences) per request
    clicks: list[tuple[float, float]] = []  # (done, latency s) per click
    errors: list[str] = []

    def annotator(index: int) -> None:
        k = 0
        while not stop.is_set():
            started = clock()
            passes = 1 + (int((k + 1 + index) * refine_share) > int((k + index) * refine_share))
            for p in range(passes):
                choice = (index * 7 + k * 3 + p) % len(requests)
                t0 = clock()
                result = batcher.submit(requests[choice]).result()
                done = clock()
                if isinstance(result, Exception):
                    with lock:
                        errors.append(str(result)[:200])
                    return
                with lock:
                    records.append((done, done - t0, per_request[choice]))
            done = clock()
            with lock:
                clicks.append((done, done - started))
            k += 1

    with DynamicBatcher(infer, size, max_batch=max_batch, queue_delay_s=queue_delay_s,
                        instances=instances) as batcher:
        threads = [threading.Thread(target=annotator, args=(i,), daemon=True) for i in range(producers)]
        begin = clock()
        for thread in threads:
            thread.start()
        time.sleep(ramp_s)
        window.append(clock())
        batches_before = len(batcher.batches)
        time.sleep(seconds)
        window.append(clock())
        stop.set()
        for thread in threads:
            thread.join(timeout=30.0)
        batches = batcher.batches[batches_before:]
    start, end = window
    span = end - start
    inside = [(lat, n) for done, lat, n in records if start <= done <= end]
    click_lat = [lat for done, lat in clicks if start <= done <= end]
    inferences = sum(n for _, n in inside)
    return {"producers": producers, "instances": instances, "max_batch": max_batch,
            "queue_delay_us": int(round(queue_delay_s * 1e6)), "seconds": round(span, 2),
            "ramp_s": ramp_s, "wall_s": round(clock() - begin, 2),
            "requests": len(inside), "inferences": inferences, "clicks": len(click_lat),
            "inferences_per_s": round(inferences / span, 1), "clicks_per_s": round(len(click_lat) / span, 1),
            "inferences_per_click": round(inferences / len(click_lat), 3) if click_lat else None,
            "request_ms": _percentiles([lat * 1000 for lat, _ in inside]),
            "click_ms": _percentiles([lat * 1000 for lat in click_lat]),
            "mean_batch": round(float(np.mean(batches)), 2) if batches else None, "batches": len(batches),
            "errors": errors[:5]}

"""Latency and throughput sweep: closed-loop annotators against real tritonservers.

One run compares, side by side on the same machine and the same ONNX file:

* the server with Triton's dynamic batcher (no queue policy) at each concurrency level,
* the same server without it (the shipped config since session 13; the batching gain),
* the ONNX file called in-process, one session at a time (the serving overhead).

Each simulated annotator opens a session on a real image and clicks where the standard
clicker says until IoU >= 0.9 or ``--clicks-per-object`` clicks, then moves to the next
image. A click's latency is what the caller of ``Session.click`` waits: encoding, gRPC,
queueing, inference and decoding. The average batch Triton formed is the delta of its
inference count over its execution count.

    python -m clickmask.benchmarks.latency --dataset ../shared/datasets/GrabCut \
        --concurrency 1 2 4 8 16 32 --seconds 15 --out benchmarks/results/latency
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import platform
import shutil
import tempfile
import threading
import time

import numpy as np

from clickmask.client.protocol import ProtocolRun
from clickmask.datasets import list_objects, load_object
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer
from clickmask.machine import describe as describe_cpu

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass
class LevelResult:
    mode: str
    concurrency: int
    clicks: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    clicks_per_s: float
    avg_batch: float | None
    errors: int


def load_workload(dataset: pathlib.Path, limit: int):
    """Images and their ground truth, read once so disk time stays out of the timings."""
    items = []
    for obj in list_objects(dataset, limit=limit):
        items.append(load_object(obj))
    return items


def _annotator(predictor, workload, start_index, stop_at, clicks_per_object, latencies, errors, lock):
    index = start_index
    while time.monotonic() < stop_at:
        image, gt, ignore = workload[index % len(workload)]
        index += 1
        run = ProtocolRun(predictor.session(image), gt, ignore, max_clicks=clicks_per_object, stop_iou=0.9)
        while not run.done and time.monotonic() < stop_at:
            click = run.intended()
            if click is None:
                break
            try:
                run.step(click)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                with lock:
                    errors.append(repr(exc))
                break
            with lock:
                latencies.append(run.seconds[-1])


def _inference_stats(url: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    raw = grpcclient.InferenceServerClient(url)
    try:
        stats = raw.get_inference_statistics("clickmask").model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)
    finally:
        raw.close()


def run_level(mode, make_predictor, workload, concurrency, seconds, clicks_per_object, url=None) -> LevelResult:
    predictors = [make_predictor() for _ in range(concurrency)]
    before = _inference_stats(url) if url else None
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    started = time.perf_counter()
    threads = [threading.Thread(target=_annotator, args=(p, workload, i * 7, stop_at, clicks_per_object,
                                                         latencies, errors, lock)) for i, p in enumerate(predictors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for predictor in predictors:
        getattr(predictor, "close", lambda: None)()
    avg_batch = None
    if url:
        after = _inference_stats(url)
        executions = after[1] - before[1]
        avg_batch = (after[0] - before[0]) / executions if executions else None
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return LevelResult(mode, concurrency, len(latencies), round(wall, 2), *(round(float(np.percentile(ms, q)), 1)
                       for q in (50, 95, 99)), round(len(latencies) / wall, 2),
                       None if avg_batch is None else round(avg_batch, 2), len(errors))


def repository_with_batching(source: pathlib.Path, dynamic_batching: bool) -> pathlib.Path:
    """A copy of the model repository whose embedded config has Triton's dynamic batcher (no
    queue policy) or not (the shipped default since session 13)."""
    target = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-batch-" if dynamic_batching else "clickmask-nobatch-"))
    shutil.copytree(source / "clickmask", target / "clickmask", ignore=shutil.ignore_patterns("__pycache__"))
    from clickmask.export.model_config import Contract, onnx_input_size, python_config  # noqa: PLC0415

    size = onnx_input_size(target / "clickmask" / "1" / "model.onnx")
    (target / "clickmask" / "config.pbtxt").write_text(python_config(Contract(size),
                                                                     dynamic_batching=dynamic_batching))
    return target


def repository_without_batching(source: pathlib.Path) -> pathlib.Path:
    """A copy of the model repository whose config has no dynamic_batching block."""
    return repository_with_batching(source, False)


def _server_config(repository: pathlib.Path, base_port: int) -> ServerConfig:
    return ServerConfig(model_repository=repository, grpc_port=base_port, http_port=base_port + 1,
                        metrics_port=base_port + 2, startup_timeout_s=300)


def sweep(args) -> list[LevelResult]:
    from clickmask.client import Client  # noqa: PLC0415
    from clickmask.serving.local import LocalPredictor  # noqa: PLC0415

    workload = load_workload(args.dataset, args.images)
    results: list[LevelResult] = []
    onnx = args.model_repository / "clickmask" / "1" / "model.onnx"
    local = LocalPredictor(onnx, threads=args.threads)
    if args.warmup_seconds > 0:
        run_level("in-process", lambda: local, workload, 1, args.warmup_seconds, args.clicks_per_object)
    results.append(run_level("in-process", lambda: local, workload, 1, args.seconds, args.clicks_per_object))
    _report(results[-1])
    modes = [("triton-batching", repository_with_batching(args.model_repository, True))]
    if not args.skip_no_batching:
        modes.append(("triton-no-batching", repository_without_batching(args.model_repository)))
    for mode, repository in modes:
        config = _server_config(repository, args.base_port)
        with TritonServer(config):
            url = config.grpc_url
            if args.warmup_seconds > 0:  # first runs of a fresh ONNX Runtime session are slow
                run_level(mode, lambda: Client(url, timeout_s=60), workload, 2, args.warmup_seconds,
                          args.clicks_per_object, url=url)
            for concurrency in args.concurrency:
                results.append(run_level(mode, lambda: Client(url, timeout_s=60), workload, concurrency,
                                         args.seconds, args.clicks_per_object, url=url))
                _report(results[-1])
    return results


HEADER = f"{'mode':<20}{'conc':>5}{'clicks':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'clicks/s':>10}{'batch':>7}{'err':>5}"


def _row(r: LevelResult) -> str:
    batch = "-" if r.avg_batch is None else f"{r.avg_batch:.2f}"
    return (f"{r.mode:<20}{r.concurrency:>5}{r.clicks:>8}{r.p50_ms:>9.1f}{r.p95_ms:>9.1f}{r.p99_ms:>9.1f}"
            f"{r.clicks_per_s:>10.2f}{batch:>7}{r.errors:>5}")


def _report(result: LevelResult) -> None:
    LOGGER.info("%s", _row(result))


def comparison_lines(results: list[LevelResult]) -> list[str]:
    """Ratios that survive a noisy shared machine: overhead at c=1, batching gain per level."""
    lines = []
    local = next((r for r in results if r.mode == "in-process"), None)
    by = {(r.mode, r.concurrency): r for r in results}
    served = by.get(("triton-batching", 1))
    if local and served:
        lines.append(f"serving overhead at concurrency 1: p50 {served.p50_ms / local.p50_ms:.2f}x in-process "
                     f"({served.p50_ms:.1f} vs {local.p50_ms:.1f} ms)")
    for (mode, concurrency), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        other = by.get(("triton-no-batching", concurrency))
        if mode == "triton-batching" and other:
            lines.append(f"concurrency {concurrency:>2}: batching gives {r.clicks_per_s / other.clicks_per_s:.2f}x "
                         f"clicks/s and p95 {r.p95_ms / other.p95_ms:.2f}x of no-batching")
    return lines


def plot(results: list[LevelResult], path: pathlib.Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for mode in ("triton-batching", "triton-no-batching"):
        rows = [r for r in results if r.mode == mode]
        if not rows:
            continue
        xs = [r.concurrency for r in rows]
        left.plot(xs, [r.p95_ms for r in rows], marker="o", label=f"{mode} p95")
        left.plot(xs, [r.p50_ms for r in rows], marker=".", linestyle=":", label=f"{mode} p50")
        right.plot(xs, [r.clicks_per_s for r in rows], marker="o", label=mode)
    left.axhline(300, color="red", linestyle="--", linewidth=0.8, label="300 ms target")
    for ax, ylabel in ((left, "latency per click (ms)"), (right, "clicks per second")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent annotators (closed loop, no think time)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("clickmask on Triton (CPU): latency and throughput")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clickmask bench latency", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=pathlib.Path, default=pathlib.Path("../shared/datasets/GrabCut"))
    p.add_argument("--images", type=int, default=20, help="images in the rotation (default: %(default)s)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--seconds", type=float, default=15.0, help="per level (default: %(default)s)")
    p.add_argument("--clicks-per-object", type=int, default=10)
    p.add_argument("--warmup-seconds", type=float, default=3.0, help="unmeasured warm-up per server")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads in-process (server: config)")
    p.add_argument("--model-repository", type=pathlib.Path, default=DEFAULT_MODEL_REPOSITORY)
    p.add_argument("--base-port", type=int, default=18101, help="grpc, http, metrics = base, +1, +2")
    p.add_argument("--skip-no-batching", action="store_true", help="skip the server without dynamic batching")
    p.add_argument("--out", type=pathlib.Path, default=None, help="write <out>.json, <out>.md and <out>.png")
    p.set_defaults(func=run)


def run(args) -> int:
    results = sweep(args)
    lines = [HEADER] + [_row(r) for r in results] + [""] + comparison_lines(results)
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = f"{describe_cpu()}, Python {platform.python_version()}"
        meta = {"machine": machine, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "args": {k: str(v) for k, v in vars(args).items() if k != "func"}}
        args.out.with_suffix(".json").write_text(json.dumps(
            {"meta": meta, "results": [dataclasses.asdict(r) for r in results]}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("```\n" + "\n".join(lines) + "\n```\n\n" + f"machine: {machine}\n")
        plot(results, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    raise SystemExit(run(build_parser().parse_args()))

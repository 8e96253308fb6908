"""Serving overhead: one request to the embedded server against the same ONNX file in-process.

For each setting (ONNX Runtime's thread spinning on and off; Triton's batching delay 2 ms and 0), one run:

* starts the embedded tritonserver on a copy of the model repository whose config carries the
  setting, and opens the same ONNX file in-process with the same threads and setting;
* builds one real request (the first GrabCut object, its first standard click, full view) of each
  ``--requests`` kind: ``single`` (that view, batch 1) and ``flip-pair`` (the view and its mirror,
  batch 2: what a click of the default session sends on the raw and shared-memory paths);
* sends it with the client of each ``--wires`` (``shm``: the tensors through Triton's system
  shared memory, what ``wire="auto"`` does on the server's machine with the admin key;
  ``raw``: the tensors in the gRPC message, ``wire="auto"`` without the key), one after the other
  against the same server, each measured on its own against the in-process side as follows;
* **alternated**: ``--pairs`` pairs, the order flipped every pair (server then in-process,
  in-process then server, ...: ABBA), so neither side always runs right after the other;
* **blocked**: ``--pairs`` server requests in a row, then as many in-process runs in a row.

It prints the median and p90 of each side, and the ratio server / in-process of the medians,
alternated and blocked. The two differ when the side that is idle still holds a core: ONNX
Runtime's worker threads spin (busy-wait) after a run before they sleep, so on two cores an
in-process session that has just run takes CPU away from the server's run that follows.

    python -m clickmask.benchmarks.serving_overhead --pairs 150 --out benchmarks/results/serving-overhead.md
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np

from clickmask.machine import describe as describe_cpu

#: name -> ``python_config`` keywords of the served side; the in-process side takes the same spinning.
_BATCHER_POLICY = {"dynamic_batching": True, "max_queue_size": 32, "queue_timeout_us": 2_000_000}
SETTINGS = {
    # Until session 12 the embedded default had Triton's dynamic batcher with a queue policy
    # (32 requests, 2 s); these four keep it, as measured then.
    "spinning": {"allow_spinning": True, **_BATCHER_POLICY},
    "no-spinning": {"allow_spinning": False, **_BATCHER_POLICY},
    "no-spinning-no-delay": {"allow_spinning": False, "queue_delay_us": 0, **_BATCHER_POLICY},
    # Two instances: a request that arrives while one instance is busy finds the other free
    # (see STALL_MS).
    "two-instances": {"allow_spinning": False, "queue_delay_us": 0, "instance_count": 2, **_BATCHER_POLICY},
    # The batcher without a queue policy: Triton then lets it prefetch the next batch while the
    # instance runs (support_prefetching in Triton core), which any queue policy turns off.
    "batcher-no-policy": {"allow_spinning": False, "queue_delay_us": 0, "dynamic_batching": True},
    # Triton's dynamic batcher off: each request runs alone (the shipped default since session 13;
    # since session 14 with the shipped two instances, since session 15 the first one preferred).
    "no-batching": {"allow_spinning": False, "dynamic_batching": False},
    # The same with one model instance: consecutive requests meet the same process (and its
    # warm caches) instead of alternating between two.
    "one-instance": {"allow_spinning": False, "dynamic_batching": False, "instance_count": 1},
    # Session 14's shipped layout: two instances, no preference, Triton's rate limiter off (see
    # SERVER_OPTIONS): lone requests alternate between the two stub processes. Since session 15
    # "no-batching" prefers the first instance.
    "session14": {"allow_spinning": False, "dynamic_batching": False, "prefer_first_instance": False},
}

#: ``ServerConfig`` fields a setting needs besides its model config.
SERVER_OPTIONS = {"session14": {"rate_limit": "off"}}

#: A served request slower than this counts as a stall. With a queue policy (which turns off
#: Triton's prefetching) the dynamic batcher sleeps up to 500 ms; a request that arrives while
#: the only instance is busy (running, or finishing the previous execute after the Python backend
#: sent its response) finds no free slot and wakes nobody, so it waits for the next arrival or the
#: end of that sleep. A client that turns round fast hits this window often; medians hide it,
#: this count shows it.
STALL_MS = 250.0


@dataclasses.dataclass
class Side:
    times_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90(self) -> float:
        return float(np.percentile(self.times_ms, 90))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times_ms)

    @property
    def stalls(self) -> int:
        return sum(t > STALL_MS for t in self.times_ms)


#: Client ``wire`` modes the server side can take (see the module docstring).
WIRES = ("shm", "raw")


@dataclasses.dataclass
class SettingResult:
    setting: str
    threads: int
    wire: str
    request: str
    alternated_server: Side
    alternated_local: Side
    blocked_server: Side
    blocked_local: Side
    #: Triton's own account of the blocked server requests, mean ms a request: ``request`` (from
    #: arrival to response), ``queue``, ``input``, ``infer`` (the Python backend's execute: our
    #: adapter, validation and the ONNX Runtime run), ``output``.
    triton_ms: dict = dataclasses.field(default_factory=dict)

    def ratios(self) -> tuple[float, float]:
        return (self.alternated_server.median / self.alternated_local.median,
                self.blocked_server.median / self.blocked_local.median)


#: What one measured request holds: ``single``, the contract tensors of one view (batch 1);
#: ``flip-pair``, that view and its mirror as one batch of 2, the request a click of the default
#: session sends on the raw and shared-memory paths (its flip pass; ``Client.infer_flip``).
REQUESTS = ("single", "flip-pair")


def flip_pair(dataset: pathlib.Path, size: int) -> list[dict[str, np.ndarray]]:
    """The first click's view and its mirror over the content region, as the session pairs them."""
    from clickmask.client.compact import mirror  # noqa: PLC0415

    inputs, (rows, cols) = first_request(dataset, size, with_content=True)
    return [inputs, {name: mirror(np.asarray(array), rows, cols) for name, array in inputs.items()}]


def first_request(dataset: pathlib.Path, size: int, with_content: bool = False):
    """The contract tensors of the first object's first standard click (full view); with
    ``with_content`` also the (rows, cols) of the image inside the S x S input."""
    from clickmask.client.clicker import next_click  # noqa: PLC0415
    from clickmask.client.encoding import CropTransform, encode_inputs  # noqa: PLC0415
    from clickmask.datasets import list_objects, load_object  # noqa: PLC0415

    image, gt, ignore = load_object(list_objects(dataset, limit=1)[0])
    click = next_click(gt, np.zeros_like(gt), ignore)
    height, width = image.shape[:2]
    transform = CropTransform(0, 0, width, height, size=size)
    inputs = encode_inputs(image, [click], None, transform)
    return (inputs, transform.content_hw) if with_content else inputs


def repository_with(source: pathlib.Path, threads: int, setting: dict) -> pathlib.Path:
    """A copy of the model repository whose config has these ONNX Runtime settings."""
    from clickmask.export.model_config import Contract, onnx_input_size, python_config  # noqa: PLC0415

    target = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-overhead-"))
    shutil.copytree(source / "clickmask", target / "clickmask", ignore=shutil.ignore_patterns("__pycache__"))
    size = onnx_input_size(target / "clickmask" / "1" / "model.onnx")
    (target / "clickmask" / "config.pbtxt").write_text(
        python_config(Contract(size), intra_op_threads=threads, **setting))
    return target


STAT_FIELDS = {"request": "success", "queue": "queue", "input": "compute_input", "infer": "compute_infer",
               "output": "compute_output"}


def triton_stats(url: str) -> dict[str, tuple[int, int]]:
    """Triton's cumulative (count, ns) per stage for the clickmask model."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    raw = grpcclient.InferenceServerClient(url)
    try:
        stats = raw.get_inference_statistics("clickmask").model_stats[0].inference_stats
        return {name: (int(getattr(stats, field).count), int(getattr(stats, field).ns))
                for name, field in STAT_FIELDS.items()}
    finally:
        raw.close()


def stats_delta(before: dict, after: dict) -> dict[str, float]:
    """Mean ms a request per stage between two ``triton_stats`` readings."""
    out = {}
    for name in STAT_FIELDS:
        count = after[name][0] - before[name][0]
        out[name] = (after[name][1] - before[name][1]) / count / 1e6 if count else float("nan")
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(server_call, local_call, pairs: int, warmup: int = 5, stats=None) -> tuple[Side, Side, Side, Side, dict]:
    """(alternated server, alternated local, blocked server, blocked local) times in ms, and
    Triton's per-stage means over the blocked server requests (``stats``: a ``triton_stats``
    reader; None: none)."""
    for _ in range(warmup):
        server_call()
        local_call()
    alt_server, alt_local = [], []
    for i in range(pairs):
        if i % 2 == 0:
            alt_server.append(_timed(server_call))
            alt_local.append(_timed(local_call))
        else:
            alt_local.append(_timed(local_call))
            alt_server.append(_timed(server_call))
    time.sleep(0.5)
    before = stats() if stats else None
    blocked_server = [_timed(server_call) for _ in range(pairs)]
    triton = stats_delta(before, stats()) if stats else {}
    time.sleep(0.5)
    blocked_local = [_timed(local_call) for _ in range(pairs)]
    return Side(alt_server), Side(alt_local), Side(blocked_server), Side(blocked_local), triton


def run_setting(name: str, repository: pathlib.Path, requests: dict[str, list[dict[str, np.ndarray]]], threads: int,
                pairs: int, base_port: int, wires: tuple[str, ...] = WIRES) -> list[SettingResult]:
    """``requests``: kind (``REQUESTS``) -> the views one request carries (see ``flip_pair``)."""
    from clickmask.client import Client  # noqa: PLC0415
    from clickmask.serving import OnnxPredictor  # noqa: PLC0415
    from clickmask.serving.server import ServerConfig, TritonServer  # noqa: PLC0415

    setting = SETTINGS[name]
    repo = repository_with(repository, threads, setting)
    local = OnnxPredictor(repo / "clickmask" / "1" / "model.onnx", threads=threads,
                          spinning=setting["allow_spinning"])
    config = ServerConfig(model_repository=repo, grpc_port=base_port, http_port=base_port + 1,
                          metrics_port=base_port + 2, startup_timeout_s=300, **SERVER_OPTIONS.get(name, {}))
    results = []
    try:
        with TritonServer(config) as server:
            for wire in wires:
                with Client(config.grpc_url, wire=wire, headers=server.admin_headers) as client:
                    for kind, views in requests.items():
                        batch = {key: np.stack([view[key] for view in views]) for key in views[0]}
                        out_server = client.infer_batch(views)
                        out_local = local.infer(batch)
                        if not np.array_equal(np.asarray(out_server).reshape(out_local.shape), out_local):
                            raise RuntimeError(f"the server ({wire}) and the in-process session disagree on the "
                                               f"same {kind} request")
                        if wire == "shm" and not client.shared_memory:
                            raise RuntimeError("the server refused the shared-memory region")
                        sides = measure(lambda: client.infer_batch(views), lambda: local.infer(batch), pairs,
                                        stats=lambda: triton_stats(config.grpc_url))
                        results.append(SettingResult(name, threads, wire, kind, *sides))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return results


def triton_table(results: list[SettingResult]) -> str:
    """Where a blocked server request's time goes, by Triton's statistics: means, since Triton
    keeps sums (a stall shows in the queue column)."""
    lines = ["| setting | wire | request | client mean ms | Triton mean ms: request | queue | input | infer (adapter + ORT) | output | "
             "outside Triton (gRPC, client) | infer - in-process mean |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.triton_ms
        if not t:
            continue
        lines.append(f"| {r.setting} | {r.wire} | {r.request} | {r.blocked_server.mean:.1f} | {t['request']:.1f} | {t['queue']:.2f} | "
                     f"{t['input']:.2f} | {t['infer']:.1f} | {t['output']:.2f} | "
                     f"{r.blocked_server.mean - t['request']:.1f} | {t['infer'] - r.blocked_local.mean:+.1f} |")
    return "\n".join(lines)


def table(results: list[SettingResult]) -> str:
    lines = [f"| setting | wire | request | threads | order | server median ms | in-process median ms | server p90 ms | "
             f"in-process p90 ms | server / in-process | server requests > {STALL_MS:.0f} ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for order, server, local in (("alternated (ABBA)", r.alternated_server, r.alternated_local),
                                     ("blocked", r.blocked_server, r.blocked_local)):
            lines.append(f"| {r.setting} | {r.wire} | {r.request} | {r.threads} | {order} | {server.median:.1f} | {local.median:.1f} | "
                         f"{server.p90:.1f} | {local.p90:.1f} | **{server.median / local.median:.2f}x** | "
                         f"{server.stalls} of {len(server.times_ms)} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from clickmask.datasets import default_root  # noqa: PLC0415
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY  # noqa: PLC0415

    p.add_argument("--model-repository", type=pathlib.Path, default=DEFAULT_MODEL_REPOSITORY,
                   help="repository whose clickmask model is copied (default: the embedded one)")
    p.add_argument("--dataset", type=pathlib.Path, default=default_root() / "GrabCut",
                   help="the request is this set's first object (default: %(default)s)")
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS),
                   help="ONNX Runtime settings to compare (default: all)")
    p.add_argument("--wires", nargs="+", choices=WIRES, default=list(WIRES),
                   help="client paths to the server, each measured against the in-process side (default: all)")
    p.add_argument("--requests", nargs="+", choices=REQUESTS, default=["single"],
                   help="what one request carries: single (one view, batch 1) or flip-pair (the view and its "
                        "mirror, batch 2: a default click's request on the raw and shm paths); default: %(default)s")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads on both sides (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=150, help="requests a side and order (default: %(default)s)")
    p.add_argument("--base-port", type=int, default=8301, help="gRPC port; HTTP and metrics follow")
    p.add_argument("--out", type=pathlib.Path, default=None, help="also write the table (.md) and JSON beside it")


def run(args: argparse.Namespace) -> int:
    if args.pairs < 10:
        raise SystemExit("--pairs must be at least 10 for a median and p90")
    if not args.dataset.is_dir():
        raise SystemExit(f"--dataset {args.dataset} is not a folder; point it at GrabCut (images/ and masks/)")
    from clickmask.export.model_config import onnx_input_size  # noqa: PLC0415

    size = onnx_input_size(args.model_repository / "clickmask" / "1" / "model.onnx")
    requests = {"single": [first_request(args.dataset, size)], "flip-pair": flip_pair(args.dataset, size)}
    requests = {kind: requests[kind] for kind in args.requests}
    header = (f"# Serving overhead: server vs in-process, same ONNX file and request\n\n"
              f"CPU: {describe_cpu()}; {platform.python_version()}; {args.pairs} requests a side and order; "
              f"S={size}.\n")
    print(header, flush=True)
    results = []
    for i, name in enumerate(args.settings):
        print(f"setting {name}: starting the server ...", flush=True)
        done = run_setting(name, args.model_repository, requests, args.threads, args.pairs,
                           args.base_port + 10 * i, tuple(args.wires))
        results += done
        print(table(done), flush=True)
    text = header + "\n" + table(results) + "\n\nWhere the blocked server requests' time goes (Triton's statistics):\n\n" \
        + triton_table(results) + "\n"
    print("\n" + table(results) + "\n\n" + triton_table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m clickmask.benchmarks.serving_overhead " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k in ("pairs", "threads", "settings", "wires", "requests"))
        args.out.write_text(text + f"\nCommand: `{command} --out {args.out}`\n")
        args.out.with_suffix(".json").write_text(json.dumps({
            "cpu": describe_cpu(), "pairs": args.pairs, "size": size,
            "results": [{"setting": r.setting, "wire": r.wire, "request": r.request, "threads": r.threads,
                         "alternated": {"server_ms": r.alternated_server.times_ms,
                                        "local_ms": r.alternated_local.times_ms},
                         "blocked": {"server_ms": r.blocked_server.times_ms, "local_ms": r.blocked_local.times_ms},
                         "ratio_alternated": r.ratios()[0], "ratio_blocked": r.ratios()[1],
                         "stalls": {"over_ms": STALL_MS, "alternated": r.alternated_server.stalls,
                                    "blocked": r.blocked_server.stalls},
                         "triton_ms": r.triton_ms} for r in results]},
            indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

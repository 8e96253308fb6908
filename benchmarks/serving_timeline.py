"""Where a served request's time goes, hop by hop, against the same ONNX file in-process.

One run starts the embedded tritonserver on a copy of the shipped model repository, with
Triton's request trace on (``--trace-config level=TIMESTAMPS``) and an adapter that also notes
when its ``execute`` starts and returns and when ONNX Runtime starts and ends. The client, the
stub and Triton read the same clock (CLOCK_MONOTONIC: Python's ``perf_counter_ns`` and C++'s
``steady_clock`` on Linux), so each request's stamps line up into one timeline:

    client call -> gRPC call -> Triton has read the message -> queued -> compute start -> inputs
    copied -> stub's execute -> ONNX Runtime -> execute returns -> output -> response sent -> client

Requests go one at a time through ``Client.infer`` with each ``--wires`` path, each followed
by one in-process run of the same tensors (the in-process median is printed beside). It prints
the median and mean of every hop and the fixed cost: everything but ONNX Runtime.

A second table shows what waking an idle thread costs on this machine: two processes pass a
byte back and forth through pipes, right away and after the caller spent 30 ms busy (as the
client does while the server runs the network).

    python -m clickmask.benchmarks.serving_timeline --requests 200 --out benchmarks/results/serving-timeline-session15.md
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np

from clickmask.machine import describe as describe_cpu

#: The hops, in order: (stamp, where it comes from).
STAMPS = (
    ("client call", "client: Client.infer called"),
    ("gRPC call", "client: the gRPC call starts (tensors written, request built)"),
    ("GRPC_WAITREAD_END", "Triton: the request message is read"),
    ("REQUEST_START", "Triton"),
    ("QUEUE_START", "Triton"),
    ("COMPUTE_START", "Triton: an instance takes it"),
    ("COMPUTE_INPUT_END", "Triton: inputs handed to the Python backend"),
    ("execute", "stub: the adapter's execute() starts"),
    ("ORT start", "stub: ONNX Runtime's run starts"),
    ("ORT end", "stub: ONNX Runtime's run ends"),
    ("execute return", "stub: execute() returns its responses"),
    ("COMPUTE_OUTPUT_START", "Triton: the response is back from the stub"),
    ("GRPC_SEND_START", "Triton"),
    ("GRPC_SEND_END", "Triton: the response is written"),
    ("gRPC return", "client: the gRPC call returns"),
    ("client return", "client: Client.infer returns the mask"),
)

#: Appended to the adapter of the copied repository: the stub notes its stamps per execute.
_PATCH = '''

import time as _clickmask_time

_clickmask_original_execute = TritonPythonModel.execute


def _clickmask_timed_execute(self, requests):
    stamps = [_clickmask_time.perf_counter_ns()]
    predictor = self.predictor

    class _Timed:
        def __getattr__(self, name):
            return getattr(predictor, name)

        def __call__(self, feeds):
            stamps.append(_clickmask_time.perf_counter_ns())
            out = predictor(feeds)
            stamps.append(_clickmask_time.perf_counter_ns())
            return out

    self.predictor = _Timed()
    try:
        responses = _clickmask_original_execute(self, requests)
    finally:
        self.predictor = predictor
    stamps.append(_clickmask_time.perf_counter_ns())
    global _clickmask_fd
    if _clickmask_fd is None:
        _clickmask_fd = os.open(os.environ["CLICKMASK_TIMELINE_FILE"] + f".{os.getpid()}",
                                os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(_clickmask_fd, (json.dumps(stamps) + "\\n").encode())
    return responses


_clickmask_fd = None


TritonPythonModel.execute = _clickmask_timed_execute
'''


def patched_repository(source: pathlib.Path) -> pathlib.Path:
    """A copy of the repository's clickmask model whose adapter notes its stamps."""
    target = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-timeline-"))
    shutil.copytree(source / "clickmask", target / "clickmask", ignore=shutil.ignore_patterns("__pycache__"))
    adapter = target / "clickmask" / "1" / "model.py"
    adapter.write_text(adapter.read_text() + _PATCH)
    return target


def read_trace(path: pathlib.Path) -> list[dict[str, int]]:
    """Triton's trace file: one dict of stamp name -> ns per traced request, by start time."""
    events: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for entry in json.loads(path.read_text()):
        for stamp in entry.get("timestamps", []):
            events[entry["id"]][stamp["name"]] = int(stamp["ns"])
    return sorted((e for e in events.values() if "REQUEST_START" in e), key=lambda e: e["REQUEST_START"])


def read_stub(prefix: pathlib.Path) -> list[list[int]]:
    stamps = []
    for path in prefix.parent.glob(prefix.name + ".*"):
        stamps += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(stamps)


def join(calls: list[dict[str, int]], trace: list[dict[str, int]], stub: list[list[int]]) -> list[dict[str, int]]:
    """Each client call with the one traced request and the one execute that fall inside it."""
    rows = []
    for call in calls:
        inside = [t for t in trace if call["client call"] <= t["REQUEST_START"] <= call["client return"]]
        runs = [s for s in stub if call["client call"] <= s[0] <= call["client return"]]
        if len(inside) != 1 or len(runs) != 1 or len(runs[0]) != 4:
            continue
        row = dict(call)
        row.update(inside[0])
        row.update(zip(("execute", "ORT start", "ORT end", "execute return"), runs[0]))
        rows.append(row)
    return rows


def hop_table(rows: list[dict[str, int]], local_ms: float) -> tuple[str, dict]:
    names = [name for name, _ in STAMPS]
    lines = ["| from | to | median ms | mean ms |", "|---|---|---|---|"]
    hops = {}
    for a, b in zip(names, names[1:]):
        values = [(r[b] - r[a]) / 1e6 for r in rows if a in r and b in r]
        if not values:
            continue
        hops[f"{a} -> {b}"] = (statistics.median(values), statistics.fmean(values))
        lines.append(f"| {a} | {b} | {hops[f'{a} -> {b}'][0]:.3f} | {hops[f'{a} -> {b}'][1]:.3f} |")
    total = [(r["client return"] - r["client call"]) / 1e6 for r in rows]
    ort = [(r["ORT end"] - r["ORT start"]) / 1e6 for r in rows]
    fixed = [t - o for t, o in zip(total, ort)]
    summary = {"requests": len(rows), "total_ms": statistics.median(total), "ort_ms": statistics.median(ort),
               "fixed_ms": statistics.median(fixed), "in_process_ms": local_ms}
    lines += ["", f"Whole call: median {summary['total_ms']:.2f} ms; ONNX Runtime inside the stub "
              f"{summary['ort_ms']:.2f} ms (in-process, same tensors: {local_ms:.2f} ms); everything else "
              f"(median of each request's difference): **{summary['fixed_ms']:.2f} ms** over {len(rows)} requests."]
    return "\n".join(lines), {"hops": hops, **summary}


def measure_wire(url: str, headers: dict, wire: str, inputs: dict, local, count: int,
                 stub_prefix: pathlib.Path) -> tuple[list[dict[str, int]], float]:
    """``count`` timed client calls (each followed by one in-process run); returns the calls'
    stamps and the in-process median in ms."""
    import grpc._channel as grpc_channel  # noqa: PLC0415

    from clickmask.client import Client  # noqa: PLC0415

    marks: list[int] = []
    original = grpc_channel._UnaryUnaryMultiCallable._blocking

    def blocking(self, *args, **kwargs):
        marks.append(time.perf_counter_ns())
        try:
            return original(self, *args, **kwargs)
        finally:
            marks.append(time.perf_counter_ns())

    calls, local_ms = [], []
    with Client(url, wire=wire, headers=headers) as client:
        for _ in range(5):
            client.infer(inputs)
        grpc_channel._UnaryUnaryMultiCallable._blocking = blocking
        try:
            for _ in range(count):
                marks.clear()
                start = time.perf_counter_ns()
                client.infer(inputs)
                end = time.perf_counter_ns()
                if len(marks) == 2:
                    calls.append({"client call": start, "gRPC call": marks[0], "gRPC return": marks[1],
                                  "client return": end})
                begin = time.perf_counter()
                local.infer(inputs)
                local_ms.append((time.perf_counter() - begin) * 1e3)
        finally:
            grpc_channel._UnaryUnaryMultiCallable._blocking = original
    return calls, statistics.median(local_ms)


def wake_table(rounds: int = 200) -> tuple[str, dict]:
    """Round trip of one byte between two processes, right away and after 30 ms of busy work."""
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo process
        while True:
            byte = os.read(to_child, 1)
            if byte in (b"", b"q"):
                os._exit(0)
            os.write(from_child, byte)
    results = {}
    try:
        for busy_ms in (0, 30):
            samples = []
            for _ in range(rounds):
                if busy_ms:
                    until = time.perf_counter() + busy_ms / 1e3
                    while time.perf_counter() < until:
                        pass
                start = time.perf_counter()
                os.write(from_parent, b"x")
                os.read(to_parent, 1)
                samples.append((time.perf_counter() - start) * 1e6)
            results[busy_ms] = statistics.median(samples)
    finally:
        os.write(from_parent, b"q")
        os.waitpid(pid, 0)
    lines = ["| caller busy before the round trip | round trip median µs |", "|---|---|"]
    lines += [f"| {busy} ms | {us:.0f} |" for busy, us in results.items()]
    return "\n".join(lines), {f"busy_{busy}ms_us": us for busy, us in results.items()}


def alternation_table(onnx: pathlib.Path, inputs: dict, threads: int, runs: int = 100) -> tuple[str, dict]:
    """ONNX Runtime on the same tensors: one process back to back, against two processes taking
    turns (what two model instances do with lone requests), each process with its own session."""
    from clickmask.serving import OnnxPredictor  # noqa: PLC0415

    workers = []
    for _ in range(2):
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker: one session, one run per byte received, answers the run's µs
            predictor = OnnxPredictor(onnx, threads=threads, spinning=False)
            predictor.infer(inputs)
            while os.read(to_child, 1) == b"x":
                start = time.perf_counter()
                predictor.infer(inputs)
                os.write(from_child, int((time.perf_counter() - start) * 1e6).to_bytes(4, "little"))
            os._exit(0)
        workers.append((pid, from_parent, to_parent))

    def run(index: int) -> float:
        _, send, receive = workers[index]
        os.write(send, b"x")
        return int.from_bytes(os.read(receive, 4), "little") / 1e3

    try:
        for index in (0, 1, 0, 1, 0, 1):
            run(index)
        alone = statistics.median(run(0) for _ in range(runs))
        turns = statistics.median(run(i % 2) for i in range(2 * runs))
    finally:
        for pid, send, _ in workers:
            os.write(send, b"q")
            os.waitpid(pid, 0)
    table = ("| ONNX Runtime runs of the same request | median ms |\n|---|---|\n"
             f"| one process, back to back | {alone:.2f} |\n| two processes taking turns | {turns:.2f} |")
    return table, {"one_process_ms": alone, "two_processes_ms": turns}


def main(argv: list[str] | None = None) -> int:
    from clickmask.datasets import default_root  # noqa: PLC0415
    from clickmask.export.model_config import onnx_input_size  # noqa: PLC0415
    from clickmask.serving import OnnxPredictor  # noqa: PLC0415
    from clickmask.serving.ports import free_port  # noqa: PLC0415
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer  # noqa: PLC0415

    from .serving_overhead import WIRES, first_request  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=pathlib.Path, default=DEFAULT_MODEL_REPOSITORY,
                   help="repository whose clickmask model is copied as shipped (default: the embedded one)")
    p.add_argument("--dataset", type=pathlib.Path, default=default_root() / "GrabCut",
                   help="the request is this set's first object, first click (default: %(default)s)")
    p.add_argument("--wires", nargs="+", choices=WIRES, default=list(WIRES), help="client paths (default: all)")
    p.add_argument("--requests", type=int, default=200, help="timed requests a wire (default: %(default)s)")
    p.add_argument("--out", type=pathlib.Path, default=None, help="also write the tables (.md) and JSON beside it")
    args = p.parse_args(argv)
    if args.requests < 20:
        raise SystemExit("--requests must be at least 20")
    if not args.dataset.is_dir():
        raise SystemExit(f"--dataset {args.dataset} is not a folder; point it at GrabCut (images/ and masks/)")

    repo = patched_repository(args.model_repository)
    work = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-timeline-out-"))
    size = onnx_input_size(repo / "clickmask" / "1" / "model.onnx")
    inputs = first_request(args.dataset, size)
    config_text = (repo / "clickmask" / "config.pbtxt").read_text()
    threads = int(next((line.split('"')[-2] for line in config_text.splitlines() if '"intra_op_threads"' in line), "1"))
    # first, while this process has no gRPC or ONNX Runtime threads to fork beside
    wake_text, wake = wake_table()
    alternation_text, alternation = alternation_table(repo / "clickmask" / "1" / "model.onnx", inputs, threads)
    local = OnnxPredictor(repo / "clickmask" / "1" / "model.onnx", threads=threads, spinning=False)
    sections, data = [], {"cpu": describe_cpu(), "size": size, "wires": {}}
    try:
        for wire in args.wires:
            trace = work / f"trace-{wire}.json"
            stub_prefix = work / f"stub-{wire}"
            os.environ["CLICKMASK_TIMELINE_FILE"] = str(stub_prefix)
            config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                                  metrics_port=free_port(), startup_timeout_s=300,
                                  extra_args=("--trace-config", f"triton,file={trace}", "--trace-config",
                                              "level=TIMESTAMPS", "--trace-config", "rate=1"))
            print(f"wire {wire}: starting the server ...", flush=True)
            with TritonServer(config) as server:
                calls, local_ms = measure_wire(config.grpc_url, server.admin_headers, wire, inputs, local,
                                               args.requests, stub_prefix)
            rows = join(calls, read_trace(trace), read_stub(stub_prefix))[5:]
            if len(rows) < args.requests // 2:
                raise SystemExit(f"only {len(rows)} of {args.requests} requests could be lined up with the trace")
            table, summary = hop_table(rows, local_ms)
            sections.append(f"## wire {wire}\n\n{table}\n")
            data["wires"][wire] = summary
            print(sections[-1], flush=True)
    finally:
        os.environ.pop("CLICKMASK_TIMELINE_FILE", None)
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    sections.append("## Waking a thread on this machine\n\nTwo processes pass one byte through pipes:\n\n" + wake_text + "\n")
    data["wake"] = wake
    sections.append("## Two processes taking turns\n\n" + alternation_text + "\n")
    data["alternation"] = alternation
    print(sections[-1])
    header = (f"# Serving timeline: one request, hop by hop\n\nCPU: {describe_cpu()}; {platform.python_version()}; "
              f"S={size}; the shipped repository's config; {args.requests} requests a wire, one at a time, "
              f"each followed by one in-process run.\n")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = (f"python -m clickmask.benchmarks.serving_timeline --wires {' '.join(args.wires)} "
                   f"--requests {args.requests} --out {args.out}")
        args.out.write_text(header + "\n" + "\n".join(sections) + f"\nCommand: `{command}`\n")
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

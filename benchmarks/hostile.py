"""Hostile load: good annotators (real Locust) while one client floods the server with malformed requests.

One continuous run in phases, the good annotators working through all of them:

* ``quiet``: N annotators of ``benchmarks/locustfile.py`` (think time, standard clicker, GrabCut),
* ``attacked``: the same annotators, plus one attacker process that sends malformed requests
  as fast as ``--attack-streams`` concurrent gRPC streams allow (raw ``tritonclient.grpc``, one
  connection a stream): wrong dtypes at full size, a wrong shape, a byte-size mismatch, a
  missing input, and right-shaped random bytes (clicks that are not 0/1 disks, which only the
  model's own validation can refuse),
* ``recovery`` (unless ``--no-recovery``): the annotators alone again.

The annotators log every click with its wall-clock start (``benchmarks/locustfile_hostile.py``),
so the p50/p95/p99 and the lost clicks (failed or unfinished) are split by phase exactly. The
attacker counts its requests and how each was refused; any accepted is a bug. Per phase the run
also reads the CPU time of every process involved from ``/proc`` (tritonserver, the Python
backend stub, Locust, the attacker, this driver, and whatever else ran on the machine) and
Triton's statistics, so a slower attacked phase says where the time went.

The gate (exit status 0): attacked p95 <= ``--ratio-limit`` x quiet p95, no good click lost in
any phase, and every attack request refused with INVALID_ARGUMENT. 1: it does not hold.
2: the benchmark could not run.

    python -m clickmask.benchmarks.hostile --start-server --good 8 --seconds 60 --out benchmarks/results/hostile
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import pathlib
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from clickmask.benchmarks.loadtest import PROFILES, ServerUnderTest, profile_repository
from clickmask.machine import describe as describe_cpu

LOGGER = logging.getLogger(__name__)

LOCUSTFILE = pathlib.Path(__file__).resolve().with_name("locustfile_hostile.py")
DEFAULT_URL = "127.0.0.1:8001"
MODEL = "clickmask"
DEFAULT_RATIO_LIMIT = 1.5
GATE_FAILED, COULD_NOT_RUN = 1, 2
#: Seconds after the last phase before Locust is stopped, so clicks started in it can finish.
DRAIN_S = 3.0
EXPECTED_STATUS = "INVALID_ARGUMENT"
#: Cores used by processes outside the benchmark above which a phase is flagged as not clean.
BUSY_CORES = 0.25
CHANNELS = {"image": 3, "clicks": 2, "prev_mask": 1}


# ------------------------------------------------------------------------------ attack kinds
@dataclasses.dataclass(frozen=True)
class AttackKind:
    name: str
    what: str
    #: Who is expected to refuse it: Triton's front end/core (before the queue) or the model's
    #: own validation in the Python backend (after the queue, inside an execute call).
    refused_by: str


ATTACK_KINDS = {k.name: k for k in (
    AttackKind("fp32-image", "image FP32 [1,3,S,S] (4x the bytes), the rest good", "triton"),
    AttackKind("fp32-all", "every input FP32 at full size (2.4 MB at S=320)", "triton"),
    AttackKind("wrong-shape", "image UINT8 [1,3,1.5S,1.5S]", "triton"),
    AttackKind("byte-mismatch", "image declared UINT8 [1,3,S,S] with 12 garbage bytes", "triton"),
    AttackKind("missing-input", "prev_mask left out", "triton"),
    AttackKind("random-bytes", "right dtypes and shapes, random bytes: clicks are not 0/1", "model"),
)}


def build_attack(kind: str, size: int, seed: int = 0) -> list:
    """The tritonclient inputs of one malformed request of ``kind`` (built once, sent many times)."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    rng = np.random.default_rng(seed)

    def tensor(name, array, datatype):
        value = grpcclient.InferInput(name, list(array.shape), datatype)
        value.set_data_from_numpy(array)
        return value

    def good(name):
        return tensor(name, np.zeros((1, CHANNELS[name], size, size), np.uint8), "UINT8")

    if kind == "fp32-image":
        return [tensor("image", rng.random((1, 3, size, size), dtype=np.float32), "FP32"),
                good("clicks"), good("prev_mask")]
    if kind == "fp32-all":
        return [tensor(n, rng.random((1, c, size, size), dtype=np.float32), "FP32") for n, c in CHANNELS.items()]
    if kind == "wrong-shape":
        big = size * 3 // 2
        return [tensor("image", rng.integers(0, 256, (1, 3, big, big), dtype=np.uint8), "UINT8"),
                good("clicks"), good("prev_mask")]
    if kind == "byte-mismatch":
        image = good("image")
        image._raw_content = b"\x89PNG\r\n\x1a\ngarb"  # declared [1,3,S,S], 12 bytes sent
        return [image, good("clicks"), good("prev_mask")]
    if kind == "missing-input":
        return [good("image"), good("clicks")]
    if kind == "random-bytes":
        return [tensor(n, rng.integers(0, 256, (1, c, size, size), dtype=np.uint8), "UINT8")
                for n, c in CHANNELS.items()]
    raise ValueError(f"unknown attack kind {kind!r}; choose from {', '.join(ATTACK_KINDS)}")


def serialize_attack(inputs: list) -> bytes:
    """One malformed request of :func:`build_attack` as the bytes of a ``ModelInferRequest``,
    serialized once: the ``bytes`` attacker wire sends them as they are, so that the attacker's
    own CPU per request is gRPC's and not the protobuf building of 2.4 MB in Python."""
    from tritonclient.grpc import service_pb2  # noqa: PLC0415

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for value in inputs:
        request.inputs.append(value._get_tensor())  # noqa: SLF001 - tritonclient builds the same
        content = value._get_content()  # noqa: SLF001
        if content is not None:
            request.raw_input_contents.append(content)
    return request.SerializeToString()


#: How the attacker sends: tritonclient's infer() (builds each request in Python) or the same
#: request serialized once and sent as bytes on a plain gRPC channel.
ATTACKER_WIRES = ("tritonclient", "bytes")
_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
#: clickmask loadtest's profiles that change the server alone (not the clients' passes or wire).
SERVER_PROFILES = tuple(name for name, profile in PROFILES.items()
                        if profile.config is not None and profile.passes is None and profile.wire is None)


def _status(exc) -> str:
    status = exc.status() if hasattr(exc, "status") else None
    return (status or "UNKNOWN").replace("StatusCode.", "")


def _bytes_sender(url: str, channel_args: list):
    """A callable sending serialized requests on its own gRPC channel, raising
    :class:`grpc.RpcError`; and the channel's close."""
    import grpc  # noqa: PLC0415

    channel = grpc.insecure_channel(url, options=channel_args)
    call = channel.unary_unary(_INFER_METHOD, request_serializer=None, response_deserializer=None)
    return (lambda payload, timeout_s: call(payload, timeout=timeout_s)), channel.close


def _attack_stream(url, payloads, index, stop, timeout_s, out, wire="tritonclient"):
    """One stream: its own gRPC connection, one malformed request after the other until ``stop``."""
    import grpc  # noqa: PLC0415
    import tritonclient.grpc as grpcclient  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    channel_args = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
                    ("grpc.use_local_subchannel_pool", 1)]
    if wire == "bytes":
        send, close = _bytes_sender(url, channel_args)
    else:
        client = grpcclient.InferenceServerClient(url, channel_args=channel_args)
        close = client.close

        def send(payload, deadline_s):
            client.infer(MODEL, payload, client_timeout=deadline_s)
    names = list(payloads)
    counts: dict[tuple[str, str], int] = {}
    latencies: dict[str, list[float]] = {name: [] for name in names}
    messages: dict[str, str] = {}
    turn = index
    try:
        while not stop.is_set():
            kind = names[turn % len(names)]
            turn += 1
            started = time.perf_counter()
            try:
                send(payloads[kind], timeout_s)
                outcome = "ACCEPTED"
            except InferenceServerException as exc:
                outcome = _status(exc)
                messages.setdefault(kind, (exc.message() or "")[:200])
            except grpc.RpcError as exc:
                outcome = exc.code().name
                messages.setdefault(kind, (exc.details() or "")[:200])
            latencies[kind].append((time.perf_counter() - started) * 1000.0)
            counts[(kind, outcome)] = counts.get((kind, outcome), 0) + 1
    finally:
        close()
    out[index] = (counts, latencies, messages)


def attacker_main(url: str, kinds: list[str], streams: int, size: int, timeout_s: float, nice: int,
                  ready, go, stop, results, wire: str = "tritonclient") -> None:
    """The attacker process: build the payloads, connect, wait for ``go``, attack until ``stop``,
    and put a summary on ``results``."""
    try:
        if nice:
            os.nice(nice)
        import tritonclient.grpc as grpcclient  # noqa: PLC0415

        payloads = {kind: build_attack(kind, size, seed) for seed, kind in enumerate(kinds)}
        if wire == "bytes":
            payloads = {kind: serialize_attack(inputs) for kind, inputs in payloads.items()}
        probe = grpcclient.InferenceServerClient(url)
        probe.is_server_live()
        probe.close()
        ready.set()
        go.wait()
        out: dict[int, tuple] = {}
        started = time.monotonic()
        threads = [threading.Thread(target=_attack_stream, args=(url, payloads, i, stop, timeout_s, out, wire),
                                    name=f"attack-{i}", daemon=True) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        results.put({"ok": True, "seconds": elapsed, **_merge_streams(out.values(), kinds)})
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which fails the run
        ready.set()
        results.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def _merge_streams(parts, kinds) -> dict:
    by_kind = {}
    for kind in kinds:
        outcomes: dict[str, int] = {}
        latencies: list[float] = []
        message = ""
        for counts, lat, messages in parts:
            for (name, outcome), count in counts.items():
                if name == kind:
                    outcomes[outcome] = outcomes.get(outcome, 0) + count
            latencies += lat.get(kind, [])
            message = message or messages.get(kind, "")
        values = np.asarray(latencies) if latencies else np.asarray([np.nan])
        by_kind[kind] = {
            "requests": len(latencies), "outcomes": outcomes, "example_message": message,
            "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
        }
    return {"kinds": by_kind}


# ----------------------------------------------------------------------- process accounting
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), None when it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def system_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    try:
        values = [int(v) for v in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def server_pids(url: str) -> dict[str, list[int]]:
    """The tritonserver serving gRPC on ``url``'s port and its Python-backend stubs (by /proc)."""
    port = url.rsplit(":", 1)[-1]
    found: dict[str, list[int]] = {"tritonserver": [], "python stub": []}
    pids = [int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()]
    for pid in pids:
        cmd = _cmdline(pid)
        if "tritonserver" in cmd.split(" ", 1)[0] and f"--grpc-port={port}" in cmd:
            found["tritonserver"].append(pid)
    for pid in pids:
        if _ppid(pid) in found["tritonserver"] and "triton_python_backend_stub" in _cmdline(pid):
            found["python stub"].append(pid)
    return found


@dataclasses.dataclass
class Snapshot:
    """Everything read at a phase boundary."""

    wall: float
    cpu: dict[str, float | None]
    system: tuple[float, float]
    triton: dict[str, float] | None


class Accounting:
    """CPU seconds per role and Triton's statistics, read at phase boundaries."""

    ROLES = ("tritonserver", "python stub", "locust (good)", "attacker", "driver")

    def __init__(self, url: str):
        self.url = url
        self.pids: dict[str, list[int]] = {role: [] for role in self.ROLES}
        self.pids.update(server_pids(url))
        self.pids["driver"] = [os.getpid()]

    def snapshot(self) -> Snapshot:
        cpu = {}
        for role in self.ROLES:
            values = [proc_cpu_s(pid) for pid in self.pids.get(role, [])]
            values = [v for v in values if v is not None]
            cpu[role] = sum(values) if values else None
        return Snapshot(time.time(), cpu, system_cpu_s(), triton_statistics(self.url))

    @staticmethod
    def delta(first: Snapshot, last: Snapshot) -> dict:
        """Cores used per role between two snapshots, the rest of the machine, and Triton's stats."""
        seconds = last.wall - first.wall
        cores: dict[str, float | None] = {}
        known = 0.0
        for role in Accounting.ROLES:
            a, b = first.cpu.get(role), last.cpu.get(role)
            cores[role] = None if a is None or b is None else (b - a) / seconds
            known += cores[role] or 0.0
        busy = (last.system[0] - first.system[0]) / seconds
        total = (last.system[1] - first.system[1]) / seconds
        cores["other processes"] = max(0.0, busy - known)
        cores["idle"] = max(0.0, total - busy)
        return {"seconds": seconds, "cores": cores, "triton": _triton_delta(first.triton, last.triton)}


_STAT_FIELDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


def triton_statistics(url: str) -> dict[str, float] | None:
    """Triton's cumulative counters for the model, or None when the statistics API is closed."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    try:
        raw = grpcclient.InferenceServerClient(url)
        try:
            stats = raw.get_inference_statistics(MODEL).model_stats[0]
        finally:
            raw.close()
    except Exception:  # noqa: BLE001 - a locked-down server: the run goes on without them
        return None
    out = {"inference_count": float(stats.inference_count), "execution_count": float(stats.execution_count)}
    for field in _STAT_FIELDS:
        value = getattr(stats.inference_stats, field)
        out[f"{field}_count"], out[f"{field}_ns"] = float(value.count), float(value.ns)
    return out


def _triton_delta(first, last) -> dict | None:
    if not first or not last:
        return None
    d = {key: last[key] - first[key] for key in first}

    def mean_ms(field):
        count = d[f"{field}_count"]
        return d[f"{field}_ns"] / count / 1e6 if count else None

    return {
        "requests_ok": int(d["success_count"]), "requests_failed": int(d["fail_count"]),
        "executions": int(d["execution_count"]),
        "avg_batch": d["inference_count"] / d["execution_count"] if d["execution_count"] else None,
        "queue_ms": mean_ms("queue"), "compute_input_ms": mean_ms("compute_input"),
        "compute_infer_ms": mean_ms("compute_infer"), "compute_output_ms": mean_ms("compute_output"),
    }


# ------------------------------------------------------------------------------ click log
@dataclasses.dataclass(frozen=True)
class Click:
    started: float
    ms: float
    name: str
    ok: bool
    error: str
    finished: bool


def read_click_log(path: pathlib.Path) -> list[Click]:
    clicks = []
    if not path.is_file():
        return clicks
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                clicks.append(Click(float(row["started"]), float(row["ms"]), row["name"], row["ok"] == "1",
                                    row.get("error") or "", row["event"] == "done"))
            except (KeyError, TypeError, ValueError):
                continue  # a line cut short when Locust was stopped
    return clicks


@dataclasses.dataclass
class PhaseResult:
    name: str
    start: float
    end: float
    clicks: int
    lost: int
    unfinished: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    clicks_per_s: float
    attack_requests: int = 0
    attack_per_s: float = 0.0
    errors: dict = dataclasses.field(default_factory=dict)
    accounting: dict | None = None
    #: The successful good clicks' latencies, in the order they started (for the bootstrap).
    latencies_ms: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def phase_stats(name: str, start: float, end: float, clicks: list[Click]) -> PhaseResult:
    """The good annotators' clicks that started in [start, end): percentiles of the successful
    ones; lost = failed (any request, an ``open session`` too) + unfinished."""
    inside = sorted((c for c in clicks if start <= c.started < end), key=lambda c: c.started)
    good = np.asarray([c.ms for c in inside if c.ok and c.name.startswith("click")])
    failed = [c for c in inside if not c.ok]
    errors: dict[str, int] = {}
    for c in failed:
        key = c.error.split(":", 1)[0] or "error"
        errors[key] = errors.get(key, 0) + 1

    def pct(q):
        return float(np.percentile(good, q)) if good.size else float("nan")

    seconds = end - start
    return PhaseResult(
        name=name, start=start, end=end, clicks=int(good.size), lost=len(failed),
        unfinished=sum(1 for c in failed if not c.finished), p50_ms=pct(50), p95_ms=pct(95), p99_ms=pct(99),
        max_ms=float(good.max()) if good.size else float("nan"),
        clicks_per_s=good.size / seconds if seconds > 0 else float("nan"), errors=errors,
        latencies_ms=[round(float(v), 1) for v in good],
    )


def ratio_interval(quiet: list[float], attacked: list[float], resamples: int = 2000, seed: int = 0
                   ) -> tuple[float, float]:
    """A 90% bootstrap interval of attacked p95 / quiet p95 (clicks resampled within each phase).

    The p95 of a few hundred clicks moves with a handful of slow ones, so one run's ratio is
    only as good as this interval says."""
    if not quiet or not attacked:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    q, a = np.asarray(quiet), np.asarray(attacked)
    q95 = np.percentile(q[rng.integers(0, q.size, (resamples, q.size))], 95, axis=1)
    a95 = np.percentile(a[rng.integers(0, a.size, (resamples, a.size))], 95, axis=1)
    ratios = a95 / q95
    return float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))


# ------------------------------------------------------------------------------ the run
def model_size(url: str) -> int:
    """S, from the model config's ``input_size`` parameter (320 when it cannot be read)."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    raw = grpcclient.InferenceServerClient(url)
    try:
        config = raw.get_model_config(MODEL, as_json=True)["config"]
        return int(config["parameters"]["input_size"]["string_value"])
    except Exception:  # noqa: BLE001
        return 320
    finally:
        raw.close()


def locust_command(args, url: str, raw_dir: pathlib.Path, total_s: float) -> list[str]:
    spawn_rate = args.spawn_rate or max(1.0, args.good / 5.0)
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(args.good), "-r", f"{spawn_rate:g}", "-t", f"{total_s:.0f}s", "--stop-timeout", "5",
        "--host", url, "--loglevel", "INFO", "--logfile", str(raw_dir / "locust.log"),
        "--click-log", str(raw_dir / "clicks.csv"),
        "--dataset", str(args.dataset), "--images", str(args.images),
        "--think-min", f"{args.think_min:g}", "--think-max", f"{args.think_max:g}",
        "--max-clicks", str(args.max_clicks), "--target-iou", f"{args.target_iou:g}",
        "--click-timeout", f"{args.click_timeout:g}",
    ]


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _wait_first_click(locust: subprocess.Popen, log: pathlib.Path, raw_dir: pathlib.Path, timeout_s: float) -> None:
    from clickmask.client import ClickmaskError  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if locust.poll() is not None:
            raise ClickmaskError(f"locust exited with status {locust.returncode} before the first click:\n"
                                 + _tail(raw_dir / "locust.out"))
        if any(c.finished for c in read_click_log(log)):
            return
        time.sleep(0.2)
    raise ClickmaskError(f"no click logged within {timeout_s:g} s:\n" + _tail(raw_dir / "locust.out"))


def measure(args, url: str, raw_dir: pathlib.Path) -> dict:
    """Run the phases against ``url``; return the summary (see ``results.json``)."""
    from clickmask.benchmarks.loadtest import preflight  # noqa: PLC0415
    from clickmask.client import ClickmaskError  # noqa: PLC0415

    preflight(url, args.dataset)
    size = model_size(url)
    phases = ["quiet", "attacked"] + (["recovery"] if args.recovery else [])
    total_s = args.warmup + args.seconds * len(phases) + 120
    load_before = os.getloadavg()

    context = multiprocessing.get_context("spawn")  # no fork after gRPC ran in this process
    ready, go, stop, results = context.Event(), context.Event(), context.Event(), context.Queue()
    attacker = context.Process(target=attacker_main, name="clickmask-attacker", daemon=True,
                               args=(url, list(args.attack_kinds), args.attack_streams, size, args.attack_timeout,
                                     args.attacker_nice, ready, go, stop, results, args.attacker_wire))
    attacker.start()
    command = locust_command(args, url, raw_dir, total_s)
    (raw_dir / "command.txt").write_text(" ".join(command) + "\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    accounting = Accounting(url)
    accounting.pids["attacker"] = [attacker.pid]
    killed_at_exit = False
    with open(raw_dir / "locust.out", "w", encoding="utf-8") as output:
        locust = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    accounting.pids["locust (good)"] = [locust.pid]
    attack_summary = None
    snapshots = []
    try:
        _wait_first_click(locust, raw_dir / "clicks.csv", raw_dir, timeout_s=120)
        if not ready.wait(60) or not attacker.is_alive():
            raise ClickmaskError("the attacker process did not get ready: " + _attacker_error(results))
        LOGGER.info("annotators clicking; %g s warm-up", args.warmup)
        time.sleep(args.warmup)
        snapshots.append(accounting.snapshot())
        for phase in phases:
            LOGGER.info("phase %s: %g s", phase, args.seconds)
            if phase == "attacked":
                go.set()
            time.sleep(args.seconds)
            if phase == "attacked":
                stop.set()
                attack_summary = _attacker_result(results, attacker, args.attack_timeout + 30)
            snapshots.append(accounting.snapshot())
        time.sleep(DRAIN_S)
    finally:
        if locust.poll() is None:
            locust.send_signal(signal.SIGTERM)
        try:
            locust.wait(timeout=30)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()
            killed_at_exit = len(snapshots) == len(phases) + 1
            if killed_at_exit:  # every phase is measured: its clicks are on disk already
                LOGGER.warning("locust did not exit within 30 s of SIGTERM after the last phase and was killed; "
                               "the phases were complete, so their clicks stand")
        stop.set()
        go.set()
        attacker.join(timeout=15)
        if attacker.is_alive():
            attacker.kill()
    if locust.returncode not in (0, 1) and not killed_at_exit:
        raise ClickmaskError(f"locust exited with status {locust.returncode}:\n" + _tail(raw_dir / "locust.out"))
    clicks = read_click_log(raw_dir / "clicks.csv")
    results_by_phase = []
    for index, phase in enumerate(phases):
        first, last = snapshots[index], snapshots[index + 1]
        result = phase_stats(phase, first.wall, last.wall, clicks)
        result.accounting = Accounting.delta(first, last)
        if phase == "attacked" and attack_summary:
            result.attack_requests = sum(k["requests"] for k in attack_summary["kinds"].values())
            result.attack_per_s = result.attack_requests / attack_summary["seconds"]
        results_by_phase.append(result)
    return {"url": url, "size": size, "load_average_before": load_before, "phases": results_by_phase,
            "attacker": attack_summary, "pids": accounting.pids, "locust_exit_code": locust.returncode}


def _attacker_error(results) -> str:
    try:
        message = results.get(timeout=1)
    except queue.Empty:
        return "it did not say why"
    return message.get("error", "unknown")


def _attacker_result(results, attacker, timeout_s: float) -> dict:
    from clickmask.client import ClickmaskError  # noqa: PLC0415

    try:
        message = results.get(timeout=timeout_s)
    except queue.Empty as exc:
        raise ClickmaskError(f"the attacker did not report within {timeout_s:g} s "
                             f"(alive: {attacker.is_alive()})") from exc
    if not message.get("ok"):
        raise ClickmaskError(f"the attacker failed: {message.get('error')}")
    return message


# ------------------------------------------------------------------------------ reporting
def verdict(summary: dict, ratio_limit: float) -> tuple[bool, float, list[str]]:
    """(holds, ratio, reasons it does not hold)."""
    phases = {p.name: p for p in summary["phases"]}
    quiet, attacked = phases["quiet"], phases["attacked"]
    ratio = attacked.p95_ms / quiet.p95_ms if quiet.p95_ms and not math.isnan(quiet.p95_ms) else float("nan")
    reasons = []
    if not ratio <= ratio_limit:
        reasons.append(f"attacked p95 is {ratio:.2f}x the quiet p95 (limit {ratio_limit:g}x)")
    for p in summary["phases"]:
        if p.clicks == 0:
            reasons.append(f"no good click in the {p.name} phase")
        if p.lost:
            reasons.append(f"{p.lost} good click(s) lost in the {p.name} phase")
    attacker = summary["attacker"] or {"kinds": {}}
    sent = sum(k["requests"] for k in attacker["kinds"].values())
    if sent == 0:
        reasons.append("the attacker sent nothing")
    for name, k in attacker["kinds"].items():
        wrong = {o: n for o, n in k["outcomes"].items() if o != EXPECTED_STATUS}
        if wrong:
            reasons.append(f"attack {name}: {wrong} (expected every one refused with {EXPECTED_STATUS})")
    return not reasons, ratio, reasons


def _fmt(value, spec=".0f", none="-") -> str:
    return none if value is None or math.isnan(value) else format(value, spec)


PHASE_HEADER = (f"{'phase':<10}{'seconds':>8}{'clicks':>8}{'lost':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
                f"{'max ms':>9}{'clicks/s':>10}{'attack req/s':>14}")


def phase_line(p: PhaseResult) -> str:
    return (f"{p.name:<10}{p.seconds:>8.1f}{p.clicks:>8}{p.lost:>6}{_fmt(p.p50_ms):>9}{_fmt(p.p95_ms):>9}"
            f"{_fmt(p.p99_ms):>9}{_fmt(p.max_ms):>9}{p.clicks_per_s:>10.2f}{_fmt(p.attack_per_s, '.0f'):>14}")


def cpu_lines(phases: list[PhaseResult]) -> list[str]:
    roles = list(Accounting.ROLES) + ["other processes", "idle"]
    header = f"{'cores used':<18}" + "".join(f"{p.name:>11}" for p in phases)
    lines = [header]
    for role in roles:
        lines.append(f"{role:<18}" + "".join(f"{_fmt(p.accounting['cores'].get(role), '.2f'):>11}" for p in phases))
    return lines


def triton_lines(phases: list[PhaseResult]) -> list[str]:
    rows = (("model requests", "requests_ok", "d"), ("model failures", "requests_failed", "d"),
            ("executions", "executions", "d"), ("avg batch", "avg_batch", ".2f"), ("queue ms", "queue_ms", ".2f"),
            ("input ms", "compute_input_ms", ".2f"), ("infer ms", "compute_infer_ms", ".1f"),
            ("output ms", "compute_output_ms", ".2f"))
    if not all(p.accounting and p.accounting["triton"] for p in phases):
        return ["(Triton's statistics API is not open on this server)"]
    lines = [f"{'Triton (model)':<18}" + "".join(f"{p.name:>11}" for p in phases)]
    for label, key, spec in rows:
        lines.append(f"{label:<18}" + "".join(f"{_fmt(p.accounting['triton'][key], spec):>11}" for p in phases))
    return lines


def attacker_lines(attacker: dict | None) -> list[str]:
    if not attacker:
        return ["(no attacker result)"]
    lines = [f"{'attack':<15}{'refused by':>11}{'requests':>10}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}  outcomes",
             ]
    for name, k in attacker["kinds"].items():
        outcomes = ", ".join(f"{o} {n}" for o, n in sorted(k["outcomes"].items()))
        lines.append(f"{name:<15}{ATTACK_KINDS[name].refused_by:>11}{k['requests']:>10}"
                     f"{k['requests'] / attacker['seconds']:>8.0f}{_fmt(k['p50_ms'], '.1f'):>8}"
                     f"{_fmt(k['p95_ms'], '.1f'):>8}  {outcomes}")
    return lines


def cost_lines(phases: list[PhaseResult]) -> list[str]:
    """Extra CPU of the attacked phase over the quiet one, per role, and per attack request."""
    by = {p.name: p for p in phases}
    quiet, attacked = by["quiet"], by["attacked"]
    if not attacked.attack_requests:
        return []
    lines = [f"{'extra CPU when attacked':<26}{'cores':>7}{'CPU ms / attack request':>26}"]
    for role in list(Accounting.ROLES) + ["other processes"]:
        a, q = attacked.accounting["cores"].get(role), quiet.accounting["cores"].get(role)
        if a is None or q is None:
            continue
        extra = a - q
        per_request = extra * attacked.seconds / attacked.attack_requests * 1000.0
        lines.append(f"{role:<26}{extra:>+7.2f}{per_request:>26.3f}")
    return lines


def busy_phases(phases: list[PhaseResult]) -> dict[str, float]:
    """Phases in which processes outside the benchmark used more than ``BUSY_CORES`` cores."""
    busy = {}
    for p in phases:
        other = (p.accounting or {}).get("cores", {}).get("other processes")
        if other is not None and other > BUSY_CORES:
            busy[p.name] = round(other, 2)
    return busy


def report(args, summary: dict) -> tuple[bool, list[str]]:
    holds, ratio, reasons = verdict(summary, args.ratio_limit)
    phases = summary["phases"]
    lines = [PHASE_HEADER] + [phase_line(p) for p in phases] + [""]
    by_name = {p.name: p for p in phases}
    low, high = ratio_interval(by_name["quiet"].latencies_ms, by_name["attacked"].latencies_ms)
    lines.append(f"ratio attacked p95 / quiet p95 = {ratio:.2f}x (limit {args.ratio_limit:g}x): "
                 + ("holds" if ratio <= args.ratio_limit else "does NOT hold")
                 + f"; 90% bootstrap interval {low:.2f}x-{high:.2f}x")
    lost = {p.name: p.errors for p in phases if p.errors}
    if lost:
        lines.append(f"lost clicks by error: {json.dumps(lost)}")
    lines += ["", "attacker (attacked phase): " + f"{args.attack_streams} streams, one gRPC connection each, "
              + f"wire {getattr(args, 'attacker_wire', 'tritonclient')}", ""]
    lines += attacker_lines(summary["attacker"])
    lines += ["", "CPU by process (cores, out of " + f"{os.cpu_count()}); 'other processes' is everything else "
              "on the machine", ""]
    lines += cpu_lines(phases)
    extra = cost_lines(phases)
    if extra:
        lines += [""] + extra
    lines += [""] + triton_lines(phases)
    lines += ["", ("PASS: " if holds else "FAIL: ") + ("; ".join(reasons) if reasons else
              f"attacked p95 {ratio:.2f}x quiet p95 <= {args.ratio_limit:g}x, no good click lost, "
              "every attack request refused with INVALID_ARGUMENT")]
    busy = busy_phases(phases)
    if busy:
        lines.append("WARNING: the machine was not quiet: other processes used "
                     + ", ".join(f"{cores:.2f} cores in the {name} phase" for name, cores in busy.items())
                     + "; these latencies measure that contention too, rerun on a quiet machine")
    return holds, lines


def machine() -> str:
    return f"{describe_cpu()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _json_summary(args, summary: dict, holds: bool, ratio: float, argv_line: str) -> dict:
    return {
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": argv_line, "url": summary["url"], "started_server": bool(args.start_server),
        "input_size": summary["size"], "load_average_before": summary["load_average_before"],
        "options": {k: (v if isinstance(v, (int, float, bool, type(None))) else str(v))
                    for k, v in vars(args).items() if k not in ("func", "argv")},
        "ratio_attacked_over_quiet_p95": ratio, "ratio_limit": args.ratio_limit, "holds": holds,
        "ratio_interval_90": list(ratio_interval(*(next(p.latencies_ms for p in summary["phases"] if p.name == n)
                                                   for n in ("quiet", "attacked")))),
        "busy_phases": busy_phases(summary["phases"]),
        "phases": [dict(dataclasses.asdict(p), seconds=p.seconds) for p in summary["phases"]],
        "attacker": summary["attacker"],
        "attack_kinds": {name: dataclasses.asdict(ATTACK_KINDS[name]) for name in args.attack_kinds},
    }


def run(args) -> int:
    from clickmask.client import ClickmaskError, InvalidInputError  # noqa: PLC0415

    if args.good < 1 or args.attack_streams < 1 or args.seconds <= 0 or args.warmup < 0:
        raise InvalidInputError("--good and --attack-streams must be >= 1, --seconds > 0, --warmup >= 0")
    if not 0 <= args.think_min <= args.think_max:
        raise InvalidInputError(f"need 0 <= --think-min <= --think-max, got {args.think_min} and {args.think_max}")
    if not (args.dataset / "images").is_dir():
        raise InvalidInputError(f"{args.dataset} is not a dataset folder (images/ and masks/); pass --dataset DIR")
    profile = getattr(args, "server_profile", None)
    if profile and not args.start_server:
        raise InvalidInputError("--server-profile configures the server it starts: add --start-server")
    args.out.mkdir(parents=True, exist_ok=True)
    raw_dir = args.out / "raw" if args.keep_raw else pathlib.Path(tempfile.mkdtemp(prefix="clickmask-hostile-"))
    raw_dir.mkdir(parents=True, exist_ok=True)
    argv_line = "python -m clickmask.benchmarks.hostile " + " ".join(getattr(args, "argv", []) or [])
    header = [(f"clickmask hostile load: {args.good} good annotators (Locust, think {args.think_min:g}-"
               f"{args.think_max:g} s) + 1 attacker ({args.attack_streams} streams: {', '.join(args.attack_kinds)})"),
              f"phases of {args.seconds:g} s after {args.warmup:g} s warm-up; machine: {machine()}"]
    if profile:
        header.append(f"server profile {profile}: {PROFILES[profile].about}")
    print("\n".join(header), flush=True)
    repository = profile_repository(args.model_repository, PROFILES[profile].config) if profile else None
    try:
        # --url, or --start-server (with --frontend-nice and --server-profile)
        with ServerUnderTest(args, raw_dir, repository, PROFILES[profile].server if profile else None) as url:
            summary = measure(args, url, raw_dir)
    except ClickmaskError:
        if any(raw_dir.iterdir()):
            print(f"raw files kept for a look: {raw_dir}", file=sys.stderr)
        elif not args.keep_raw:
            raw_dir.rmdir()
        raise
    finally:
        if repository is not None:
            shutil.rmtree(repository, ignore_errors=True)
    holds, lines = report(args, summary)
    _, ratio, _ = verdict(summary, args.ratio_limit)
    print("\n" + "\n".join(lines), flush=True)
    data = _json_summary(args, summary, holds, ratio, argv_line)
    (args.out / "results.json").write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    (args.out / "results.md").write_text(
        "# Hostile load: good annotators while one client sends malformed requests\n\n"
        + "\n".join(f"{line}  " for line in header) + "\n\n"
        + f"command: `{argv_line}`  \ndate: {data['date']}; load average before the run: "
        + ", ".join(f"{v:.2f}" for v in summary["load_average_before"]) + "\n\n```\n" + "\n".join(lines) + "\n```\n")
    print(f"\nresults: {args.out / 'results.md'}, {args.out / 'results.json'}"
          + (f"; raw files: {raw_dir}" if args.keep_raw else ""))
    if not args.keep_raw:
        shutil.rmtree(raw_dir, ignore_errors=True)
    return 0 if holds else GATE_FAILED


def _jsonable(value):
    if isinstance(value, pathlib.Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# ------------------------------------------------------------------------------ parser
def add_arguments(p: argparse.ArgumentParser) -> None:
    from clickmask.datasets import default_root  # noqa: PLC0415
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY  # noqa: PLC0415 - stdlib only

    target = p.add_argument_group("server under test")
    target.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC address (default: %(default)s, 'make serve')")
    target.add_argument("--start-server", action="store_true",
                        help="start an embedded tritonserver on free loopback ports instead of using --url")
    target.add_argument("--model-repository", type=pathlib.Path, default=DEFAULT_MODEL_REPOSITORY,
                        help="with --start-server (default: %(default)s)")
    good = p.add_argument_group("good annotators (Locust)")
    good.add_argument("--good", type=int, default=40,
                      help="annotators, about half the capacity of the shipped default on a 2-core CPU "
                           "(88 in session 13, benchmarks/results/capacity.md) (default: %(default)s)")
    good.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default: good/5)")
    good.add_argument("--think-min", type=float, default=1.0, help="seconds (default: %(default)s)")
    good.add_argument("--think-max", type=float, default=3.0, help="seconds (default: %(default)s)")
    good.add_argument("--dataset", type=pathlib.Path, default=default_root() / "GrabCut",
                      help="images/ and masks/ folder the annotators work on (default: %(default)s)")
    good.add_argument("--images", type=int, default=0, help="first N samples only (default: all)")
    good.add_argument("--max-clicks", type=int, default=10, help="clicks per object at most (default: %(default)s)")
    good.add_argument("--target-iou", type=float, default=0.9, help="object done at this IoU (default: %(default)s)")
    good.add_argument("--click-timeout", type=float, default=30.0,
                      help="gRPC deadline of a click, seconds; a missed deadline is a lost click (default: %(default)s)")
    attack = p.add_argument_group("attacker")
    attack.add_argument("--attack-streams", type=int, default=8,
                        help="concurrent gRPC streams of the attacker, one connection each (default: %(default)s)")
    attack.add_argument("--attack-kinds", nargs="+", choices=list(ATTACK_KINDS), default=list(ATTACK_KINDS),
                        metavar="KIND", help="malformed requests to cycle through (default: all: "
                        + "; ".join(f"{k.name}: {k.what}" for k in ATTACK_KINDS.values()) + ")")
    attack.add_argument("--attack-timeout", type=float, default=10.0,
                        help="gRPC deadline of one attack request, seconds (default: %(default)s)")
    attack.add_argument("--attacker-nice", type=int, default=0,
                        help="run the attacker process at this nice value, to tell its own CPU use on this "
                             "machine from the server's cost of refusing (default: %(default)s)")
    attack.add_argument("--attacker-wire", choices=ATTACKER_WIRES, default="tritonclient",
                        help="tritonclient: infer() builds every request in Python, as a client would; bytes: "
                             "each request serialized once and resent as bytes, so the attacker spends little "
                             "CPU of its own on this machine and sends as fast as the server answers "
                             "(default: %(default)s)")
    p.add_argument("--server-profile", choices=SERVER_PROFILES, default=None, metavar="PROFILE",
                   help="with --start-server: serve a copy of the repository with one of clickmask loadtest's "
                        "server configs (" + "; ".join(f"{name}: {PROFILES[name].about}" for name in SERVER_PROFILES)
                        + "; default: the repository as it is)")
    p.add_argument("--frontend-nice", type=int, default=None, metavar="N",
                   help="with --start-server: tritonserver's own threads at this nice value, the backend stubs "
                        "not (ServerConfig.frontend_nice; default: the server's default)")
    phases = p.add_argument_group("phases and gate")
    phases.add_argument("--seconds", type=float, default=60.0, help="seconds per phase (default: %(default)s)")
    phases.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of annotators clicking before the quiet phase, not measured (default: %(default)s)")
    phases.add_argument("--recovery", action=argparse.BooleanOptionalAction, default=True,
                        help="a quiet phase after the attack, to show recovery (default: on)")
    phases.add_argument("--ratio-limit", type=float, default=DEFAULT_RATIO_LIMIT,
                        help="gate: attacked p95 <= this x quiet p95 (default: %(default)s)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("hostile-results"),
                   help="folder for results.json and results.md (default: %(default)s)")
    p.add_argument("--keep-raw", action="store_true",
                   help="keep the click log, Locust's log and the server log under OUT/raw")
    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.hostile", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from clickmask.client import ClickmaskError  # noqa: PLC0415

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return run(args)
    except ClickmaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return COULD_NOT_RUN


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())

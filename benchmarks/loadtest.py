"""Locust load test as a release gate: annotators with think time, p95 per click, capacity.

``clickmask loadtest`` runs ``benchmarks/locustfile.py`` headless in a child process (gevent's
monkey-patching stays out of this one), writes Locust's CSV files and HTML report to
``--out``, prints p50/p95/p99 and failures from the aggregated stats, and exits 1 when the
p95 of a click is above ``--p95-ms`` or any request failed, 0 when the gate holds.
``--find-capacity`` steps the user count up and reports the largest that holds the gate,
with a table and a plot of p95 against users.

    clickmask loadtest --users 16 --spawn-rate 4 --duration 60            # against `make serve`
    clickmask loadtest --start-server --find-capacity --duration 45 --out benchmarks/results/locust-capacity
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import time
from clickmask.machine import describe as describe_cpu
from clickmask.serving.ports import free_port

LOGGER = logging.getLogger(__name__)

LOCUSTFILE = pathlib.Path(__file__).resolve().with_name("locustfile.py")
DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_P95_MS = 300.0
DEFAULT_STEPS = (4, 8, 16, 32, 48, 64, 80, 96, 128)
CSV_PREFIX = "locust"
GATE_FAILED = 1


@dataclasses.dataclass(frozen=True)
class StatsRow:
    """One row of Locust's ``*_stats.csv``: a click index, or the aggregate of all."""

    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    requests_per_s: float


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one Locust run measured, and whether it holds the gate."""

    users: int
    duration_s: float
    out_dir: str
    aggregated: StatsRow
    rows: tuple[StatsRow, ...]
    locust_exit_code: int
    #: how the users' clients sent their tensors (``shm``/``message``/``compact`` -> users), from locust.out
    wire_paths: dict = dataclasses.field(default_factory=dict)

    def holds(self, p95_ms: float) -> bool:
        a = self.aggregated
        return a.requests > 0 and a.failures == 0 and a.p95_ms <= p95_ms

    def verdict(self, p95_ms: float) -> str:
        a = self.aggregated
        if a.requests == 0:
            return "FAIL: no click was recorded"
        reasons = []
        if a.p95_ms > p95_ms:
            reasons.append(f"p95 {a.p95_ms:.0f} ms > {p95_ms:g} ms")
        if a.failures:
            reasons.append(f"{a.failures} of {a.requests} requests failed")
        return "FAIL: " + "; ".join(reasons) if reasons else f"PASS: p95 {a.p95_ms:.0f} ms <= {p95_ms:g} ms, no failures"


def read_stats(path: pathlib.Path) -> tuple[StatsRow, tuple[StatsRow, ...]]:
    """The aggregated row and the per-name rows (sorted by name) of a Locust stats CSV."""
    aggregated, rows = None, []
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            row = StatsRow(
                name=record["Name"], requests=int(record["Request Count"]), failures=int(record["Failure Count"]),
                p50_ms=_number(record["50%"]), p95_ms=_number(record["95%"]), p99_ms=_number(record["99%"]),
                max_ms=_number(record["Max Response Time"]), requests_per_s=_number(record["Requests/s"]),
            )
            if record["Name"] == "Aggregated":
                aggregated = row
            else:
                rows.append(row)
    if aggregated is None:
        raise ValueError(f"{path} has no Aggregated row; is it Locust's *_stats.csv?")
    return aggregated, tuple(sorted(rows, key=lambda r: r.name))


def _number(text: str) -> float:
    return float("nan") if text in ("", "N/A") else float(text)


def locust_command(args, users: int, spawn_rate: float, url: str, out_dir: pathlib.Path) -> list[str]:
    """The headless ``locust`` command line for one run."""
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{args.duration:g}s", "--stop-timeout", "5",
        "--host", url, "--csv", str(out_dir / CSV_PREFIX), "--html", str(out_dir / "report.html"),
        "--loglevel", "INFO", "--logfile", str(out_dir / "locust.log"),
        "--dataset", str(args.dataset), "--images", str(args.images),
        "--think-min", f"{args.think_min:g}", "--think-max", f"{args.think_max:g}",
        "--max-clicks", str(args.max_clicks), "--target-iou", f"{args.target_iou:g}",
        "--click-timeout", f"{args.click_timeout:g}",
    ]


def run_locust(args, users: int, url: str, out_dir: pathlib.Path) -> RunResult:
    """Run Locust once, headless, and read back its aggregated stats."""
    from clickmask.client import ClickmaskError  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    spawn_rate = args.spawn_rate if args.spawn_rate else max(1.0, users / 5.0)
    command = locust_command(args, users, spawn_rate, url, out_dir)
    (out_dir / "command.txt").write_text(" ".join(command) + "\n")
    LOGGER.info("locust: %d users, spawn rate %g/s, %g s -> %s", users, spawn_rate, args.duration, out_dir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(out_dir / "locust.out", "w", encoding="utf-8") as output:
        try:
            completed = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env, check=False,
                                       timeout=args.duration + 120)
        except subprocess.TimeoutExpired:
            raise ClickmaskError(f"locust did not finish within {args.duration + 120:g} s; see {out_dir}/locust.out") \
                from None
    stats = out_dir / f"{CSV_PREFIX}_stats.csv"
    # Locust exits 1 when a request failed (that is ours to judge); anything else is a crash.
    if completed.returncode not in (0, 1) or not stats.is_file():
        tail = "\n".join((out_dir / "locust.out").read_text(errors="replace").splitlines()[-25:])
        raise ClickmaskError(f"locust exited with status {completed.returncode}:\n{tail}")
    aggregated, rows = read_stats(stats)
    return RunResult(users, args.duration, str(out_dir), aggregated, rows, completed.returncode,
                     read_wire_paths(out_dir / "locust.out"))


#: The locustfile's closing line: how many users sent their tensors by each path.
WIRE_LINE = "clickmask wire paths of the users:"


def read_wire_paths(path: pathlib.Path) -> dict[str, int]:
    """The locustfile's count of users per wire path (empty when the line is missing)."""
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith(WIRE_LINE):
            pairs = (item.split("=", 1) for item in line[len(WIRE_LINE):].split())
            return {key: int(value) for key, value in pairs}
    return {}


# ----------------------------------------------------------------------------- reporting
def _row_line(row: StatsRow, label: str | None = None) -> str:
    return (f"{label or row.name:<12}{row.requests:>8}{row.failures:>7}{row.p50_ms:>9.0f}{row.p95_ms:>9.0f}"
            f"{row.p99_ms:>9.0f}{row.max_ms:>9.0f}{row.requests_per_s:>9.2f}")


RUN_HEADER = f"{'name':<12}{'clicks':>8}{'fail':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>9}"


def run_report(result: RunResult, p95_ms: float) -> list[str]:
    lines = [RUN_HEADER] + [_row_line(r) for r in result.rows] + [_row_line(result.aggregated, "all clicks")]
    lines += ["", result.verdict(p95_ms)]
    if result.wire_paths:
        lines.append("wire paths (users): " + ", ".join(f"{k} {v}" for k, v in sorted(result.wire_paths.items())))
    return lines


CAPACITY_HEADER = (f"{'users':>6}{'clicks':>8}{'fail':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
                   f"{'clicks/s':>10}  gate")


def capacity_line(result: RunResult, p95_ms: float) -> str:
    a = result.aggregated
    return (f"{result.users:>6}{a.requests:>8}{a.failures:>6}{a.p50_ms:>9.0f}{a.p95_ms:>9.0f}{a.p99_ms:>9.0f}"
            f"{a.requests_per_s:>10.2f}  {'pass' if result.holds(p95_ms) else 'FAIL'}")


def plot_capacity(results: list[RunResult], p95_ms: float, capacity: int | None, path: pathlib.Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    users = [r.users for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for attr, style in (("p50_ms", ":"), ("p95_ms", "-"), ("p99_ms", "--")):
        left.plot(users, [getattr(r.aggregated, attr) for r in results], marker="o", linestyle=style,
                  label=attr.replace("_ms", ""))
    left.axhline(p95_ms, color="red", linewidth=0.8, linestyle="--", label=f"p95 gate {p95_ms:g} ms")
    if capacity:
        left.axvline(capacity, color="green", linewidth=0.8, label=f"capacity {capacity} users")
    left.set_ylabel("latency per click (ms)")
    right.plot(users, [r.aggregated.requests_per_s for r in results], marker="o")
    right.set_ylabel("clicks per second")
    for ax in (left, right):
        ax.set_xlabel("annotators (Locust users)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle("clickmask under Locust: annotators with think time")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------ servers


def preflight(url: str, dataset: pathlib.Path, clicks: int = 4) -> None:
    """Fail with the fix when no model answers at ``url``; warm the model up with a few clicks."""
    from clickmask.client import Client, ServerUnavailableError  # noqa: PLC0415
    from clickmask.client.protocol import run_protocol  # noqa: PLC0415
    from clickmask.datasets import list_objects, load_object  # noqa: PLC0415

    image, gt, ignore = load_object(list_objects(dataset, limit=1)[0])
    with Client(url, timeout_s=20, retries=0) as client:
        if not client.is_ready():
            raise ServerUnavailableError(
                f"no ready clickmask model at {url}: start one with 'make serve' (or 'clickmask serve'), "
                "pass --url HOST:PORT, or let the load test start its own with --start-server")
        run_protocol(client.session(image), gt, ignore, max_clicks=clicks)


@dataclasses.dataclass(frozen=True)
class Profile:
    """A served default to compare: the client's passes (``CLICKMASK_PASSES``) and the
    embedded server's ONNX Runtime settings (None: the repository's config as it is)."""

    passes: str | None
    config: dict | None
    about: str
    #: the clients' ``CLICKMASK_WIRE`` (None: as in the environment, "auto" by default)
    wire: str | None = None
    #: ``ServerConfig`` fields of the embedded server (None: its defaults)
    server: dict | None = None


#: The queue policy every embedded config had until session 12 (32 requests, 2 s, REJECT).
_POLICY = {"max_queue_size": 32, "queue_timeout_us": 2_000_000}

#: ``--compare`` choices. ``session9`` is the default as it shipped until session 9: accurate
#: passes, two intra-op threads with ONNX Runtime's spinning threads; ``session12`` the served
#: config of session 12 (the batcher with its queue policy, which stalls).
PROFILES = {
    "default": Profile(None, None, "the client's default passes and the repository's config as shipped"),
    "session9": Profile("accurate", {"intra_op_threads": 2, "allow_spinning": None, "queue_delay_us": 2000,
                                     "dynamic_batching": True, **_POLICY},
                        "accurate passes (flip + refine), 2 spinning ONNX Runtime threads, 2 ms batching delay, "
                        "queue policy, raw tensors", "raw"),
    "session12": Profile(None, {"dynamic_batching": True, **_POLICY},
                         "the default passes, the batcher with the queue policy of session 12 (32 requests, 2 s): "
                         "Triton's prefetching off, so some requests stall up to 500 ms"),
    "batcher": Profile(None, {"dynamic_batching": True},
                       "the default passes, Triton's dynamic batcher without a queue policy (it prefetches)"),
    "session13": Profile(None, {"instance_count": 1, "intra_op_threads": 2},
                         "the default passes, the config shipped in session 13: one model instance of 2 ONNX Runtime "
                         "threads, no batcher"),
    "no-batching": Profile(None, {"dynamic_batching": False},
                           "the default passes, the shipped instances, Triton's dynamic batcher off (each request "
                           "alone)"),
    "balanced": Profile("balanced", None, "balanced passes (refine), the shipped config"),
    "accurate": Profile("accurate", None, "accurate passes (flip + refine), the shipped config"),
    "spinning": Profile(None, {"allow_spinning": True}, "the default passes and config, ONNX Runtime threads spinning"),
    "delay-2ms": Profile(None, {"queue_delay_us": 2000, "dynamic_batching": True},
                         "the default passes, the batcher with a 2 ms batching delay"),
    "instances-2x1": Profile(None, {"instance_count": 2, "intra_op_threads": 1},
                             "the default passes, 2 model instances of 1 ONNX Runtime thread each (shipped since "
                             "session 14)"),
    "session14": Profile(None, {"instance_count": 2, "intra_op_threads": 1, "prefer_first_instance": False},
                         "the default passes, the config shipped in session 14: two model instances of one ONNX "
                         "Runtime thread taking turns (Triton's rate limiter off), no batcher",
                         server={"rate_limit": "off"}),
    "instances-2x2-nobatch": Profile(None, {"instance_count": 2, "intra_op_threads": 2},
                                     "the default passes, 2 model instances of 2 ONNX Runtime threads each, no "
                                     "batcher"),
    "instances-2x2": Profile(None, {"instance_count": 2, "dynamic_batching": True, **_POLICY},
                             "the default passes, the batcher with the queue policy, 2 model instances of 2 ONNX "
                             "Runtime threads each (fewer stalls)"),
    "fast": Profile("fast", None, "fast passes (one model call a click), the shipped config"),
    "raw": Profile(None, None, "the default passes and config, raw tensors in the gRPC message (CLICKMASK_WIRE=raw)", "raw"),
    "compact": Profile(None, None, "the default passes and config, the compact entry (CLICKMASK_WIRE=compact; "
                       "'auto' sends raw tensors over loopback, through shared memory with the admin key)", "compact"),
}


def profile_repository(source: pathlib.Path, config: dict) -> pathlib.Path:
    """A copy of the repository ``source`` whose embedded model runs with ``config``
    (``python_config`` keywords); the compact entry, when there is one, takes its ONNX Runtime
    settings (threads, spinning) too, its batching and single instance stay."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from clickmask.export.model_config import Contract, onnx_input_size, python_config  # noqa: PLC0415

    from clickmask.export.model_config import COMPACT_MODEL_NAME, compact_config  # noqa: PLC0415

    target = pathlib.Path(tempfile.mkdtemp(prefix="clickmask-profile-"))
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    size = onnx_input_size(target / "clickmask" / "1" / "model.onnx")
    (target / "clickmask" / "config.pbtxt").write_text(python_config(Contract(size), **config))
    if (target / COMPACT_MODEL_NAME).is_dir():  # the compact entry runs ONNX Runtime alike
        runtime = {key: config[key] for key in ("intra_op_threads", "allow_spinning", "max_queue_size",
                                                "queue_timeout_us") if key in config}
        (target / COMPACT_MODEL_NAME / "config.pbtxt").write_text(compact_config(Contract(size), **runtime))
    return target


class ServerUnderTest:
    """The server under test: ``--url``, or an embedded tritonserver with ``--start-server``.

    A started server's admin key goes to the Locust users through ``$CLICKMASK_ADMIN_KEY`` for
    the run, as a platform on the server's machine would hold it: their ``wire="auto"`` clients
    then send raw tensors through shared memory (``CLICKMASK_WIRE=raw`` keeps them in the message).
    """

    def __init__(self, args, out: pathlib.Path, repository: pathlib.Path | None = None,
                 server_options: dict | None = None):
        self.args, self.out, self.server = args, out, None
        self.server_options = server_options or {}
        self.repository = repository or args.model_repository
        self._saved_key: str | None = None

    def __enter__(self) -> str:
        if not self.args.start_server:
            return self.args.url
        from clickmask.serving.server import ServerConfig, TritonServer  # noqa: PLC0415

        nice = getattr(self.args, "frontend_nice", None)  # hostile.py's --frontend-nice
        config = ServerConfig(model_repository=self.repository, grpc_port=free_port(),
                              http_port=free_port(), metrics_port=free_port(), startup_timeout_s=300,
                              **({} if nice is None else {"frontend_nice": nice}), **self.server_options)
        self.server = TritonServer(config, log_path=self.out / "tritonserver.log")
        LOGGER.info("starting tritonserver on %s (log: %s)", config.grpc_url, self.server.log_path)
        self.server.start()
        from clickmask.client.shm import ADMIN_KEY_ENV  # noqa: PLC0415

        self._saved_key = os.environ.get(ADMIN_KEY_ENV)
        os.environ[ADMIN_KEY_ENV] = self.server.admin_key
        return config.grpc_url

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            from clickmask.client.shm import ADMIN_KEY_ENV  # noqa: PLC0415

            _set_env({ADMIN_KEY_ENV: self._saved_key})
            self.server.stop()


# -------------------------------------------------------------------------------- commands
def _machine() -> str:
    return f"{describe_cpu()}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _single(args, url: str) -> int:
    result = run_locust(args, args.users, url, args.out)
    lines = run_report(result, args.p95_ms)
    print("\n".join(lines))
    print(f"\nCSV and HTML report: {args.out}/{CSV_PREFIX}_stats.csv, {args.out}/report.html")
    (args.out / "summary.json").write_text(json.dumps(_summary(args, url, [result]), indent=2) + "\n")
    return 0 if result.holds(args.p95_ms) else GATE_FAILED


def _find_capacity(args, url: str) -> int:
    steps = sorted(set(args.steps))
    results: list[RunResult] = []
    print(CAPACITY_HEADER, flush=True)
    for users in steps:
        result = run_locust(args, users, url, args.out / f"users-{users:03d}")
        results.append(result)
        print(capacity_line(result, args.p95_ms), flush=True)
        if not result.holds(args.p95_ms):
            break
    for _ in range(args.refine):  # bisect between the last count that held and the first that did not
        low = _capacity(results, args.p95_ms)
        above = [r.users for r in results if not r.holds(args.p95_ms) and low is not None and r.users > low]
        if not above or min(above) - low <= 1:
            break
        users = (low + min(above)) // 2
        result = run_locust(args, users, url, args.out / f"users-{users:03d}")
        results.append(result)
        print(capacity_line(result, args.p95_ms), flush=True)
    results.sort(key=lambda r: r.users)
    capacity = _capacity(results, args.p95_ms)
    lines = [CAPACITY_HEADER] + [capacity_line(r, args.p95_ms) for r in results] + [""]
    if capacity:
        lines.append(f"capacity: {capacity} annotators hold p95 <= {args.p95_ms:g} ms with no failures "
                     f"(think {args.think_min:g}-{args.think_max:g} s, {args.duration:g} s per step)")
    else:
        lines.append(f"capacity: none of {steps} holds p95 <= {args.p95_ms:g} ms with no failures")
    print("\n" + "\n".join(lines))
    summary = _summary(args, url, results)
    summary["capacity_users"] = capacity
    (args.out / "capacity.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "capacity.md").write_text("```\n" + "\n".join(lines) + "\n```\n\n" + f"machine: {_machine()}\n")
    plot_capacity(results, args.p95_ms, capacity, args.out / "capacity.png")
    print(f"\ntable, plot and per-step CSV/HTML: {args.out}/capacity.md, capacity.png, users-NNN/")
    return 0 if capacity else GATE_FAILED


def _set_env(values: dict[str, str | None]) -> None:
    """Set each variable, or remove it where the value is None."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _compare(args) -> int:
    """``--find-capacity`` once per ``--compare`` profile, in one run; a side-by-side table."""
    import shutil  # noqa: PLC0415

    from clickmask.client.grpc_client import WIRE_ENV  # noqa: PLC0415
    from clickmask.client.session import PASSES_ENV  # noqa: PLC0415

    root, found = args.out, {}
    saved = {key: os.environ.get(key) for key in (PASSES_ENV, WIRE_ENV)}
    for name in args.compare:
        profile = PROFILES[name]
        # a profile's passes and wire for the Locust users; the caller's environment otherwise
        _set_env({PASSES_ENV: profile.passes or saved[PASSES_ENV], WIRE_ENV: profile.wire or saved[WIRE_ENV]})
        repository = profile_repository(args.model_repository, profile.config) if profile.config else None
        print(f"\n== {name}: {profile.about}", flush=True)
        args.out = root / name
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            with ServerUnderTest(args, args.out, repository, profile.server) as url:
                preflight(url, args.dataset)
                _find_capacity(args, url)
        finally:
            args.out = root
            if repository is not None:
                shutil.rmtree(repository, ignore_errors=True)
        found[name] = json.loads((root / name / "capacity.json").read_text())["capacity_users"]
    _set_env(saved)
    first = args.compare[0]
    lines = ["| profile | what | annotators at p95 <= %g ms | vs %s |" % (args.p95_ms, first), "|---|---|---|---|"]
    for name in args.compare:
        ratio = (f"{found[name] / found[first]:.2f}x" if found[name] and found[first] else "-")
        lines.append(f"| {name} | {PROFILES[name].about} | {found[name] or 'none'} | {ratio} |")
    text = "\n".join(lines)
    print("\n" + text)
    (root / "compare.md").write_text(text + f"\n\nmachine: {_machine()}\n")
    (root / "compare.json").write_text(json.dumps({"machine": _machine(), "capacity_users": found}, indent=2) + "\n")
    return 0 if all(found.values()) else GATE_FAILED


def _capacity(results: list[RunResult], p95_ms: float) -> int | None:
    """The largest user count that held, below every count that did not."""
    failed = [r.users for r in results if not r.holds(p95_ms)]
    ceiling = min(failed) if failed else float("inf")
    held = [r.users for r in results if r.holds(p95_ms) and r.users < ceiling]
    return max(held) if held else None


def _summary(args, url: str, results: list[RunResult]) -> dict:
    return {
        "machine": _machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "url": url, "started_server": bool(args.start_server), "p95_gate_ms": args.p95_ms,
        "options": {k: str(v) for k, v in vars(args).items() if k != "func"},
        "runs": [dict(dataclasses.asdict(r), holds=r.holds(args.p95_ms)) for r in results],
    }


def run(args) -> int:
    from clickmask.client import InvalidInputError  # noqa: PLC0415

    if not 0 <= args.think_min <= args.think_max:
        raise InvalidInputError(f"need 0 <= --think-min <= --think-max, got {args.think_min} and {args.think_max}")
    if args.users < 1 or args.duration <= 0 or any(s < 1 for s in args.steps):
        raise InvalidInputError("--users and --steps must be >= 1 and --duration > 0")
    if not (args.dataset / "images").is_dir():
        raise InvalidInputError(f"{args.dataset} is not a dataset folder (images/ and masks/); pass --dataset DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        if not (args.find_capacity and args.start_server):
            raise InvalidInputError("--compare starts one server per profile: use it with --start-server and "
                                    "--find-capacity")
        return _compare(args)
    with ServerUnderTest(args, args.out) as url:
        preflight(url, args.dataset)
        return _find_capacity(args, url) if args.find_capacity else _single(args, url)


# ----------------------------------------------------------------------------------- parser
def add_arguments(p: argparse.ArgumentParser) -> None:
    from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY  # noqa: PLC0415 - stdlib only

    from clickmask.datasets import default_root  # noqa: PLC0415

    datasets = default_root()
    target = p.add_argument_group("server under test")
    target.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC address (default: %(default)s, 'make serve')")
    target.add_argument("--start-server", action="store_true",
                        help="start an embedded tritonserver on free loopback ports instead of using --url")
    target.add_argument("--model-repository", type=pathlib.Path, default=DEFAULT_MODEL_REPOSITORY,
                        help="with --start-server (default: %(default)s)")
    load = p.add_argument_group("load")
    load.add_argument("--users", type=int, default=8, help="concurrent annotators (default: %(default)s)")
    load.add_argument("--spawn-rate", type=float, default=None,
                      help="users started per second (default: users/5, so the ramp takes 5 s)")
    load.add_argument("--duration", type=float, default=60.0, help="seconds per run (default: %(default)s)")
    load.add_argument("--think-min", type=float, default=1.0, help="seconds (default: %(default)s)")
    load.add_argument("--think-max", type=float, default=3.0, help="seconds (default: %(default)s)")
    load.add_argument("--dataset", type=pathlib.Path, default=datasets / "GrabCut",
                      help="images/ and masks/ folder the annotators work on (default: %(default)s)")
    load.add_argument("--images", type=int, default=0, help="first N samples only (default: all)")
    load.add_argument("--max-clicks", type=int, default=10, help="clicks per object at most (default: %(default)s)")
    load.add_argument("--target-iou", type=float, default=0.9, help="object done at this IoU (default: %(default)s)")
    load.add_argument("--click-timeout", type=float, default=30.0,
                      help="gRPC deadline of a click in seconds; a missed deadline is a failure (default: %(default)s)")
    gate = p.add_argument_group("gate and capacity")
    gate.add_argument("--p95-ms", type=float, default=DEFAULT_P95_MS,
                      help="fail when the p95 of a click is above this (default: %(default)s)")
    gate.add_argument("--find-capacity", action="store_true",
                      help="step the users up (--steps) and report the largest count that holds the gate")
    gate.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS),
                      help="user counts for --find-capacity, stopping at the first that fails (default: %(default)s)")
    gate.add_argument("--compare", nargs="+", choices=sorted(PROFILES), default=None, metavar="PROFILE",
                      help="with --find-capacity and --start-server: find the capacity of each profile in one "
                           "run, side by side (" + "; ".join(f"{k}: {v.about}" for k, v in PROFILES.items()) + ")")
    gate.add_argument("--refine", type=int, default=0,
                      help="extra runs bisecting between the last count that held and the first that failed")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("loadtest-results"),
                   help="folder for Locust's CSV files, the HTML report and the summary (default: %(default)s)")
    p.set_defaults(func=run)


def add_loadtest_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``clickmask loadtest`` on the CLI's subparsers."""
    p = subparsers.add_parser("loadtest", help="Locust load test with annotators; gate on p95 and failures",
                              description=__doc__.split("\n\n")[0] + " Exit status: 0 the gate holds, "
                              "1 it does not, 2 the test could not run.")
    add_arguments(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.loadtest", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(run(build_parser().parse_args()))

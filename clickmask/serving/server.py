"""Launch the tritonserver binary carried by the ``nvidia-pytriton`` wheel.

The embedded default serves ``model_repository/`` on this CPU through Triton's Python backend.
:class:`TritonServer` owns one ``tritonserver`` child process: it prepares the backend
directory, sets the environment the Python-backend stub needs, waits for readiness, and stops
the child with SIGINT, then SIGKILL after a timeout. On Linux the child also receives SIGKILL
when its parent dies (``PR_SET_PDEATHSIG``), so it never outlives the launcher.

Security defaults (docs/security.md): every endpoint binds to loopback; the model control
mode is ``none`` (the repository is loaded once, nothing can load or unload models); the
admin APIs (model repository, shared memory, trace, logging) answer only requests that carry
the admin key header, over gRPC and HTTP alike, while health, metadata and inference stay
open; gRPC can run over TLS.

Triton 2.51's Python backend does not restart a stub process that died: the model still
reports READY while every request fails with INTERNAL "Stub process ... is not healthy".
:meth:`TritonServer.supervise` watches the stub and restarts tritonserver when it is gone.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import pathlib
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from clickmask.client.shm import GRPC_ADMIN_KEY_HEADER as _CLIENT_ADMIN_HEADER
from clickmask.errors import ServerStartError

LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 8001
DEFAULT_HTTP_PORT = 8000
DEFAULT_METRICS_PORT = 8002
DEFAULT_MODEL_NAME = "clickmask"
#: The Triton repository shipped with the package: in a checkout, clickmask/model_repository links
#: to the top-level model_repository/; in an installed wheel it is package data.
DEFAULT_MODEL_REPOSITORY = pathlib.Path(__file__).resolve().parent.parent / "model_repository"
# Latency quantiles exported as nv_inference_*_summary_us{quantile=...}: "quantile:error".
SUMMARY_QUANTILES = "0.5:0.05,0.9:0.01,0.95:0.001,0.99:0.001"
_PR_SET_PDEATHSIG = 1
#: The admin key's header, defined once in the client (its shared-memory path sends it). gRPC
#: clients send it as ``triton-grpc-protocol-<name>`` (Triton's prefix), HTTP clients as ``<name>``.
GRPC_ADMIN_KEY_HEADER = _CLIENT_ADMIN_HEADER
ADMIN_KEY_HEADER = GRPC_ADMIN_KEY_HEADER.removeprefix("triton-grpc-protocol-")  # the HTTP header
#: APIs that change the server or reach into it: always behind the admin key.
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
#: Read-only APIs that are open by default because the client (model-config gives S) and the
#: benchmarks and Prometheus checks (statistics) read them; ``locked_down`` restricts them too.
READ_ONLY_APIS = ("model-config", "statistics")
_RESTRICTABLE = ADMIN_APIS + READ_ONLY_APIS
_STUB_NAME = "triton_python_backend_stub"
#: How many first lines of the log are kept beside the tail (a refused command line puts its reason first).
_HEAD_LINES = 20
_USAGE_GROUP = re.compile(r"^[A-Z][A-Za-z /&-]*:$")
#: Values of tritonserver's --rate-limit (ServerConfig.rate_limit).
RATE_LIMIT_MODES = ("execution_count", "off")
#: Values of tritonserver's --grpc-infer-response-compression-level.
RESPONSE_COMPRESSION_LEVELS = ("none", "low", "medium", "high")


def _is_usage_line(line: str) -> bool:
    """Whether ``line`` belongs to tritonserver's usage text (options, their help, group titles)."""
    return (not line.strip() or line.startswith(("Usage: tritonserver", "  --", "\t"))
            or _USAGE_GROUP.match(line) is not None)


def security_args(restricted_apis: tuple[str, ...], admin_key: str, tls_cert: str | None = None,
                  tls_key: str | None = None, tls_client_ca: str | None = None) -> list[str]:
    """tritonserver flags that lock a server down: the admin key on ``restricted_apis`` over gRPC
    and HTTP, and gRPC over TLS (mutual with a client CA). The embedded server and every
    generated deploy file (:mod:`clickmask.export.deploy_files`) use this one function."""
    restricted = ",".join(restricted_apis)
    args = [
        f"--grpc-restricted-protocol={restricted}:{ADMIN_KEY_HEADER}={admin_key}",
        f"--http-restricted-api={restricted}:{ADMIN_KEY_HEADER}={admin_key}",
    ]
    if tls_cert is not None:
        args += ["--grpc-use-ssl=true", f"--grpc-server-cert={tls_cert}", f"--grpc-server-key={tls_key}"]
        if tls_client_ca is not None:
            args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={tls_client_ca}"]
    return args


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Where and how tritonserver listens. Ports of 0 are not supported by tritonserver."""

    model_repository: pathlib.Path = DEFAULT_MODEL_REPOSITORY
    host: str = DEFAULT_HOST
    grpc_port: int = DEFAULT_GRPC_PORT
    http_port: int = DEFAULT_HTTP_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    log_verbose: int = 0
    startup_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0
    extra_args: tuple[str, ...] = ()
    #: gRPC over TLS with this PEM certificate and key (both or neither).
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    #: With TLS: also require client certificates signed by this PEM CA (mutual TLS).
    tls_client_ca: pathlib.Path | None = None
    #: Key for the admin APIs; None: a random key per start (TritonServer.admin_key).
    admin_key: str | None = None
    #: Also put model-config and statistics behind the admin key.
    locked_down: bool = False
    model_control_mode: str = "none"
    #: gzip level of inference responses (``--grpc-infer-response-compression-level``):
    #: none, low, medium or high. Sent only to clients that accept gzip (gRPC clients do).
    grpc_response_compression: str = "none"
    #: Nice value given to tritonserver's own threads (gRPC/HTTP front end, scheduler) once the
    #: models are loaded; the Python-backend stubs, which run the network, keep theirs. On a
    #: small CPU this lets inference preempt the parsing of requests, bad ones included
    #: (docs/hostile-load.md: under a flood of malformed requests the good clicks' p50 rose 17-20%
    #: at 10 against 44% at 0). 0 leaves the process as started.
    frontend_nice: int = 10
    #: Triton's rate limiter (``--rate-limit``). "execution_count": a request goes to the free
    #: instance whose executions times its config's ``rate_limiter { priority }`` is lowest; the
    #: embedded config prefers its first instance that way, so lone clicks meet one warm process
    #: (export/model_config.py, ``EMBEDDED_PREFER_FIRST_INSTANCE``). "off": any free instance.
    rate_limit: str = "execution_count"

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServerStartError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ServerStartError("mutual TLS (--tls-client-ca) needs --tls-cert and --tls-key too")
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, name)
            if path is not None and not pathlib.Path(path).is_file():
                raise ServerStartError(f"{name.replace('_', '-')} file {path} does not exist")
        if self.admin_key is not None and (
            len(self.admin_key) < 16 or not all(c.isalnum() or c in "-_." for c in self.admin_key)
        ):
            raise ServerStartError(
                "the admin key needs at least 16 characters of [A-Za-z0-9-_.]; "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        if self.grpc_response_compression not in RESPONSE_COMPRESSION_LEVELS:
            raise ServerStartError(
                f"grpc_response_compression must be one of {', '.join(RESPONSE_COMPRESSION_LEVELS)}, "
                f"got {self.grpc_response_compression!r}"
            )
        if self.rate_limit not in RATE_LIMIT_MODES:
            raise ServerStartError(f"rate_limit must be one of {', '.join(RATE_LIMIT_MODES)}, got {self.rate_limit!r}")
        if not 0 <= self.frontend_nice <= 19:
            raise ServerStartError(f"frontend_nice must lie in 0..19 (a lower priority only), got {self.frontend_nice}")
        ports = {"grpc_port": self.grpc_port, "http_port": self.http_port, "metrics_port": self.metrics_port}
        for name, port in ports.items():
            if not 1 <= int(port) <= 65535:
                raise ServerStartError(f"{name} must lie in 1..65535 (tritonserver takes no port 0), got {port}")
        if len(set(ports.values())) < len(ports):
            given = ", ".join(f"{name}={port}" for name, port in ports.items())
            raise ServerStartError(
                f"the gRPC, HTTP and metrics ports must differ ({given}); tritonserver cannot listen twice "
                "on one port: give each its own (clickmask serve --grpc-port/--http-port/--metrics-port; "
                "in code, clickmask.serving.ports.free_port() for each)"
            )
        if self.model_control_mode not in ("none", "poll", "explicit"):
            raise ServerStartError(f"model_control_mode must be none, poll or explicit, got {self.model_control_mode!r}")

    @property
    def restricted_apis(self) -> tuple[str, ...]:
        """The APIs that answer only requests carrying the admin key."""
        return _RESTRICTABLE if self.locked_down else ADMIN_APIS

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


def _pytriton_dir() -> pathlib.Path:
    try:
        import pytriton  # noqa: PLC0415 - optional 'serve' extra
    except ImportError as exc:
        raise ServerStartError(
            "the embedded Triton server needs the 'serve' extra: pip install 'clickmask[serve]'"
        ) from exc
    return pathlib.Path(pytriton.__file__).resolve().parent


def find_tritonserver() -> pathlib.Path:
    """Path of the tritonserver binary inside the nvidia-pytriton wheel."""
    binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServerStartError(f"tritonserver binary not found at {binary}; reinstall nvidia-pytriton")
    return binary


def _check_libpython() -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    name = f"libpython{version}.so.1.0"
    try:
        ctypes.CDLL(name)
    except OSError:
        if ctypes.util.find_library(f"python{version}") is None:
            raise ServerStartError(
                f"Triton's Python-backend stub needs the shared library {name}; install it with "
                f"'apt-get install libpython{version}' (Debian/Ubuntu) and retry"
            ) from None


def prepare_backend_directory(root: pathlib.Path | None = None) -> pathlib.Path:
    """Build a ``--backend-directory`` whose ``python/`` holds the backend and the stub.

    The wheel keeps the stub for each Python version apart from the backend library; Triton
    expects them side by side, so this links them into one folder (idempotent).
    """
    tritondir = _pytriton_dir() / "tritonserver"
    root = root or pathlib.Path(tempfile.gettempdir()) / f"clickmask-backends-{os.getuid()}"
    target = root / "python"
    target.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = list((tritondir / "backends" / "python").glob("*"))
    stub = tritondir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerStartError(f"nvidia-pytriton carries no Python-backend stub for Python {version}")
    for source in sources + [stub]:
        if source.name == "__pycache__":
            continue
        link = target / source.name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        link.symlink_to(source)
    return root


def server_environment() -> dict[str, str]:
    """Environment for tritonserver: the wheel's libs and this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    libs = _pytriton_dir().parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH", "")]))
    bindir = str(pathlib.Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    # The stub runs model.py with this interpreter's packages; one thread pool per instance.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def renice_threads(pid: int, nice: int) -> int:
    """Give every thread of process ``pid`` the nice value ``nice`` (Linux sets it per thread;
    threads started later inherit it from the thread that starts them). Child processes keep
    theirs. Returns how many threads were changed."""
    changed = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            changed += 1
        except OSError as exc:  # a thread that just ended, or a lower value refused
            LOGGER.debug("cannot renice thread %s of %d: %s", tid, pid, exc)
    LOGGER.info("tritonserver %d: %d threads at nice %d; the backend stubs keep theirs", pid, changed, nice)
    return changed


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # pragma: no cover - non-Linux
        pass


def check_model_repository(repository: pathlib.Path) -> None:
    """Fail early, with the fix, when the repository lacks the generated ONNX file."""
    if not (repository / DEFAULT_MODEL_NAME / "config.pbtxt").is_file():
        raise ServerStartError(f"{repository} holds no {DEFAULT_MODEL_NAME}/config.pbtxt; pass --model-repository DIR")
    config_text = (repository / DEFAULT_MODEL_NAME / "config.pbtxt").read_text()
    if 'backend: "python"' in config_text and '"torch-cuda"' in config_text:  # the GPU predictor's checkpoint
        if not list((repository / DEFAULT_MODEL_NAME).glob("*/*.pt")):
            raise ServerStartError(
                f"{repository}/{DEFAULT_MODEL_NAME}/1 holds no checkpoint for the torch-cuda predictor; write the "
                "repository with 'clickmask export repository --backend torch-cuda --checkpoint FILE'"
            )
    elif 'backend: "python"' in config_text:
        onnx_files = list((repository / DEFAULT_MODEL_NAME).glob("*/model.onnx"))
        if not onnx_files:
            raise ServerStartError(
                f"{repository}/{DEFAULT_MODEL_NAME}/1/model.onnx is missing; create it with "
                "'clickmask export onnx' (or 'make model')"
            )


class TritonServer:
    """One tritonserver child process; use as a context manager or call start()/stop()."""

    def __init__(self, config: ServerConfig | None = None, log_path: pathlib.Path | None = None):
        self.config = config or ServerConfig()
        self.log_path = log_path or pathlib.Path(tempfile.mkdtemp(prefix="clickmask-triton-")) / "tritonserver.log"
        self._process: subprocess.Popen | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=400)
        #: The first lines of the log too: a refused command line puts its reason first.
        self._head: list[str] = []
        self._lines_seen = 0
        self._reader: threading.Thread | None = None
        #: The key the admin APIs expect (the configured one, or a random one).
        self.admin_key = self.config.admin_key or secrets.token_urlsafe(24)
        self._stubs: set[int] = set()
        #: How many times :meth:`supervise` restarted the server.
        self.restarts = 0

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC headers that open the admin APIs: pass as ``headers=`` to tritonclient calls."""
        return {GRPC_ADMIN_KEY_HEADER: self.admin_key}

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        cfg = self.config
        backend_dir = prepare_backend_directory()
        return [
            str(find_tritonserver()),
            f"--model-repository={pathlib.Path(cfg.model_repository).resolve()}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={cfg.host}", f"--grpc-port={cfg.grpc_port}",
            f"--http-address={cfg.host}", f"--http-port={cfg.http_port}",
            f"--metrics-address={cfg.host}", f"--metrics-port={cfg.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
            "--metrics-config=summary_latencies=true",
            f"--metrics-config=summary_quantiles={SUMMARY_QUANTILES}",
            "--exit-on-error=true", "--strict-readiness=true",
            f"--log-verbose={cfg.log_verbose}",
            f"--model-control-mode={cfg.model_control_mode}",
            f"--rate-limit={cfg.rate_limit}",
            *([f"--grpc-infer-response-compression-level={cfg.grpc_response_compression}"]
              if cfg.grpc_response_compression != "none" else []),
            *self._security_args(),
            *cfg.extra_args,
        ]

    def _security_args(self) -> list[str]:
        cfg = self.config
        resolve = (lambda p: None if p is None else str(pathlib.Path(p).resolve()))
        return security_args(cfg.restricted_apis, self.admin_key, resolve(cfg.tls_cert), resolve(cfg.tls_key),
                             resolve(cfg.tls_client_ca))

    def public_command(self) -> list[str]:
        """:meth:`command` with the admin key masked, for logs."""
        return [arg.replace(self.admin_key, "***") for arg in self.command()]

    def start(self) -> "TritonServer":
        if self._process is not None:
            raise ServerStartError("this server is already started")
        _check_libpython()
        check_model_repository(pathlib.Path(self.config.model_repository))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        LOGGER.info("starting %s", " ".join(self.public_command()))
        self._tail.clear()
        self._head, self._lines_seen = [], 0
        self._process = subprocess.Popen(
            cmd, env=server_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, text=True, errors="replace",
        )
        self._reader = threading.Thread(target=self._pump_log, daemon=True, name="tritonserver-log")
        self._reader.start()
        try:
            self.wait_ready(self.config.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self._stubs = set(self.stub_pids())
        if self.config.frontend_nice:
            renice_threads(self._process.pid, self.config.frontend_nice)
        return self

    # ------------------------------------------------------------------ backend supervision
    def stub_pids(self) -> list[int]:
        """Process ids of the Python-backend stubs that this tritonserver started."""
        if self._process is None:
            return []
        parent = str(self._process.pid)
        pids = []
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = stat[stat.rindex(")") + 2:].split()[1]
                if ppid == parent and _STUB_NAME in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # the process ended while we looked
        return sorted(pids)

    def model_stub_pids(self, model: str) -> list[int]:
        """The process ids of the stubs that run ``model``, one per instance (their ``model.py``
        path names the model)."""
        marker = f"{os.sep}{model}{os.sep}"
        found = []
        for pid in self.stub_pids():
            try:
                command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(marker in part and part.endswith("model.py") for part in command):
                found.append(pid)
        return found

    def stub_pid(self, model: str) -> int | None:
        """The process id of one stub that runs ``model``, or None."""
        found = self.model_stub_pids(model)
        return found[0] if found else None

    def backend_problem(self) -> str | None:
        """Why the model cannot answer although tritonserver runs, or None when all is well."""
        if self._process is None or self._process.poll() is not None or not self._stubs:
            return None
        gone = self._stubs - set(self.stub_pids())
        if gone:
            return f"Python-backend stub process {sorted(gone)} exited; Triton will not restart it"
        return None

    def restart(self, stop_timeout_s: float = 0.0) -> None:
        """Stop and start again with the same ports and key.

        The default kills at once: with a dead stub a graceful stop waits 30 s for a model that
        cannot unload, and meanwhile answers NOT_FOUND instead of a clean UNAVAILABLE.
        """
        self.stop(timeout_s=stop_timeout_s)
        self.start()
        self.restarts += 1

    def supervise(self, stop: threading.Event, interval_s: float = 0.5) -> int | None:
        """Watch the server until ``stop`` is set; restart it when its backend stub dies.

        Returns None when stopped by ``stop``, or tritonserver's exit status when it exited
        on its own (that is left to the caller: an orchestrator restarts the whole process).
        """
        while not stop.wait(interval_s):
            code = self.poll()
            if code is not None:
                return code
            problem = self.backend_problem()
            if problem:
                LOGGER.error("%s: restarting tritonserver", problem)
                self.restart()
                LOGGER.warning("tritonserver restarted (%d restart(s) so far)", self.restarts)
        return None

    def _pump_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:  # a restart appends
            for line in self._process.stdout:
                log.write(line)
                log.flush()
                self._tail.append(line.rstrip("\n"))
                self._lines_seen += 1
                if len(self._head) < _HEAD_LINES:
                    self._head.append(line.rstrip("\n"))

    def wait_ready(self, timeout_s: float) -> None:
        """Poll Triton's readiness endpoint for the model until ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.config.http_url}/v2/models/{DEFAULT_MODEL_NAME}/ready"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                time.sleep(0.2)  # let the log pump drain
                raise ServerStartError(
                    f"tritonserver exited with status {code} before the model was ready.\n"
                    + self.relevant_log_lines()
                    + f"\nfull log: {self.log_path}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise ServerStartError(
            f"model {DEFAULT_MODEL_NAME!r} not ready after {timeout_s:.0f} s.\n"
            + self.relevant_log_lines() + f"\nfull log: {self.log_path}"
        )

    def relevant_log_lines(self, limit: int = 30) -> str:
        """Error lines from the server log (the lines that explain a failed start).

        When tritonserver refuses its command line it prints its ~400-line usage text, whose
        option descriptions mention "error"; the reason stands before or after that text, so
        then the lines outside the usage text are returned instead."""
        dropped = self._lines_seen - len(self._tail)  # lines the tail no longer holds
        lines = self._head[:max(dropped, 0)] + list(self._tail)
        if any(line.startswith("Usage: tritonserver") for line in lines):
            reason = [line for line in lines if not _is_usage_line(line)]
            return "tritonserver refused its command line:\n" + "\n".join(reason[-limit:])
        keys = ("E1", "E0", "error", "Error", "failed", "Traceback", "Exception", "UNAVAILABLE")
        lines = [line for line in self._tail if any(key in line for key in keys)]
        if not lines:
            lines = list(self._tail)[-limit:]
        return "\n".join(lines[-limit:])

    def poll(self) -> int | None:
        return None if self._process is None else self._process.poll()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGINT, then SIGKILL after ``timeout_s`` (default ``stop_timeout_s``); returns the exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        timeout_s = self.config.stop_timeout_s if timeout_s is None else timeout_s
        if process.poll() is None and timeout_s <= 0:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        elif process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning("tritonserver did not stop within %.0f s; killing it", timeout_s)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return process.returncode

    def wait(self) -> int:
        if self._process is None:
            raise ServerStartError("server not started")
        return self._process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

"""Locust load test: gRPC users that annotate like people do.

Each simulated annotator opens a :class:`~clickmask.client.session.Session` on a dataset
image, clicks where the standard clicker (:func:`~clickmask.client.clicker.next_click`) says
until the IoU with the ground truth reaches ``--target-iou`` or ``--max-clicks`` clicks were
made, thinks ``--think-min``..``--think-max`` seconds before every click, and moves on to
the next image. Every click goes through the client library (zoom-in, disk encoding,
previous mask, decoding), so a click's response time is what an integration waits for
``Session.click``. Clicks are reported to Locust as request type ``grpc`` named by their
index in the object (``click 01``, ``click 02``, ...): the first click of an object sees the
whole image, later ones the zoom-in crop.

Run it through ``clickmask loadtest`` (which also gates on p95 and failures), or directly::

    locust -f benchmarks/locustfile.py --headless -u 8 -r 4 -t 60s --host 127.0.0.1:8001 \\
        --dataset ../shared/datasets/GrabCut --think-min 1 --think-max 3

The options also come from the environment (``CLICKMASK_LOADTEST_DATASET``,
``CLICKMASK_LOADTEST_THINK_MIN``, ...), as any Locust option does.
"""
from __future__ import annotations

# gRPC must cooperate with gevent before any channel exists: locust has monkey-patched the
# standard library when it imports this file, and init_gevent() is to come after that.
import grpc.experimental.gevent as grpc_gevent  # isort: skip

grpc_gevent.init_gevent()

import logging  # noqa: E402
import pathlib  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from locust import User, events, task  # noqa: E402

from clickmask.benchmarks.loadtest import WIRE_LINE  # noqa: E402
from clickmask.client import Client, ClickmaskError  # noqa: E402
from clickmask.client.protocol import ProtocolRun  # noqa: E402
from clickmask.datasets import default_root  # noqa: E402

LOGGER = logging.getLogger("clickmask.locustfile")
DEFAULT_DATASET = default_root() / "GrabCut"
REQUEST_TYPE = "grpc"


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    group = parser.add_argument_group("clickmask annotators")
    group.add_argument("--dataset", type=str, default=str(DEFAULT_DATASET), env_var="CLICKMASK_LOADTEST_DATASET",
                       help="dataset folder: images/<id>.<ext> and masks/<id>.png (default: GrabCut)")
    group.add_argument("--images", type=int, default=0, env_var="CLICKMASK_LOADTEST_IMAGES",
                       help="use the first N samples only (0: all)")
    group.add_argument("--think-min", type=float, default=1.0, env_var="CLICKMASK_LOADTEST_THINK_MIN",
                       help="shortest think time before a click, seconds")
    group.add_argument("--think-max", type=float, default=3.0, env_var="CLICKMASK_LOADTEST_THINK_MAX",
                       help="longest think time before a click, seconds")
    group.add_argument("--max-clicks", type=int, default=10, env_var="CLICKMASK_LOADTEST_MAX_CLICKS",
                       help="clicks per object at most before moving to the next image")
    group.add_argument("--target-iou", type=float, default=0.9, env_var="CLICKMASK_LOADTEST_TARGET_IOU",
                       help="an object is done when its IoU reaches this")
    group.add_argument("--click-timeout", type=float, default=30.0, env_var="CLICKMASK_LOADTEST_CLICK_TIMEOUT",
                       help="gRPC deadline of one click, seconds (a deadline hit is a failure)")


class _Workload:
    """Images and ground truth, read once per process so disk time stays out of the timings."""

    _lock = threading.Lock()
    _items: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] | None = None

    @classmethod
    def get(cls, dataset: str, limit: int):
        with cls._lock:
            if cls._items is None:
                from clickmask.datasets import list_objects, load_object  # noqa: PLC0415

                items = []
                for obj in list_objects(pathlib.Path(dataset), limit=limit or None):
                    items.append((obj.key, *load_object(obj)))
                LOGGER.info("annotators work on %d samples of %s", len(items), dataset)
                cls._items = items
            return cls._items


@events.init.add_listener
def _check_options(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None:  # started from a library call, not the locust command line
        return
    problems = []
    if not 0 <= options.think_min <= options.think_max:
        problems.append(f"need 0 <= --think-min <= --think-max, got {options.think_min} and {options.think_max}")
    if options.max_clicks < 1:
        problems.append(f"--max-clicks must be >= 1, got {options.max_clicks}")
    if not 0 < options.target_iou <= 1:
        problems.append(f"--target-iou must be in (0, 1], got {options.target_iou}")
    if not environment.host or "://" in environment.host:
        problems.append(f"--host must be Triton's gRPC address as HOST:PORT (no scheme), got {environment.host!r}")
    if problems:
        raise SystemExit("clickmask locustfile: " + "; ".join(problems))
    _Workload.get(options.dataset, options.images)  # fail now, not in every user


#: How the users' clients sent their tensors ("shm", "message", "compact"), counted at their stop.
WIRE_USED: dict[str, int] = {}


@events.quitting.add_listener
def _report_wire(**_kwargs) -> None:
    """One line for locust.out (``loadtest`` reads it back into its summary)."""
    if WIRE_USED:
        print(WIRE_LINE, " ".join(f"{k}={v}" for k, v in sorted(WIRE_USED.items())), flush=True)


class Annotator(User):
    """One person annotating objects one after the other, a click every think time."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.options = options
        self.workload = _Workload.get(options.dataset, options.images)
        self.client = Client(self.host, timeout_s=options.click_timeout, retries=0)
        self.next_index = random.randrange(len(self.workload))
        self.session = None

    def on_stop(self) -> None:
        path = "shm" if self.client.shared_memory else "compact" if self.client.compact else "message"
        WIRE_USED[path] = WIRE_USED.get(path, 0) + 1
        self.client.close()

    def wait_time(self) -> float:
        return random.uniform(self.options.think_min, self.options.think_max)

    def _open_next(self) -> None:
        sample_id, image, gt, ignore = self.workload[self.next_index % len(self.workload)]
        self.next_index += 1
        self.sample_id = sample_id
        self.session = self.client.session(image)
        self.run = ProtocolRun(self.session, gt, ignore, max_clicks=self.options.max_clicks,
                               stop_iou=self.options.target_iou)

    @task
    def click(self) -> None:
        """One click of the current object; the next object starts when this one is done."""
        if self.session is None:
            try:
                self._open_next()
            except ClickmaskError as error:  # the server did not say what S is
                self._report("open session", 0.0, error)
                self.session = None
                return
        click = self.run.intended()
        if click is None:  # nothing left to correct
            self.session = None
            return
        index = len(self.session.clicks) + 1
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            self.run.step(click)
        except ClickmaskError as exc:
            error = exc
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._report(f"click {index:02d}", elapsed_ms, error, response_length=0 if error else self.client.size ** 2)
        if error is not None:
            self.session = None  # a person would start over on this object; we move on
            return
        if self.run.done:
            self.session = None

    def _report(self, name: str, response_time_ms: float, error: BaseException | None, response_length: int = 0):
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=name, response_time=response_time_ms, response_length=response_length,
            exception=error, context={"sample": getattr(self, "sample_id", None)},
        )

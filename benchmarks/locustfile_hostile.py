"""Locust annotators for the hostile-load benchmark, with a per-click log.

The users are the standard annotators of ``benchmarks/locustfile.py`` (same options, same
think time, same clicker, same client library), unchanged. What this file adds is
``--click-log FILE``: one CSV line per finished request with the wall-clock time it started,
so ``benchmarks/hostile.py`` can split the clicks by phase (quiet, attacked, recovery) from
one continuous Locust run. A click task that does not end normally (still in flight when
Locust stops, or an unexpected exception) is written as an ``unfinished`` line, so a click
that hung is not silently dropped.

Run it through ``python -m clickmask.benchmarks.hostile``; directly::

    locust -f benchmarks/locustfile_hostile.py --headless -u 8 -r 2 -t 60s --host 127.0.0.1:8001 \\
        --click-log clicks.csv
"""
from __future__ import annotations

# Importing the standard locustfile first sets gRPC up for gevent (it must come before any
# channel exists) and registers its command line options and checks.
from clickmask.benchmarks import locustfile as _standard  # isort: skip

import csv  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from locust import events, task  # noqa: E402

#: Columns of the click log.
CLICK_LOG_COLUMNS = ("event", "started", "ms", "name", "ok", "error")

_log_lock = threading.Lock()
_log_state: dict = {"handle": None, "writer": None}


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument("--click-log", type=str, default="", env_var="CLICKMASK_HOSTILE_CLICK_LOG",
                        help="CSV file: one line per request with its wall-clock start (hostile benchmark)")


@events.init.add_listener
def _open_log(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None or not options.click_log:
        return
    handle = open(options.click_log, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed on quit
    writer = csv.writer(handle)
    writer.writerow(CLICK_LOG_COLUMNS)
    handle.flush()
    _log_state.update(handle=handle, writer=writer)


def _write(row) -> None:
    with _log_lock:
        writer = _log_state["writer"]
        if writer is not None:
            writer.writerow(row)
            _log_state["handle"].flush()


@events.request.add_listener
def _log_request(request_type, name, response_time, response_length, exception=None, **_kwargs) -> None:
    ended = time.time()
    started = ended - (response_time or 0.0) / 1000.0
    error = "" if exception is None else f"{type(exception).__name__}: {exception}".replace("\n", " ")[:300]
    _write(("done", f"{started:.6f}", f"{response_time or 0.0:.3f}", name, int(exception is None), error))


@events.quitting.add_listener
def _close_log(**_kwargs) -> None:
    with _log_lock:
        handle = _log_state["handle"]
        _log_state.update(handle=None, writer=None)
    if handle is not None:
        handle.close()


class HostileAnnotator(_standard.Annotator):
    """The standard annotator; a click task that does not end normally is logged as unfinished."""

    @task
    def click(self) -> None:  # noqa: D102 - the standard annotator's click
        started = time.time()
        try:
            super().click()
        except BaseException as exc:  # GreenletExit when Locust stops mid-click, or a bug: no request event
            _write(("unfinished", f"{started:.6f}", f"{(time.time() - started) * 1000.0:.3f}", "click", 0,
                    f"{type(exc).__name__}: click did not finish"))
            raise


# Locust's metaclass adds a subclass's tasks to its base's: keep only the tracked one.
HostileAnnotator.tasks = [HostileAnnotator.click]

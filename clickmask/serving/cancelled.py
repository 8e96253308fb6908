"""Requests whose caller has gone: answered at once, the network does not run for them.

Without a queue policy (the embedded default since session 13, ``docs/reliability.md``) a
request waits in Triton's queue for as long as its client's deadline allows. When the deadline
passes, or the client hangs up, Triton's gRPC front end marks the request cancelled; the
Python-backend adapters then answer it with an error instead of computing a mask nobody reads,
so an overloaded server spends its cores on the requests still awaited. Pure logic, tested
without a server; the adapters pass Triton's request objects and their own response factory.

Asking Triton whether a request was cancelled is one round trip from the stub to tritonserver
(~0.15 ms a request on the 2-core CPU, more than the rest of the adapter's own work). A request
can only have waited while every instance was busy, and the instance that then takes it has just
finished its previous execute; :class:`WaitWatch` skips the question when this instance had been
idle for a while, which is the case of every lone click on a quiet server.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence, TypeVar

Request = TypeVar("Request")
Response = TypeVar("Response")

MESSAGE = ("request cancelled before it ran: the client's deadline passed or it hung up while the request "
           "waited in the queue; the network did not run for it (raise the client's timeout_s, or add replicas "
           "if this happens under normal load)")


def is_cancelled(request) -> bool:
    """Triton's ``InferenceRequest.is_cancelled()`` (Python backend 23.10+); False where absent."""
    check = getattr(request, "is_cancelled", None)
    return bool(check()) if callable(check) else False


def response(pb_utils):
    """The error response of a cancelled request, from the adapter's ``triton_python_backend_utils``
    (CANCELLED where the backend has the code, else UNAVAILABLE)."""
    code = getattr(pb_utils.TritonError, "CANCELLED", pb_utils.TritonError.UNAVAILABLE)
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(MESSAGE, code))


#: An instance that finished its last execute longer ago than this was free when its next
#: requests arrived, so they were dispatched at once (a batcher's queue delay aside, well below it).
IDLE_S = 0.05


class WaitWatch:
    """Whether the requests of one model instance's ``execute`` may have waited in Triton's queue.

    Triton hands a request to a free instance at once; a request waits only while every instance
    is busy, and the instance that then takes it starts right after finishing its previous
    execute. So requests that reach an instance idle for more than ``idle_s`` have not waited,
    and their cancellation need not be asked. Under a CPU overload an instance's thread may be
    descheduled longer than ``idle_s`` between two executes: then a request whose client left is
    computed for nothing, which costs time and loses nothing.
    """

    def __init__(self, idle_s: float = IDLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._finished: float | None = None

    def may_have_waited(self) -> bool:
        """True before the first execute and when the last one finished less than ``idle_s`` ago."""
        return self._finished is None or self._clock() - self._finished < self.idle_s

    def finished(self) -> None:
        """Call when an execute returns its responses."""
        self._finished = self._clock()


def answer_live(requests: Sequence[Request], run: Callable[[list[Request]], list[Response]],
                cancelled: Callable[[], Response], check: bool = True) -> tuple[list[Response], int]:
    """``run`` on the requests still awaited, ``cancelled()`` for the others, in request order;
    and how many were cancelled. ``run`` is not called when every request was cancelled.
    ``check=False`` runs them all without asking (see :class:`WaitWatch`)."""
    if not check:
        return run(list(requests)), 0
    flags = [is_cancelled(request) for request in requests]
    skipped = sum(flags)
    if not skipped:
        return run(list(requests)), 0
    live = [request for request, gone in zip(requests, flags) if not gone]
    answers = run(live) if live else []
    if len(answers) != len(live):
        raise RuntimeError(f"run answered {len(answers)} of {len(live)} requests")
    it = iter(answers)
    return [cancelled() if gone else next(it) for gone in flags], skipped

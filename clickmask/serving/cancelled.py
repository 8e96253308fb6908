"""Requests whose caller has gone: answered at once, the network does not run for them.

Without a queue policy (the embedded default since session 13, ``docs/reliability.md``) a
request waits in Triton's queue for as long as its client's deadline allows. When the deadline
passes, or the client hangs up, Triton's gRPC front end marks the request cancelled; the
Python-backend adapters then answer it with an error instead of computing a mask nobody reads,
so an overloaded server spends its cores on the requests still awaited. Pure logic, tested
without a server; the adapters pass Triton's request objects and their own response factory.
"""
from __future__ import annotations

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


def answer_live(requests: Sequence[Request], run: Callable[[list[Request]], list[Response]],
                cancelled: Callable[[], Response]) -> tuple[list[Response], int]:
    """``run`` on the requests still awaited, ``cancelled()`` for the others, in request order;
    and how many were cancelled. ``run`` is not called when every request was cancelled."""
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

"""Exceptions raised by :mod:`clickmask.client`.

Every error the library raises derives from :class:`ClickmaskError`, so callers can catch one
type. Errors coming from gRPC (``grpc.RpcError``) or tritonclient
(``InferenceServerException``) are translated at the boundary by :func:`translate_grpc_error`
and raised ``from`` the original, so the cause stays in the traceback.
"""

from __future__ import annotations

__all__ = [
    "ClickmaskError",
    "InvalidInputError",
    "ServerUnavailableError",
    "ServerOverloadedError",
    "PermissionDeniedError",
    "DeadlineExceededError",
    "ModelNotReadyError",
    "InferenceError",
    "translate_grpc_error",
]


class ClickmaskError(Exception):
    """Root of every error raised by clickmask."""


class InvalidInputError(ClickmaskError, ValueError):
    """The caller passed a value the library cannot use; the message says how to fix it."""


class ServerUnavailableError(ClickmaskError):
    """The server could not be reached (gRPC UNAVAILABLE), after the configured retries."""


class ServerOverloadedError(ServerUnavailableError):
    """The server refused the request because its queue is full or the request waited too long.

    Triton answers UNAVAILABLE ("Exceeds maximum queue size", "Request timeout expired") when
    the model's queue policy rejects a request. The client retries it like any UNAVAILABLE,
    with jittered backoff and within the call's deadline, so a burst is spread out instead of
    coming straight back.
    """


class PermissionDeniedError(ClickmaskError, PermissionError):
    """The server refused an API that is restricted to holders of the admin key (never retried)."""


class DeadlineExceededError(ClickmaskError, TimeoutError):
    """The request did not finish within its deadline (gRPC DEADLINE_EXCEEDED)."""


class ModelNotReadyError(ClickmaskError):
    """The server is up but the model is unknown, not loaded, or not ready.

    ``transient`` is True when the model exists but has no loaded version right now (the
    server is starting, stopping or reloading it); the client retries those like UNAVAILABLE.
    """

    def __init__(self, *args: object, transient: bool = False) -> None:
        super().__init__(*args)
        self.transient = transient


class InferenceError(ClickmaskError):
    """The server rejected the request or failed while running it."""


# Phrases Triton uses when a model is missing or not (yet) loaded, whatever the status code.
# ... of which these mean "exists, but no version is loaded at the moment" (a restart, a reload).
_TRANSIENT_NOT_READY_PHRASES = ("no available versions", "not ready", "is not loaded")
_MODEL_NOT_READY_PHRASES = (
    "unknown model",
    "is not found",
    "not ready",
    "no available versions",
    "is not loaded",
    "unavailable model",
)


# Triton's queue policy (max_queue_size, default_timeout_microseconds with REJECT).
_OVERLOAD_PHRASES = ("exceeds maximum queue size", "request timeout expired")
# The Python backend's stub process died; Triton 2.51 does not restart it by itself.
_BACKEND_CRASH_PHRASES = ("stub process", "not healthy")
# --grpc-restricted-protocol answers UNAVAILABLE with this message; it is no outage.
_RESTRICTED_PHRASES = ("protocol is restricted",)


def _status_name(error: BaseException) -> str:
    """Return the gRPC status name (``"UNAVAILABLE"``) of a gRPC or tritonclient error."""
    status = None
    code = getattr(error, "code", None)
    if callable(code):  # grpc.RpcError / grpc.aio.AioRpcError
        try:
            status = code()
        except Exception:  # noqa: BLE001 - a broken error object must not hide the original
            status = None
    if status is None:
        status_fn = getattr(error, "status", None)  # tritonclient InferenceServerException
        status = status_fn() if callable(status_fn) else None
    if status is None:
        return ""
    name = getattr(status, "name", None) or str(status)
    return name.rsplit(".", 1)[-1].upper()  # "StatusCode.UNAVAILABLE" -> "UNAVAILABLE"


def _message(error: BaseException) -> str:
    for attr in ("message", "details"):
        fn = getattr(error, attr, None)
        if callable(fn):
            try:
                text = fn()
            except Exception:  # noqa: BLE001
                text = None
            if text:
                return str(text)
    return str(error)


def translate_grpc_error(error: BaseException, *, model_name: str = "", url: str = "") -> ClickmaskError:
    """Map a gRPC/tritonclient error to the matching :class:`ClickmaskError` subclass.

    The caller raises the result ``from error``. Mapping: UNAVAILABLE ->
    :class:`ServerUnavailableError` (:class:`ServerOverloadedError` for a queue-policy rejection;
    a crashed Python-backend stub counts as unavailable too), a restricted API ->
    :class:`PermissionDeniedError`, DEADLINE_EXCEEDED -> :class:`DeadlineExceededError`,
    NOT_FOUND or a "model not ready / unknown model" message -> :class:`ModelNotReadyError`,
    anything else (INVALID_ARGUMENT, INTERNAL, ...) -> :class:`InferenceError`.
    """
    status = _status_name(error)
    message = _message(error)
    where = f" (model {model_name!r} at {url})" if model_name or url else ""
    text = f"{status or type(error).__name__}: {message}{where}"
    lowered = message.lower()
    if status in ("PERMISSION_DENIED", "UNAUTHENTICATED") or any(p in lowered for p in _RESTRICTED_PHRASES):
        return PermissionDeniedError(
            text + "; this API is restricted to the admin key: pass headers={'triton-grpc-protocol-"
            "<key name>': '<key>'} to the client, or ask the operator"
        )
    if status == "DEADLINE_EXCEEDED":
        return DeadlineExceededError(text + "; raise timeout_s if the server is just slow")
    if status in ("UNAVAILABLE", "RESOURCE_EXHAUSTED") and any(p in lowered for p in _OVERLOAD_PHRASES):
        return ServerOverloadedError(text + "; the server is past capacity: retry later or add replicas")
    if all(p in lowered for p in _BACKEND_CRASH_PHRASES):
        return ServerUnavailableError(
            text + "; the model's backend process died: the server must be restarted "
            "('clickmask serve' does it by itself)"
        )
    if status == "NOT_FOUND" or any(phrase in lowered for phrase in _MODEL_NOT_READY_PHRASES):
        transient = any(phrase in lowered for phrase in _TRANSIENT_NOT_READY_PHRASES)
        return ModelNotReadyError(text + "; check the model name and that the server loaded it", transient=transient)
    if status == "UNAVAILABLE":
        return ServerUnavailableError(text + "; check that tritonserver is running at this address")
    return InferenceError(text)

"""Errors of the server-side tools (launcher, serving adapter); all derive from ClickmaskError."""
from clickmask.client.errors import ClickmaskError


class ServerStartError(ClickmaskError, RuntimeError):
    """tritonserver could not be started or its model did not become ready."""


class RequestError(ClickmaskError, ValueError):
    """One inference request is malformed; it gets its own error response, the batch goes on."""


class ModelFault(ClickmaskError, RuntimeError):
    """The model failed on a request that was valid (a server-side fault, answered as INTERNAL).

    Unlike :class:`RequestError` (INVALID_ARGUMENT: the caller must fix the request), the
    request itself was fine; overload is UNAVAILABLE from a Triton queue policy where a config
    has one, or the caller's own deadline (the embedded default, ``docs/reliability.md``).
    """

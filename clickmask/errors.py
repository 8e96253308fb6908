"""Errors of the server-side tools (launcher, serving adapter); all derive from ClickmaskError."""
from clickmask.client.errors import ClickmaskError


class ServerStartError(ClickmaskError, RuntimeError):
    """tritonserver could not be started or its model did not become ready."""


class RequestError(ClickmaskError, ValueError):
    """One inference request is malformed; it gets its own error response, the batch goes on."""

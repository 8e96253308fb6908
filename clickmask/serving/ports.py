"""Free TCP ports for servers started on this machine (tests, benchmarks, the demo).

Asking the kernel for port 0, reading the number and closing the socket gives a free port,
but two such calls may return the same number, and tritonserver refuses to start when its
gRPC, HTTP and metrics ports coincide ("The server cannot listen to HTTP requests and GRPC
requests at the same address and port"). :func:`free_port` therefore never hands out a number
twice in one process.
"""
from __future__ import annotations

import socket
import threading

_GIVEN: set[int] = set()
_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1", attempts: int = 100) -> int:
    """A port nothing listens on now and that this process has not been given before."""
    with _LOCK:
        for _ in range(attempts):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _GIVEN:
                _GIVEN.add(port)
                return port
    raise OSError(f"no free port on {host} after {attempts} tries")

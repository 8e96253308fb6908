"""Ports for servers: distinct numbers, refused collisions (CI once drew one port twice and
tritonserver refused to start: "cannot listen to HTTP requests and GRPC requests at the same
address and port")."""
from __future__ import annotations

import socket

import pytest

from clickmask.errors import ServerStartError
from clickmask.serving.ports import free_port
from clickmask.serving.server import ServerConfig


def test_free_port_never_hands_out_a_number_twice_and_each_can_be_bound():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == 300
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    assert free_port() not in ports


@pytest.mark.parametrize(
    "ports, fragment",
    [
        ({"grpc_port": 9000, "http_port": 9000, "metrics_port": 9002}, "grpc_port=9000, http_port=9000"),
        ({"grpc_port": 9000, "http_port": 9001, "metrics_port": 9001}, "must differ"),
        ({"grpc_port": 0, "http_port": 9001, "metrics_port": 9002}, "grpc_port must lie in 1..65535"),
        ({"grpc_port": 9000, "http_port": 70000, "metrics_port": 9002}, "http_port must lie in 1..65535"),
    ],
)
def test_colliding_or_impossible_ports_are_refused_before_start(ports, fragment):
    with pytest.raises(ServerStartError, match=fragment):
        ServerConfig(**ports)

"""The compression options: Client(compression=...) and ServerConfig(grpc_response_compression=...)."""
from __future__ import annotations

import asyncio

import pytest

from clickmask.client import AsyncClient, Client, InvalidInputError
from clickmask.errors import ServerStartError
from clickmask.serving.server import ServerConfig, TritonServer


@pytest.mark.parametrize("compression", ["gzip", "deflate", None])
def test_the_client_accepts_gzip_deflate_or_none(compression):
    with Client("127.0.0.1:1", compression=compression) as client:
        assert client.compression == compression
        assert ("compression_algorithm" in client._infer_kwargs) == (compression is not None)
        assert "compression_algorithm" not in client._kwargs  # metadata calls stay as they were


@pytest.mark.parametrize("compression", ["zstd", "GZIP", "", 1])
def test_an_unknown_compression_is_refused_with_the_choices(compression):
    with pytest.raises(InvalidInputError, match="compression must be one of gzip, deflate or None"):
        Client("127.0.0.1:1", compression=compression)

    async def make():
        AsyncClient("127.0.0.1:1", compression=compression)

    with pytest.raises(InvalidInputError, match="gzip, deflate"):
        asyncio.run(make())


def test_response_compression_is_a_server_flag_only_when_asked_for(monkeypatch):
    monkeypatch.setattr("clickmask.serving.server.prepare_backend_directory", lambda: "/backends")
    monkeypatch.setattr("clickmask.serving.server.find_tritonserver", lambda: "/bin/tritonserver")
    plain = TritonServer(ServerConfig()).command()
    assert not any("compression" in arg for arg in plain)
    high = TritonServer(ServerConfig(grpc_response_compression="high")).command()
    assert "--grpc-infer-response-compression-level=high" in high


def test_an_unknown_response_level_is_refused():
    with pytest.raises(ServerStartError, match="none, low, medium, high"):
        ServerConfig(grpc_response_compression="max")


def test_serve_has_the_option():
    from clickmask.cli import build_parser

    args = build_parser().parse_args(["serve", "--grpc-response-compression", "low"])
    assert args.grpc_response_compression == "low"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--grpc-response-compression", "max"])


def test_the_rate_limiter_is_on_by_default_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr("clickmask.serving.server.prepare_backend_directory", lambda: "/backends")
    monkeypatch.setattr("clickmask.serving.server.find_tritonserver", lambda: "/bin/tritonserver")
    assert "--rate-limit=execution_count" in TritonServer(ServerConfig()).command()
    assert "--rate-limit=off" in TritonServer(ServerConfig(rate_limit="off")).command()
    with pytest.raises(ServerStartError, match="execution_count, off"):
        ServerConfig(rate_limit="resources")

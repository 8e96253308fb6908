"""One pytest fixture owns the real tritonserver for every integration test."""
from __future__ import annotations

import pathlib

import pytest

from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def server_config() -> ServerConfig:
    onnx = pathlib.Path(DEFAULT_MODEL_REPOSITORY) / "clickmask" / "1" / "model.onnx"
    if not onnx.is_file():
        pytest.fail(f"{onnx} is missing: run 'make model' (make test does it for you)")
    return ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                        startup_timeout_s=180.0)


@pytest.fixture(scope="session")
def triton(server_config) -> TritonServer:
    server = TritonServer(server_config)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpc_url(triton) -> str:
    return triton.config.grpc_url

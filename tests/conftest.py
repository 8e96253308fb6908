"""Shared fixtures: dataset locations, and the one real tritonserver of the integration tests."""
from __future__ import annotations

import os
import pathlib
import socket

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DATASETS = pathlib.Path(os.environ.get("CLICKMASK_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def datasets_dir() -> pathlib.Path:
    if not DATASETS.is_dir():
        pytest.fail(f"datasets not found at {DATASETS}; put ../shared beside the repo or set CLICKMASK_DATASETS")
    return DATASETS


@pytest.fixture(scope="session")
def grabcut_dir(datasets_dir) -> pathlib.Path:
    return datasets_dir / "GrabCut"

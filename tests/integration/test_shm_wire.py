"""Raw tensors through Triton's system shared memory, against real tritonservers: the same masks
as the gRPC message path, the admin key that opens it (header or environment), a refused key
(``auto`` falls back, ``shm`` fails clearly), threads sharing a client, the asyncio client, a
server restart (the regions are registered again) and nothing left behind after ``close``."""
from __future__ import annotations

import asyncio
import glob
import logging
import shutil
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clickmask.client import AsyncClient, Client, InvalidInputError, PermissionDeniedError
from clickmask.client.shm import ADMIN_KEY_ENV, GRPC_ADMIN_KEY_HEADER
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _leftovers() -> list[str]:
    """This process's client regions still in /dev/shm."""
    import os  # noqa: PLC0415

    return glob.glob(f"/dev/shm/clickmask_{os.getpid()}_*")


def _server_regions(url: str, headers: dict) -> list[str]:
    triton = grpcclient.InferenceServerClient(url)
    try:
        status = triton.get_system_shared_memory_status(headers=headers, as_json=True)
        return sorted(status.get("regions", {}))
    finally:
        triton.close()


@pytest.fixture(scope="module")
def requests_(server_config):
    """Three GrabCut objects' first-click requests (uint8 contract tensors, batch 1, full view)."""
    from clickmask.client.clicker import next_click  # noqa: PLC0415
    from clickmask.client.encoding import CropTransform, encode_inputs  # noqa: PLC0415
    from clickmask.datasets import default_root, list_objects, load_object  # noqa: PLC0415

    out = []
    for ref in list_objects(default_root() / "GrabCut", limit=3):
        image, gt, ignore = load_object(ref)
        click = next_click(gt, np.zeros_like(gt), ignore)
        height, width = image.shape[:2]
        tensors = encode_inputs(image, [click], None, CropTransform(0, 0, width, height, size=320))
        out.append({name: array[None] if array.ndim == 3 else array for name, array in tensors.items()})
    return out


@pytest.fixture(scope="module")
def reference(grpc_url, requests_):
    with Client(grpc_url, wire="raw") as client:
        return [client.infer(r) for r in requests_]


def test_shm_gives_the_raw_paths_masks_and_cleans_up(triton, grpc_url, requests_, reference):
    with Client(grpc_url, wire="shm", headers=triton.admin_headers) as client:
        for request, expected in zip(requests_, reference):
            np.testing.assert_array_equal(client.infer(request), expected)
        pair = client.infer_batch(requests_[:2])
        np.testing.assert_array_equal(pair[0], reference[0])
        np.testing.assert_array_equal(pair[1], reference[1])
        assert client.shared_memory
        assert _leftovers(), "the client should keep its regions between requests"
    assert _leftovers() == []
    assert _server_regions(grpc_url, triton.admin_headers) == []


def test_auto_takes_shared_memory_with_the_key_in_the_environment(triton, grpc_url, requests_, reference,
                                                                  monkeypatch):
    monkeypatch.setenv(ADMIN_KEY_ENV, triton.admin_key)
    with Client(grpc_url) as client:
        assert client.shared_memory
        np.testing.assert_array_equal(client.infer(requests_[0]), reference[0])
        assert client.shared_memory
        assert len(_server_regions(grpc_url, triton.admin_headers)) == 1
    assert _server_regions(grpc_url, triton.admin_headers) == []


def test_auto_without_the_key_sends_raw_tensors(grpc_url, requests_, reference, monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    with Client(grpc_url) as client:
        assert not client.shared_memory
        np.testing.assert_array_equal(client.infer(requests_[0]), reference[0])
    assert _leftovers() == []


def test_shm_without_a_key_is_refused_at_construction(grpc_url, monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    with pytest.raises(InvalidInputError, match="admin key"):
        Client(grpc_url, wire="shm")


def test_a_wrong_key_falls_back_under_auto_and_fails_clearly_under_shm(grpc_url, requests_, reference, caplog):
    wrong = {GRPC_ADMIN_KEY_HEADER: "not-the-key"}
    with caplog.at_level(logging.WARNING), Client(grpc_url, headers=wrong) as client:
        assert client.shared_memory  # not known before the server answers
        np.testing.assert_array_equal(client.infer(requests_[0]), reference[0])
        assert not client.shared_memory
        np.testing.assert_array_equal(client.infer(requests_[1]), reference[1])
    assert "refused shared memory" in caplog.text
    with Client(grpc_url, wire="shm", headers=wrong) as client:
        with pytest.raises(PermissionDeniedError, match="admin key"):
            client.infer(requests_[0])
    assert _leftovers() == []


def test_threads_share_one_shm_client(triton, grpc_url, requests_, reference):
    errors: list[BaseException] = []
    with Client(grpc_url, wire="shm", headers=triton.admin_headers) as client:
        def work(offset: int) -> None:
            try:
                for i in range(6):
                    k = (offset + i) % len(requests_)
                    np.testing.assert_array_equal(client.infer(requests_[k]), reference[k])
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert 1 <= len(_server_regions(grpc_url, triton.admin_headers)) <= 4
    assert _leftovers() == []
    assert _server_regions(grpc_url, triton.admin_headers) == []


def test_async_client_over_shared_memory(triton, grpc_url, requests_, reference):
    async def run() -> list[np.ndarray]:
        async with AsyncClient(grpc_url, wire="shm", headers=triton.admin_headers) as client:
            out = await asyncio.gather(*(client.infer(r) for r in requests_))
            assert client.shared_memory
            return out

    for got, expected in zip(asyncio.run(run()), reference):
        np.testing.assert_array_equal(got, expected)
    assert _leftovers() == []
    assert _server_regions(grpc_url, triton.admin_headers) == []


def test_regions_are_registered_again_after_a_restart(tmp_path, requests_, reference):
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo, ignore=shutil.ignore_patterns("__pycache__"))
    config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), startup_timeout_s=240.0)
    with TritonServer(config) as server:
        with Client(config.grpc_url, wire="shm", headers=server.admin_headers, retries=3) as client:
            np.testing.assert_array_equal(client.infer(requests_[0]), reference[0])
            server.restart()
            assert _server_regions(config.grpc_url, server.admin_headers) == []
            np.testing.assert_array_equal(client.infer(requests_[1]), reference[1])
            assert client.shared_memory
            assert len(_server_regions(config.grpc_url, server.admin_headers)) == 1
        assert _server_regions(config.grpc_url, server.admin_headers) == []
    assert _leftovers() == []

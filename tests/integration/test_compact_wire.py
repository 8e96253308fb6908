"""The compact wire entry against real tritonservers: bit-identical masks, cache misses after a
restart, an eviction and a replica that never saw the crop, refused malformed requests (the
server keeps serving), the raw fallback, and the Prometheus metrics."""
from __future__ import annotations

import shutil
import socket
import threading
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import Client
from clickmask.client.compact import COMPACT_MODEL, crop_key, encode_png, pack_clicks
from clickmask.client.protocol import run_protocol
from clickmask.datasets import list_objects, load_object
from clickmask.export.model_config import Contract, compact_config
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port

S = 320
CROP = 3 * S * S


def _config(repo):
    return ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                        metrics_port=free_port(), startup_timeout_s=240.0)


@pytest.fixture(scope="module")
def small_cache_repo(tmp_path_factory):
    """The embedded repository with room for two crops in the compact entry's cache."""
    repo = tmp_path_factory.mktemp("compact") / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo)
    (repo / COMPACT_MODEL / "config.pbtxt").write_text(compact_config(Contract(S), cache_bytes=2 * CROP + 100))
    return repo


class SwitchingProxy:
    """A loopback TCP proxy whose target can change; switching drops the open connections, so
    the client's next call reaches the other server (two replicas behind one address)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.close()
            except OSError:
                pass

    def switch(self, target: int) -> None:
        self.target = target
        for sock in self._open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._open.clear()

    def close(self) -> None:
        self._listener.close()
        self.switch(self.target)


def _objects(grabcut_dir, count):
    return [load_object(o) for o in list_objects(grabcut_dir)[:count]]


def _clicks(client, image, gt, ignore, clicks=3, **passes):
    result = run_protocol(client.session(image, **passes), gt, ignore, max_clicks=clicks)
    return result.ious, result.clicks  # the same clicks and IoUs to the last bit


def test_compact_and_raw_give_the_same_protocol_run(grpc_url, grabcut_dir):
    with Client(grpc_url, wire="raw") as raw, Client(grpc_url, wire="compact") as compact:
        for image, gt, ignore in _objects(grabcut_dir, 2):
            for passes in ({"flip": False, "refine": False}, {"flip": True, "refine": True}):
                assert _clicks(raw, image, gt, ignore, 4, **passes) == _clicks(compact, image, gt, ignore, 4, **passes)
        assert compact.compact is True and raw.compact is False


def test_a_restart_an_eviction_and_a_replica_that_never_saw_the_crop_each_cost_one_resend(
        small_cache_repo, grabcut_dir):
    (image, gt, ignore), (image2, gt2, ignore2), (image3, gt3, ignore3) = _objects(grabcut_dir, 3)
    config_a, config_b = _config(small_cache_repo), _config(small_cache_repo)
    with TritonServer(config_a) as a, TritonServer(config_b):
        proxy = SwitchingProxy(config_a.grpc_port)
        try:
            with Client(f"127.0.0.1:{proxy.port}", retries=5, wire="compact") as client, Client(config_a.grpc_url, wire="raw") as raw:
                session = client.session(image, flip=False, refine=False)
                reference = raw.session(image, flip=False, refine=False)

                def click(x, y):
                    assert np.array_equal(session.click(x, y).array, reference.click(x, y).array)
                    history = session.history
                    assert history[-1].crop == history[-2].crop, "the zoom-in crop moved: pick other clicks"

                assert np.array_equal(session.click(300, 200).array, reference.click(300, 200).array)
                assert np.array_equal(session.click(310, 210).array, reference.click(310, 210).array)
                assert client.crop_resends == 0
                # another replica: it never saw the crop this click names
                proxy.switch(config_b.grpc_port)
                click(305, 205)
                assert client.crop_resends == 1
                # a restart of the first replica: its cache is empty again
                a.stop()
                a.start()
                proxy.switch(config_a.grpc_port)
                click(300, 210)
                assert client.crop_resends == 2
                # an eviction: two other objects' crops through a cache that holds two
                for other, other_gt, other_ignore in ((image2, gt2, ignore2), (image3, gt3, ignore3)):
                    _clicks(client, other, other_gt, other_ignore, 2, flip=False, refine=False)
                before = client.crop_resends
                click(305, 200)
                assert client.crop_resends == before + 1
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{config_a.metrics_port}/metrics").read().decode()
                evictions = [line for line in metrics.splitlines()
                             if line.startswith("clickmask_compact_cache_evictions_total")]
                assert evictions and float(evictions[0].split()[-1]) >= 1
        finally:
            proxy.close()


def _compact_inputs(fields):
    inputs = []
    for name, value in fields.items():
        tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("change, message", [
    ({"crop_key": b"0" * 32}, "does not match crop_key"),
    ({"crop_key": b"not-a-key"}, "32 lowercase hex"),
    ({"clicks": b"\x78\x9c garbage"}, "input 'clicks'"),
    ({"prev_mask": b"\x89PNG broken"}, "input 'prev_mask' must be a PNG"),
    ({"crop": b"JFIF not a png"}, "input 'crop' must be a PNG"),
    ({"flip": b"-1x3"}, "input 'flip'"),
])
def test_malformed_compact_requests_are_invalid_argument_and_the_server_keeps_serving(grpc_url, change, message):
    image = np.random.default_rng(0).integers(0, 256, (3, S, S), dtype=np.uint8)
    clicks = np.zeros((2, S, S), np.uint8)
    clicks[0, 100:110, 100:110] = 1
    good = {"crop_key": crop_key(image).encode(), "crop": encode_png(image), "clicks": pack_clicks(clicks),
            "prev_mask": b"", "flip": b""}
    triton = grpcclient.InferenceServerClient(grpc_url)
    try:
        with pytest.raises(InferenceServerException) as caught:
            triton.infer(COMPACT_MODEL, _compact_inputs({**good, **change}))
        assert "INVALID_ARG" in str(caught.value.status()) and message in caught.value.message()
        answer = triton.infer(COMPACT_MODEL, _compact_inputs(good)).as_numpy("mask")
        assert answer.shape == (1, 1) and bytes(answer[0, 0]).startswith(b"\x89PNG")
    finally:
        triton.close()


def test_a_server_without_the_compact_entry_gets_raw_tensors(tmp_path, grabcut_dir, monkeypatch):
    import clickmask.client.grpc_client as grpc_client

    monkeypatch.setattr(grpc_client, "is_loopback", lambda url: False)  # as if the server were remote
    repo = tmp_path / "raw-only"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clickmask", repo / "clickmask")
    config = _config(repo)
    (image, gt, ignore), = _objects(grabcut_dir, 1)
    with TritonServer(config), Client(config.grpc_url) as client:
        _clicks(client, image, gt, ignore, 2, flip=True, refine=False)
        assert client.compact is False
        with Client(config.grpc_url, wire="compact") as strict:
            with pytest.raises(Exception, match="serves no ready clickmask_compact"):
                strict.session(image).click(100, 100)


def test_the_async_client_takes_the_compact_path_too(grpc_url, grabcut_dir):
    import asyncio

    from clickmask.client import AsyncClient

    (image, _, _), = _objects(grabcut_dir, 1)

    async def masks(wire):
        async with AsyncClient(grpc_url, wire=wire) as client:
            session = await client.session(image, flip=True, refine=True)
            first = (await session.click(300, 200)).array
            second = (await session.click(320, 220)).array
            return first, second, client.compact

    raw, compact = asyncio.run(masks("raw")), asyncio.run(masks("compact"))
    assert compact[2] is True and raw[2] is False
    assert np.array_equal(raw[0], compact[0]) and np.array_equal(raw[1], compact[1])


def test_the_bls_mode_calls_the_raw_model_and_gives_the_same_masks(tmp_path, grabcut_dir):
    """``network: bls`` (the entry in front of another backend's raw model) instead of inline."""
    repo = tmp_path / "bls"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo)
    (repo / COMPACT_MODEL / "config.pbtxt").write_text(compact_config(Contract(S), inline=False))
    config = _config(repo)
    (image, gt, ignore), = _objects(grabcut_dir, 1)
    with TritonServer(config), Client(config.grpc_url, wire="compact") as compact, \
            Client(config.grpc_url, wire="raw") as raw:
        for passes in ({"flip": False, "refine": False}, {"flip": True, "refine": True}):
            assert _clicks(raw, image, gt, ignore, 3, **passes) == _clicks(compact, image, gt, ignore, 3, **passes)
        statistics = grpcclient.InferenceServerClient(config.grpc_url).get_inference_statistics("clickmask")
        assert statistics.model_stats[0].inference_count > 0  # the raw model ran the compact requests too


def test_auto_takes_the_compact_entry_off_this_machine_and_raw_tensors_over_loopback(grpc_url, monkeypatch):
    import clickmask.client.grpc_client as grpc_client

    assert grpc_client.is_loopback("127.0.0.1:8001") and grpc_client.is_loopback("localhost:8001")
    assert grpc_client.is_loopback("[::1]:8001") and not grpc_client.is_loopback("10.0.0.5:8001")
    with Client(grpc_url) as local:
        assert local.compact is False  # decided without asking: bytes are free here
    monkeypatch.setattr(grpc_client, "is_loopback", lambda url: False)
    with Client(grpc_url) as remote:
        image = np.zeros((64, 80, 3), np.uint8)
        remote.session(image).click(40, 30)
        assert remote.compact is True

"""End to end through a real tritonserver over real gRPC (the fixture in conftest.py owns it)."""
from __future__ import annotations

import concurrent.futures
import pathlib
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import Client
from clickmask.client.clicker import load_gt, next_click
from clickmask.export.model_config import Contract, python_config
from clickmask.imageio import read_mask, read_rgb
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY, ServerConfig, TritonServer

from ..conftest import free_port

S_INPUTS = {"image": 3, "clicks": 2, "prev_mask": 1}


def _raw_inputs(size, batch=1, dtype=np.uint8, skip=(), shapes=None, fill=0):
    inputs = []
    for name, channels in S_INPUTS.items():
        if name in skip:
            continue
        shape = (shapes or {}).get(name, [batch, channels, size, size])
        array = np.full(shape, fill, dtype=dtype if name == "image" else np.uint8)
        tensor = grpcclient.InferInput(name, list(array.shape), "UINT8" if array.dtype == np.uint8 else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _stats(url):
    raw = grpcclient.InferenceServerClient(url)
    stats = raw.get_inference_statistics("clickmask").model_stats[0]
    raw.close()
    return stats.inference_count, stats.execution_count


def _settled_stats(url, quiet_s: float = 1.0, timeout_s: float = 20.0):
    """Statistics once no inference has been counted for ``quiet_s``: a request an earlier test
    gave up on (a client deadline) may still be running on the server and be counted late."""
    last, since = _stats(url), time.monotonic()
    deadline = since + timeout_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.1)
        current = _stats(url)
        if current != last:
            last, since = current, time.monotonic()
    return last


def _grabcut_sample(grabcut_dir: pathlib.Path, index: int = 0):
    images = sorted((grabcut_dir / "images").iterdir())
    image_path = images[index]
    return read_rgb(image_path), read_mask(grabcut_dir / "masks" / f"{image_path.stem}.png")


def test_client_learns_input_size_from_the_model_config(grpc_url):
    with Client(grpc_url) as client:
        assert client.size == 320


def test_session_of_several_clicks_returns_full_resolution_masks(grpc_url, grabcut_dir):
    image, raw_mask = _grabcut_sample(grabcut_dir, 3)
    gt, ignore = load_gt(raw_mask)
    with Client(grpc_url) as client:
        session = client.session(image)
        pred = np.zeros(gt.shape, bool)
        for _ in range(4):
            click = next_click(gt, pred, ignore, previous=session.clicks)
            assert click is not None
            mask = session.click(x=click.x, y=click.y, positive=click.positive)
            assert mask.array.shape == image.shape[:2]
            assert mask.array.dtype == bool
            pred = mask.array
        assert len(session.clicks) == 4
        assert len(session.history) == 4
        session.undo()
        assert len(session.clicks) == 3


@pytest.fixture(scope="module")
def batching_url(tmp_path_factory):
    """The embedded model with Triton's dynamic batcher (``--dynamic-batching``; the shipped
    config runs each request alone since session 13), on a server of its own."""
    import shutil  # noqa: PLC0415

    repo = tmp_path_factory.mktemp("batching-repo")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "clickmask", repo / "clickmask",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "clickmask" / "config.pbtxt").write_text(python_config(Contract(320), dynamic_batching=True))
    config = ServerConfig(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                          metrics_port=free_port(), startup_timeout_s=180.0)
    with TritonServer(config) as server:
        yield server.config.grpc_url


def test_concurrent_clients_are_batched_by_triton(batching_url, grabcut_dir):
    grpc_url = batching_url
    image, _ = _grabcut_sample(grabcut_dir, 5)
    before_inferences, before_executions = _settled_stats(grpc_url)

    def annotate(offset: int) -> int:
        with Client(grpc_url, retries=0) as client:  # a retried click would count twice: fail instead
            session = client.session(image, flip=False, refine=False)  # one request of one image a click
            for k in range(3):
                session.click(x=100 + 10 * offset % 200, y=80 + 7 * k, positive=True)
            return len(session.clicks)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(annotate, range(16))) == 48
    deadline = time.monotonic() + 5  # Triton updates its statistics just after answering
    while True:
        inferences, executions = _stats(grpc_url)
        inferences -= before_inferences
        executions -= before_executions
        if inferences >= 48 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert inferences == 48
    assert executions < inferences, f"no batching: {executions} executions for {inferences} inferences"


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"dtype": np.float32}, "image"),
        ({"shapes": {"clicks": [1, 2, 100, 100]}}, "clicks"),
        ({"skip": ("prev_mask",)}, "prev_mask"),
    ],
    ids=["wrong-dtype", "wrong-shape", "missing-input"],
)
def test_malformed_raw_request_gets_a_clear_error_and_the_server_keeps_answering(grpc_url, kwargs, phrase):
    raw = grpcclient.InferenceServerClient(grpc_url)
    with pytest.raises(InferenceServerException) as info:
        raw.infer("clickmask", _raw_inputs(320, **kwargs))
    assert phrase in str(info.value)
    ok = raw.infer("clickmask", _raw_inputs(320))
    assert ok.as_numpy("mask_prob").shape == (1, 1, 320, 320)
    raw.close()


def test_bad_request_in_a_batch_fails_alone(grpc_url):
    """Clicks outside 0/1 are refused by the adapter; concurrent good requests still succeed."""
    def send(bad: bool):
        raw = grpcclient.InferenceServerClient(grpc_url)
        try:
            inputs = _raw_inputs(320)
            if bad:
                inputs[1].set_data_from_numpy(np.full((1, 2, 320, 320), 9, np.uint8))
            return raw.infer("clickmask", inputs).as_numpy("mask_prob").shape
        except InferenceServerException as exc:
            return str(exc)
        finally:
            raw.close()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, [False, True, False, False, True, False, False, False]))
    assert [r for r in results if isinstance(r, str)] and all("0/1 disks" in r for r in results if isinstance(r, str))
    assert sum(1 for r in results if r == (1, 1, 320, 320)) == 6

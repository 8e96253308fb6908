"""gRPC compression of the raw tensors (wire="raw") against real tritonservers: same masks, fewer bytes.

Bytes are counted by the wire-size benchmark's loopback proxy (benchmarks/wire_compression.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from clickmask.benchmarks.wire_compression import CLICKS, CountingProxy, load_samples
from clickmask.client import Client
from clickmask.serving.server import ServerConfig, TritonServer

from ..conftest import free_port


def clicks_through_proxy(grpc_url: str, compression: str | None, image: np.ndarray):
    """(masks, bytes up, bytes down) of one 5-click session through a counting proxy."""
    host, port = grpc_url.rsplit(":", 1)
    proxy = CountingProxy(host, int(port))
    try:
        with Client(proxy.url, compression=compression, timeout_s=30.0, wire="raw") as client:
            client.size  # model info: not counted
            up0, down0 = proxy.counts()
            session = client.session(image)
            height, width = image.shape[:2]
            masks = [session.click(x=fx * (width - 1), y=fy * (height - 1), positive=positive).array
                     for fx, fy, positive in CLICKS]
            up, down = proxy.counts()
    finally:
        proxy.close()
    return masks, (up - up0) / len(CLICKS), (down - down0) / len(CLICKS)


@pytest.fixture(scope="module")
def coffee():
    return load_samples()[-1]


@pytest.fixture(scope="module")
def plain(grpc_url, coffee):
    return clicks_through_proxy(grpc_url, None, coffee)


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests_give_the_same_masks_with_fewer_bytes(grpc_url, coffee, plain, compression):
    masks, up, down = clicks_through_proxy(grpc_url, compression, coffee)
    plain_masks, plain_up, plain_down = plain
    assert plain_up > 6 * 320 * 320  # uncompressed: the tensors and a little framing
    assert up < 0.5 * plain_up, (up, plain_up)
    assert abs(down - plain_down) < 1000  # responses are not compressed by this server
    for got, expected in zip(masks, plain_masks):
        np.testing.assert_array_equal(got, expected)


def test_response_compression_shrinks_the_answers(coffee, plain):
    config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                          grpc_response_compression="low", startup_timeout_s=180.0)
    with TritonServer(config):
        masks, up, down = clicks_through_proxy(config.grpc_url, "gzip", coffee)
    plain_masks, plain_up, plain_down = plain
    assert plain_down > 320 * 320 and down < 0.6 * plain_down, (down, plain_down)
    for got, expected in zip(masks, plain_masks):
        np.testing.assert_array_equal(got, expected)

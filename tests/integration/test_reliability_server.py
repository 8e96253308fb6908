"""Malformed requests sent with raw tritonclient, bypassing our client, to the shared server.

Each one gets an error that names the problem, and the next good request succeeds.
``test_server.py`` covers wrong dtype, a wrong size and a missing input; these are the rest.
"""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import Client

CHANNELS = {"image": 3, "clicks": 2, "prev_mask": 1}


def _tensor(name, array, datatype="UINT8"):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _good(batch=1, fill=0):
    return [_tensor(n, np.full((batch, c, 320, 320), fill, np.uint8)) for n, c in CHANNELS.items()]


def _garbage_bytes():
    inputs = _good()
    inputs[0]._raw_content = b"\x89PNG garbage"
    return inputs


def _replace(index, tensor):
    inputs = _good()
    inputs[index] = tensor
    return inputs


CASES = {
    "garbage-bytes": (_garbage_bytes, "INVALID_ARGUMENT", "input byte size mismatch for input 'image'"),
    "bytes-dtype": (lambda: _replace(0, _tensor("image", np.array([b"\x00\xff" * 8], dtype=object), "BYTES")),
                    "INVALID_ARGUMENT", "data-type is 'BYTES', but model 'clickmask' expects 'UINT8'"),
    "fp16-dtype": (lambda: _replace(2, _tensor("prev_mask", np.zeros((1, 1, 320, 320), np.float16), "FP16")),
                   "INVALID_ARGUMENT", "'prev_mask' data-type is 'FP16'"),
    "no-batch-dim": (lambda: _replace(0, _tensor("image", np.zeros((3, 320, 320), np.uint8))),
                     "INVALID_ARGUMENT", "'image'"),
    "batch-mix": (lambda: _replace(0, _tensor("image", np.zeros((2, 3, 320, 320), np.uint8))),
                  "INVALID_ARGUMENT", "input 'image' batch size does not match other inputs"),
    "rank-5": (lambda: _replace(1, _tensor("clicks", np.zeros((1, 1, 2, 320, 320), np.uint8))),
               "INVALID_ARGUMENT", "'clicks'"),
    "too-large-batch": (lambda: _good(batch=17), "INVALID_ARGUMENT", "batch-size must be <= 16"),
    "duplicate-input": (lambda: _good() + _good()[:1], "INVALID_ARGUMENT", "input 'image' already exists"),
    "unknown-input": (lambda: _good() + [_tensor("extra", np.zeros((1, 1), np.uint8))],
                      "INVALID_ARGUMENT", "'extra'"),
    "all-inputs-missing": (lambda: [], "INVALID_ARGUMENT", "expected 3 inputs but got 0"),
    "clicks-not-0-1": (lambda: _replace(1, _tensor("clicks", np.full((1, 2, 320, 320), 255, np.uint8))),
                       "INVALID_ARGUMENT", "0/1 disks"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_request_is_refused_with_its_problem_named_and_the_server_goes_on(grpc_url, case):
    build, status, phrase = CASES[case]
    raw = grpcclient.InferenceServerClient(grpc_url)
    try:
        with pytest.raises(InferenceServerException) as info:
            raw.infer("clickmask", build(), client_timeout=30)
        assert info.value.status() == f"StatusCode.{status}", info.value.message()
        assert phrase in info.value.message()
        assert raw.infer("clickmask", _good(), client_timeout=30).as_numpy("mask_prob").shape == (1, 1, 320, 320)
    finally:
        raw.close()


def test_all_ones_click_maps_are_valid_and_get_an_answer(grpc_url):
    raw = grpcclient.InferenceServerClient(grpc_url)
    inputs = _good()
    inputs[1] = _tensor("clicks", np.ones((1, 2, 320, 320), np.uint8))
    output = raw.infer("clickmask", inputs, client_timeout=30).as_numpy("mask_prob")
    raw.close()
    assert output.shape == (1, 1, 320, 320) and output.dtype == np.uint8


def test_a_wrong_model_name_is_not_found(grpc_url):
    raw = grpcclient.InferenceServerClient(grpc_url)
    with pytest.raises(InferenceServerException) as info:
        raw.infer("clickmask-typo", _good(), client_timeout=30)
    raw.close()
    assert "unknown model" in info.value.message().lower()


def test_a_storm_of_malformed_requests_among_good_ones_leaves_the_good_ones_intact(grpc_url):
    plan = list(CASES) * 2 + ["good"] * 12
    rng = np.random.default_rng(0)
    rng.shuffle(plan)

    def send(case):
        raw = grpcclient.InferenceServerClient(grpc_url)
        try:
            inputs = _good() if case == "good" else CASES[case][0]()
            raw.infer("clickmask", inputs, client_timeout=60)
            return case, "ok"
        except InferenceServerException as error:
            return case, error.message()
        finally:
            raw.close()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, plan))
    for case, outcome in results:
        if case == "good":
            assert outcome == "ok"
        else:
            assert CASES[case][2] in outcome
    with Client(grpc_url) as client:
        session = client.session(np.zeros((120, 160, 3), np.uint8))
        assert session.click(x=80, y=60).array.shape == (120, 160)

"""client.raw_request: the hand-written ModelInferRequest is the message tritonclient builds."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from clickmask.client.raw_request import encode_infer_request


def _tritonclient_request(model: str, tensors, outputs, version: str = ""):
    inputs = []
    for name, datatype, array in tensors:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return _get_inference_request(model_name=model, inputs=inputs, model_version=version, request_id="",
                                  outputs=[grpcclient.InferRequestedOutput(n) for n in outputs], sequence_id=0,
                                  sequence_start=False, sequence_end=False, priority=0, timeout=None,
                                  parameters=None)


@pytest.mark.parametrize("batch,size", [(1, 320), (2, 320), (1, 7), (3, 129)])
def test_the_bytes_parse_to_the_request_tritonclient_builds(batch, size):
    rng = np.random.default_rng(batch * 1000 + size)
    tensors = [("image", "UINT8", rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8)),
               ("clicks", "UINT8", rng.integers(0, 2, (batch, 2, size, size), dtype=np.uint8)),
               ("prev_mask", "UINT8", rng.integers(0, 256, (batch, 1, size, size), dtype=np.uint8))]
    ours = encode_infer_request("clickmask", tensors, ["mask_prob"])
    reference = _tritonclient_request("clickmask", tensors, ["mask_prob"])
    assert service_pb2.ModelInferRequest.FromString(ours) == reference
    assert ours == reference.SerializeToString(), "same bytes, not only the same message"


def test_a_model_version_other_dtypes_and_a_non_contiguous_array_round_trip():
    image = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)[:, :, ::-1]  # not C-contiguous
    tensors = [("image", "FP32", image), ("ids", "INT64", np.array([[1, -2, 3]], dtype=np.int64))]
    message = service_pb2.ModelInferRequest.FromString(encode_infer_request("m", tensors, ["a", "b"], "3"))
    assert message.model_name == "m" and message.model_version == "3"
    assert [o.name for o in message.outputs] == ["a", "b"]
    assert list(message.inputs[0].shape) == [2, 3, 5, 5] and message.inputs[1].datatype == "INT64"
    assert np.array_equal(np.frombuffer(message.raw_input_contents[0], np.float32).reshape(image.shape), image)
    assert np.array_equal(np.frombuffer(message.raw_input_contents[1], np.int64), [1, -2, 3])


def test_an_empty_tensor_is_encoded_too():
    empty = np.zeros((0, 3, 4, 4), np.uint8)
    message = service_pb2.ModelInferRequest.FromString(encode_infer_request("m", [("image", "UINT8", empty)], ["o"]))
    assert list(message.inputs[0].shape) == [0, 3, 4, 4] and message.raw_input_contents[0] == b""

"""The bytes of a raw ``ModelInferRequest``, written straight from the numpy buffers.

The raw wire sends the contract tensors (614 KB a request at S=320) inside the gRPC message.
Built through tritonclient, every request copies them four times before gRPC sees them
(``tobytes`` in ``set_data_from_numpy``, the protobuf field, the protobuf serialization, which
alone takes ~0.7 ms here, and gRPC's own buffer). :func:`encode_infer_request` writes the
protobuf wire format by hand around the buffers and joins everything in one copy; the
``Client`` sends the bytes on tritonclient's own channel with an identity serializer. The
message is the one tritonclient would build, field for field (``tests/unit/test_raw_request.py``
parses both and compares), so the server sees no difference.

Only what the clickmask contract needs is written: the model name, each input's name, datatype,
shape and raw contents, and the requested outputs. Field numbers: Triton's
``grpc_service.proto`` (``ModelInferRequest``: 1 model_name, 2 model_version, 5 inputs, 6 outputs,
7 raw_input_contents; ``InferInputTensor``: 1 name, 2 datatype, 3 shape; ``InferRequestedOutputTensor``: 1 name).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: gRPC method of the inference call (the service name in grpc_service.proto).
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"a varint must not be negative here, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED)


def _field(field: int, payload: bytes) -> bytes:
    return _key(field) + _varint(len(payload)) + payload


def _input_tensor(name: str, datatype: str, shape: Sequence[int]) -> bytes:
    packed = b"".join(_varint(int(d)) for d in shape)
    return _field(1, name.encode()) + _field(2, datatype.encode()) + _field(3, packed)


def encode_infer_request(model_name: str, tensors: Sequence[tuple[str, str, np.ndarray]],
                         output_names: Sequence[str], model_version: str = "") -> bytes:
    """The serialized ``ModelInferRequest`` of ``tensors`` (name, Triton datatype, array; the
    array's shape is sent and its bytes go as the raw contents, in C order) asking for
    ``output_names``. One copy of the tensor bytes is made: the join."""
    parts = [_field(1, model_name.encode())]
    if model_version:
        parts.append(_field(2, model_version.encode()))
    buffers = []
    for name, datatype, array in tensors:
        parts.append(_field(5, _input_tensor(name, datatype, array.shape)))
        buffers.append(np.ascontiguousarray(array))
    for name in output_names:
        parts.append(_field(6, _field(1, name.encode())))
    for array in buffers:
        parts.append(_key(7) + _varint(array.nbytes))
        parts.append(memoryview(array.reshape(-1).view(np.uint8)))
    return b"".join(parts)

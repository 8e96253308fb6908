"""What the client learns from Triton about the model, and request validation against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from .contract import INPUT_CHANNELS, INPUT_NAMES, OUTPUT_NAME, SIZE_PARAMETER
from ._validate import describe
from .errors import InferenceError, InvalidInputError

__all__ = ["CONTRACT_INPUTS", "CONTRACT_OUTPUT", "TensorSpec", "ModelInfo", "parse_model_info", "check_inputs"]

CONTRACT_INPUTS = INPUT_NAMES
CONTRACT_OUTPUT = OUTPUT_NAME
_CHANNELS = INPUT_CHANNELS


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model: Triton datatype (``"UINT8"``) and per-request shape (no batch dim)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(triton_to_np_dtype(self.datatype))


@dataclass(frozen=True)
class ModelInfo:
    """The served model as the server describes it.

    Attributes:
        name: model name; versions: the versions it advertises.
        size: the network input size S (config parameter ``input_size``).
        max_batch_size: the model's max batch size (0: no batching).
        inputs: the input tensors; output: the probability tensor.
    """

    name: str
    versions: tuple[str, ...]
    size: int
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def output_name(self) -> str:
        return self.output.name


def parse_model_info(metadata: Any, config_response: Any) -> ModelInfo:
    """Build a :class:`ModelInfo` from tritonclient's protobuf responses.

    Args:
        metadata: ``ModelMetadataResponse`` (``get_model_metadata(..., as_json=False)``).
        config_response: ``ModelConfigResponse`` or a ``ModelConfig``.

    ``config_response`` may be None when the server restricts the model-config API: S then
    comes from the image dims, the batch dim from a leading -1, and ``max_batch_size`` is
    reported as 0 (unknown; the server still enforces its own).

    Raises InferenceError when the model does not follow the clickmask tensor contract.
    """
    if config_response is None:
        image = next((t for t in metadata.inputs if t.name == "image"), None)
        batched = image is not None and len(image.shape) == 4 and int(image.shape[0]) == -1
        config = _NoConfig()
    else:
        config = getattr(config_response, "config", config_response)
        batched = int(config.max_batch_size) > 0

    def spec(tensor: Any) -> TensorSpec:
        shape = tuple(int(d) for d in tensor.shape)
        return TensorSpec(tensor.name, tensor.datatype, shape[1:] if batched else shape)

    inputs = tuple(spec(t) for t in metadata.inputs)
    outputs = {t.name: spec(t) for t in metadata.outputs}
    where = f"model {metadata.name!r}"
    missing = sorted(set(CONTRACT_INPUTS) - {s.name for s in inputs})
    if missing:
        raise InferenceError(f"{where} lacks the contract inputs {missing}; it has {[s.name for s in inputs]}")
    if CONTRACT_OUTPUT in outputs:
        output = outputs[CONTRACT_OUTPUT]
    elif len(outputs) == 1:
        output = next(iter(outputs.values()))
    else:
        raise InferenceError(f"{where} has no output {CONTRACT_OUTPUT!r}; it has {sorted(outputs)}")

    size = _input_size(config, inputs)
    info = ModelInfo(
        name=metadata.name,
        versions=tuple(metadata.versions),
        size=size,
        max_batch_size=int(config.max_batch_size),
        inputs=inputs,
        output=output,
    )
    for name in CONTRACT_INPUTS:
        tensor = info.input_spec(name)
        if tensor.datatype != "UINT8" or not _shape_matches(tensor.shape, (_CHANNELS[name], size, size)):
            raise InferenceError(
                f"{where} input {name!r} is {tensor.datatype} {list(tensor.shape)}, "
                f"the contract says UINT8 {[_CHANNELS[name], size, size]}"
            )
    if output.datatype != "UINT8":
        raise InferenceError(f"{where} output {output.name!r} is {output.datatype}, the contract says UINT8")
    return info


class _NoConfig:
    """Stands in for a model config the server would not show."""

    max_batch_size = 0
    parameters: dict[str, Any] = {}


def _input_size(config: Any, inputs: tuple[TensorSpec, ...]) -> int:
    parameter = config.parameters[SIZE_PARAMETER] if SIZE_PARAMETER in config.parameters else None
    if parameter is not None:
        try:
            size = int(parameter.string_value)
        except ValueError as error:
            raise InferenceError(
                f"model config parameter input_size={parameter.string_value!r} is not an integer"
            ) from error
        if size < 1:
            raise InferenceError(f"model config parameter input_size={size} must be positive")
        return size
    image = next(s for s in inputs if s.name == "image")
    if len(image.shape) == 3 and image.shape[1] == image.shape[2] and image.shape[1] > 0:
        return image.shape[1]
    raise InferenceError(
        "the model config has no parameter input_size and the image input has no fixed size; "
        'add parameters { key: "input_size" value { string_value: "320" } } to config.pbtxt'
    )


def _shape_matches(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(actual) == len(expected) and all(a in (-1, e) for a, e in zip(actual, expected))


def check_inputs(inputs: Any, info: ModelInfo) -> dict[str, np.ndarray]:
    """Validate one request against the model and return it with a batch dim of 1.

    Args:
        inputs: ``{"image": [3,S,S], "clicks": [2,S,S], "prev_mask": [1,S,S]}`` uint8 arrays,
            each optionally with a leading batch dim of 1.

    Returns:
        The same tensors as contiguous uint8 arrays of shape ``[1, C, S, S]``.
    """
    if not isinstance(inputs, dict) or set(inputs) != set(CONTRACT_INPUTS):
        keys = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise InvalidInputError(
            f"expected a dict with keys {list(CONTRACT_INPUTS)}, got {keys}; build it with encode_inputs()"
        )
    size = info.size
    checked = {}
    for name in CONTRACT_INPUTS:
        array = inputs[name]
        expected = (_CHANNELS[name], size, size)
        if isinstance(array, np.ndarray) and array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape != expected:
            raise InvalidInputError(
                f"expected {name} as uint8 {list(expected)} for this model (S={size}), got {describe(array)}; "
                f"encode with CropTransform(..., size=client.size)"
            )
        checked[name] = np.ascontiguousarray(array)[None]
    return checked

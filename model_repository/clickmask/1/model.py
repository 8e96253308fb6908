"""Triton Python-backend adapter for clickmask: one predictor run per batch of requests.

Thin by design: the batching and validation logic is ``clickmask.serving.run_batch``, tested
without a server, and the predictor comes from the config parameter ``predictor``
(``clickmask.serving.predictors``): ONNX Runtime on the CPU by default, or ``torch-cuda`` on a
GPU instance. Every request of an ``execute`` call goes into one run; a bad request gets its
own TritonError while the rest succeed.
"""
import json
import os

import triton_python_backend_utils as pb_utils

from clickmask.client.contract import INPUT_CHANNELS, OUTPUT_NAME, SIZE_PARAMETER
from clickmask.errors import RequestError
from clickmask.serving import run_batch
from clickmask.serving.predictors import load_predictor



def _error(result: Exception):
    """A bad request is the caller's to fix (INVALID_ARGUMENT); a model fault on a good request is
    ours (INTERNAL). Overload (UNAVAILABLE) comes from the queue policy. pb_utils.TritonError only
    exists once the stub runs the model, not at import time."""
    name = "INVALID_ARG" if isinstance(result, RequestError) else "INTERNAL"
    return pb_utils.TritonError(str(result), getattr(pb_utils.TritonError, name))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.size = int(params[SIZE_PARAMETER])
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        gpu = args.get("model_instance_kind") == "GPU"
        self.predictor = load_predictor(params, model_dir,
                                        device=f"cuda:{args['model_instance_device_id']}" if gpu else None)
        output_config = pb_utils.get_output_config_by_name(config, OUTPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

    def execute(self, requests):
        batch = []
        for request in requests:
            inputs = {}
            for name in INPUT_CHANNELS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                inputs[name] = None if tensor is None else tensor.as_numpy()
            batch.append(inputs)
        responses = []
        for result in run_batch(batch, self.predictor, self.size):
            if isinstance(result, Exception):
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(result)))
            else:
                tensor = pb_utils.Tensor(OUTPUT_NAME, result.astype(self.output_dtype, copy=False))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self):
        self.predictor = None

"""Triton Python-backend adapter for clickmask: one predictor run per batch of requests.

Thin by design: the batching and validation logic is ``clickmask.serving.run_batch``, tested
without a server, and the predictor comes from the config parameter ``predictor``
(``clickmask.serving.predictors``): ONNX Runtime on the CPU by default, or ``torch-cuda`` on a
GPU instance. Every request of an ``execute`` call goes into one run; a bad request gets its
own TritonError while the rest succeed. A request whose client has gone (deadline passed, hung
up) is answered CANCELLED without running (``clickmask.serving.cancelled``) and counted in
``clickmask_cancelled_requests_total``.
"""
import json
import os

import triton_python_backend_utils as pb_utils

from clickmask.client.contract import INPUT_CHANNELS, OUTPUT_NAME, SIZE_PARAMETER
from clickmask.errors import RequestError
from clickmask.serving import cancelled, run_batch
from clickmask.serving.predictors import load_predictor


def _error(result: Exception):
    """A bad request is the caller's to fix (INVALID_ARGUMENT); a model fault on a good request is
    ours (INTERNAL). Overload (UNAVAILABLE) comes from a queue policy, where one is set; a request
    that outlived its client's deadline is answered CANCELLED. pb_utils.TritonError only
    exists once the stub runs the model, not at import time."""
    name = "INVALID_ARG" if isinstance(result, RequestError) else "INTERNAL"
    return pb_utils.TritonError(str(result), getattr(pb_utils.TritonError, name))


_FAMILIES = []  # a Metric must not outlive its MetricFamily: keep the families for the process


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.wait_watch = cancelled.WaitWatch()  # skips the cancellation check on lone requests
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.size = int(params[SIZE_PARAMETER])
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        gpu = args.get("model_instance_kind") == "GPU"
        self.predictor = load_predictor(params, model_dir,
                                        device=f"cuda:{args['model_instance_device_id']}" if gpu else None)
        output_config = pb_utils.get_output_config_by_name(config, OUTPUT_NAME)
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

        self.cancelled_total = None
        if hasattr(pb_utils, "MetricFamily"):  # custom metrics: Python backend 23.02+
            family = pb_utils.MetricFamily(
                name="clickmask_cancelled_requests_total",
                description="requests answered CANCELLED without running the network: their client's deadline "
                            "passed or it hung up while they waited", kind=pb_utils.MetricFamily.COUNTER)
            _FAMILIES.append(family)
            self.cancelled_total = family.Metric(labels={"model": args["model_name"],
                                                         "instance": args.get("model_instance_name", "")})

    def execute(self, requests):
        responses, skipped = cancelled.answer_live(requests, self._run, lambda: cancelled.response(pb_utils),
                                                  check=self.wait_watch.may_have_waited())
        self.wait_watch.finished()
        if skipped and self.cancelled_total is not None:
            self.cancelled_total.increment(skipped)
        return responses

    def _run(self, requests):
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

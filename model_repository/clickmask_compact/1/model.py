"""Triton Python-backend adapter of the compact wire entry (issue #27).

Thin by design: decoding, the crop cache and the flip merge are ``clickmask.serving.compact``
(tested without a server); the network runs in the raw model named by the config parameter
``network_model`` (``clickmask``), called over BLS with every request of this ``execute`` call
as one batch, so Triton's batching and the raw model's instances serve both entries alike; or,
with ``network: inline``, in this process from the raw model's ONNX file (``onnx_file``), which
saves the BLS hop (about 2 ms a call on a 2-core CPU).
A crop the cache does not hold is refused NOT_FOUND (the client re-sends it), a malformed request
INVALID_ARGUMENT; either is that request's error only; one whose client has gone (deadline passed,
hung up) is answered CANCELLED without running (``clickmask.serving.cancelled``). Metrics (Triton's /metrics):
``clickmask_compact_cache_{hits,misses,evictions}_total``, ``clickmask_compact_cache_bytes``,
``clickmask_compact_{requests,received_bytes,sent_bytes,network_inputs,cancelled}_total``.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from clickmask.client.compact import COMPACT_INPUTS, COMPACT_OUTPUT
from clickmask.client.contract import INPUT_NAMES, OUTPUT_NAME, SIZE_PARAMETER
from clickmask.errors import ModelFault, RequestError
from clickmask.serving import cancelled
from clickmask.serving.compact import Answer, CropCache, CropMiss, run_compact


def _error(result: Exception):
    if isinstance(result, CropMiss):
        code = pb_utils.TritonError.NOT_FOUND
    elif isinstance(result, RequestError):
        code = pb_utils.TritonError.INVALID_ARG
    else:
        code = pb_utils.TritonError.INTERNAL
    return pb_utils.TritonError(str(result), code)


_FAMILIES = []  # a Metric must not outlive its MetricFamily: keep the families for the process


def _counter(name, description, kind=None):
    family = pb_utils.MetricFamily(name=name, description=description,
                                   kind=kind if kind is not None else pb_utils.MetricFamily.COUNTER)
    _FAMILIES.append(family)
    return family.Metric(labels={})


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.wait_watch = cancelled.WaitWatch()  # skips the cancellation check on lone requests
        groups = config.get("instance_group", [])
        count = sum(int(group.get("count", 1)) for group in groups) or 1
        if count > 1:
            raise pb_utils.TritonModelException(
                f"clickmask_compact must run one instance (instance_group count {count}): each instance is its own "
                "process and the crop cache would split across them; scale the raw 'clickmask' model instead")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.size = int(params[SIZE_PARAMETER])
        self.network = params.get("network_model", "clickmask")
        # "inline": run the network in this process (no BLS hop; the embedded CPU default), from the
        # raw model's ONNX file; "bls": call the raw model through Triton (its batcher and instances).
        self.predictor = None
        self.mode = params.get("network", "bls")
        if self.mode == "inline":
            from clickmask.serving.predictors import load_predictor  # noqa: PLC0415

            model_dir = os.path.join(args["model_repository"], args["model_version"])
            self.predictor = load_predictor(params, model_dir)
        elif self.mode != "bls":
            raise pb_utils.TritonModelException(f"config parameter network {self.mode!r} is not 'inline' or 'bls'")
        self.cache = CropCache(int(params.get("cache_bytes", 512 * 1024 * 1024)))
        self.metrics = {
            "hits": _counter("clickmask_compact_cache_hits_total", "compact requests whose crop the cache held"),
            "misses": _counter("clickmask_compact_cache_misses_total",
                               "compact requests refused NOT_FOUND: no crop sent and none cached"),
            "evictions": _counter("clickmask_compact_cache_evictions_total", "crops evicted to stay in the budget"),
            "bytes": _counter("clickmask_compact_cache_bytes", "bytes of crops the cache holds",
                              pb_utils.MetricFamily.GAUGE),
            "requests": _counter("clickmask_compact_requests_total", "compact requests answered with a mask"),
            "received": _counter("clickmask_compact_received_bytes_total", "input bytes of answered compact requests"),
            "sent": _counter("clickmask_compact_sent_bytes_total", "output bytes of answered compact requests"),
            "inputs": _counter("clickmask_compact_network_inputs_total", "network inputs run for compact requests"),
            "cancelled": _counter("clickmask_compact_cancelled_total",
                                  "compact requests answered CANCELLED without running: their client's deadline "
                                  "passed or it hung up while they waited"),
        }
        self._seen = {"hits": 0, "misses": 0, "evictions": 0}

    def _infer(self, feeds):
        if self.mode == "inline":
            return self.predictor(feeds)
        request = pb_utils.InferenceRequest(
            model_name=self.network, requested_output_names=[OUTPUT_NAME],
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(feeds[name])) for name in INPUT_NAMES])
        response = request.exec()
        if response.has_error():
            raise ModelFault(f"the network model '{self.network}' failed: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, OUTPUT_NAME).as_numpy()

    def execute(self, requests):
        responses, skipped = cancelled.answer_live(requests, self._run, lambda: cancelled.response(pb_utils),
                                                  check=self.wait_watch.may_have_waited())
        self.wait_watch.finished()
        if skipped:
            self.metrics["cancelled"].increment(skipped)
        return responses

    def _run(self, requests):
        batch = []
        for request in requests:
            fields = {}
            for name in COMPACT_INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                fields[name] = None if tensor is None else tensor.as_numpy()
            batch.append(fields)
        responses = []
        for result in run_compact(batch, self._infer, self.size, self.cache):
            if isinstance(result, Answer):
                out = np.array([[result.png]], dtype=np.object_)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(COMPACT_OUTPUT, out)]))
                self.metrics["requests"].increment(1)
                self.metrics["received"].increment(result.received)
                self.metrics["sent"].increment(len(result.png))
                self.metrics["inputs"].increment(result.images)
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(result)))
        cache = self.cache
        for key in self._seen:
            value = getattr(cache, key)
            if value > self._seen[key]:
                self.metrics[key].increment(value - self._seen[key])
                self._seen[key] = value
        self.metrics["bytes"].set(cache.bytes)
        return responses

    def finalize(self):
        self.cache = None
        self.predictor = None

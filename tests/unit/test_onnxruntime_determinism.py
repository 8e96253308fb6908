"""Why eval through the server and eval in-process may be compared click for click.

tests/integration/test_eval.py asks for the same NoC from the served model and from the same
ONNX file run in-process, exactly. NoC is a discrete outcome that one flipped pixel can move
(tests/integration/test_validation_equals_eval.py), so exact equality needs a reason: both run
the same ONNX Runtime build on the same CPU, and its uint8 answer does not depend on how the
server runs it (intra-op threads from config.pbtxt, the requests dynamic batching put beside
it). This test checks that reason on real session inputs: one thread or two, one request at a
time, the flip pair's batch of two, or all of them in one batch, the answers are bit-identical.
Across CPUs (AVX2 against AVX-512/AMX) they are not, and no test asks that.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from clickmask.client.session import Session
from clickmask.datasets import list_objects, load_object
from clickmask.serving import OnnxPredictor
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

ONNX = pathlib.Path(DEFAULT_MODEL_REPOSITORY) / "clickmask" / "1" / "model.onnx"


class Recorder:
    """A predictor that records the contract inputs a Session sends and answers with ``inner``."""

    def __init__(self, inner: OnnxPredictor) -> None:
        self.inner, self.size, self.requests = inner, inner.size, []

    def infer(self, inputs):
        self.requests.append({name: np.array(value) for name, value in inputs.items()})
        return self.inner.infer(inputs)


@pytest.fixture(scope="module")
def requests(datasets_dir):
    if not ONNX.is_file():
        pytest.fail(f"{ONNX} is missing: run 'make model'")
    recorder = Recorder(OnnxPredictor(ONNX, threads=1))
    for ref in list_objects(datasets_dir / "WeizmannHorse")[:3]:
        image, gt, _ = load_object(ref)
        session = Session(recorder, image, flip=False, refine=False)
        ys, xs = np.nonzero(gt)
        session.click(x=float(xs[len(xs) // 2]), y=float(ys[len(ys) // 2]))  # a zoomed-out first click
        session.click(x=float(xs[0]), y=float(ys[0]))                        # a zoomed-in second one
    assert len(recorder.requests) == 6
    return recorder.requests


def _stack(requests):
    return {name: np.stack([r[name] for r in requests]) for name in requests[0]}


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_answers_do_not_depend_on_threads_or_batching(requests, threads):
    reference = OnnxPredictor(ONNX, threads=1).infer(_stack(requests))
    predictor = OnnxPredictor(ONNX, threads=threads)
    singles = np.stack([predictor.infer(r) for r in requests])
    pairs = np.concatenate([predictor.infer(_stack(requests[i:i + 2])) for i in range(0, len(requests), 2)])
    batch = predictor.infer(_stack(requests))
    assert reference.dtype == np.uint8 and reference.shape[0] == len(requests)
    assert 0 < np.count_nonzero(reference > 127) < reference.size  # a real answer, not a constant
    for name, answer in (("one at a time", singles), ("pairs", pairs), ("one batch", batch)):
        assert np.array_equal(answer, reference), f"{name} with {threads} threads differs from the reference"


@pytest.mark.parametrize("spinning", [True, False])
def test_thread_spinning_does_not_change_the_answers(requests, spinning):
    """``allow_spinning`` (config parameter) only changes how idle worker threads wait."""
    reference = OnnxPredictor(ONNX, threads=1).infer(_stack(requests))
    answer = OnnxPredictor(ONNX, threads=2, spinning=spinning).infer(_stack(requests))
    assert np.array_equal(answer, reference)

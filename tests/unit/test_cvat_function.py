"""The CVAT interactor (deploy/cvat/main.py over clickmask.web.cvat) on nuclio's own test platform.

``nuclio_sdk.test.Platform`` runs ``init_context`` once and then ``handler`` per event, as the
nuclio Python runtime does. The model is real: the served ONNX file in-process (LocalPredictor),
swapped in through ``call_handler_with_context_mutation``; tests/integration/test_cvat_triton.py
runs the same function against a real tritonserver.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import sys

import cv2
import numpy as np
import pytest
import yaml

from clickmask.client import iou, load_gt, next_click
from clickmask.web.cvat import CvatInteractor, mask_json

from ..conftest import DATASETS, REPO_ROOT, CountingPredictor, free_port  # noqa: F401 - local_model fixture

nuclio_test = pytest.importorskip("nuclio_sdk.test", reason="nuclio-sdk is not installed (it is in the dev extra)")
import nuclio_sdk  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

FUNCTION_DIR = REPO_ROOT / "deploy" / "cvat"
SAMPLE = "apple04_000000562059"  # COCO_MVal (a training set)


def load_function(name: str = "clickmask_cvat_main"):
    """deploy/cvat/main.py as nuclio loads it (``main:handler``)."""
    spec = importlib.util.spec_from_file_location(name, FUNCTION_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the platform finds init_context through the handler's module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample():
    root = DATASETS / "COCO_MVal"
    image_path = root / "images" / f"{SAMPLE}.jpg"
    if not image_path.is_file():
        pytest.fail(f"{image_path} is missing: put ../shared beside the repo or set CLICKMASK_DATASETS")
    gt, ignore = load_gt(cv2.imread(str(root / "masks" / f"{SAMPLE}.png"), cv2.IMREAD_GRAYSCALE))
    c = next_click(gt, np.zeros_like(gt), ignore)
    return {"b64": base64.b64encode(image_path.read_bytes()).decode("ascii"), "gt": gt, "ignore": ignore,
            "click": (c.x, c.y)}


@pytest.fixture()
def function(monkeypatch, local_model):
    """(call(body) -> (status, json), predictor, interactor) on a fresh nuclio test platform."""
    monkeypatch.setenv("CLICKMASK_URL", f"127.0.0.1:{free_port()}")  # init_context's client: never used here
    module = load_function()
    platform = nuclio_test.Platform()
    predictor = CountingPredictor(local_model)
    interactor = CvatInteractor(predictor)

    def use_local_model(context):
        assert context.user_data.interactor is not None  # init_context ran
        context.user_data.interactor = interactor
        return context

    def call(body, raw=False):
        event = nuclio_sdk.Event(body=json.dumps(body).encode() if raw else body, content_type="application/json")
        response = platform.call_handler_with_context_mutation(module.handler, event, use_local_model)
        assert isinstance(response, nuclio_sdk.Response) and response.content_type == "application/json"
        return response.status_code, json.loads(response.body)

    return call, predictor, interactor


def full_mask(answer, shape) -> np.ndarray:
    x1, y1, x2, y2 = answer["bounds"]
    rows = np.array(answer["mask"], dtype=np.uint8)
    assert rows.shape == (y2 - y1 + 1, x2 - x1 + 1), "mask rows must cover bounds inclusively"
    assert set(np.unique(rows)) <= {0, 1}
    mask = np.zeros(shape, dtype=bool)
    mask[y1:y2 + 1, x1:x2 + 1] = rows.astype(bool)
    return mask


def test_function_yaml_declares_an_interactor():
    config = yaml.safe_load((FUNCTION_DIR / "function.yaml").read_text())
    annotations = config["metadata"]["annotations"]
    assert annotations["type"] == "interactor"
    assert int(annotations["version"]) == 2
    assert int(annotations["min_pos_points"]) == 1 and int(annotations["min_neg_points"]) == 0
    assert "positive point" in annotations["help_message"]
    assert config["spec"]["handler"] == "main:handler"
    env = {item["name"]: item["value"] for item in config["spec"]["env"]}
    assert "CLICKMASK_URL" in env
    assert config["spec"]["triggers"]["myHttpTrigger"]["attributes"]["maxRequestBodySize"] >= 32 << 20


def test_clicks_give_cvat_masks_and_cost_one_inference_each(function, sample):
    call, predictor, interactor = function
    gt, ignore = sample["gt"], sample["ignore"]
    x, y = sample["click"]
    status, answer = call({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": []})
    assert status == 200, answer
    assert set(answer) == {"mask", "bounds"}
    m1 = full_mask(answer, gt.shape)
    assert iou(gt, m1, ignore) > 0.8
    assert predictor.calls == 1 and interactor.last_decode_s > 0

    # CVAT re-sends the frame and every point: one inference, and the frame is not decoded again
    ys, xs = np.nonzero(m1 & ~gt)
    nx, ny = (float(xs[0]), float(ys[0])) if len(xs) else (float(np.nonzero(m1)[1].min()), y)
    status, answer = call({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": [[nx, ny]]}, raw=True)
    assert status == 200, answer
    m2 = full_mask(answer, gt.shape)
    assert predictor.calls == 2 and interactor.last_decode_s == 0
    assert m2.sum() < m1.sum()

    # a positive point after the negative one: CVAT's two lists lose the order, the session keeps it
    status, answer = call({"image": sample["b64"], "pos_points": [[x, y], [x + 15, y + 15]],
                           "neg_points": [[nx, ny]]})
    assert status == 200 and predictor.calls == 3
    # deleting the last point is an undo: no inference, the previous mask again
    status, answer = call({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": [[nx, ny]]})
    assert status == 200 and predictor.calls == 3
    assert np.array_equal(full_mask(answer, gt.shape), m2)
    # a different frame (by content) is another session
    other = cv2.imencode(".png", cv2.flip(cv2.imdecode(np.frombuffer(base64.b64decode(sample["b64"]), np.uint8),
                                                       cv2.IMREAD_COLOR), 1))[1].tobytes()
    status, _ = call({"image": base64.b64encode(other).decode(), "pos_points": [[gt.shape[1] - 1 - x, y]],
                      "neg_points": []})
    assert status == 200 and predictor.calls == 4


def test_obj_bbox_and_threshold(function, sample):
    call, predictor, _ = function
    gt = sample["gt"]
    ys, xs = np.nonzero(gt)
    box = [[float(max(0, xs.min() - 4)), float(max(0, ys.min() - 4))], [float(xs.max() + 5), float(ys.max() + 5)]]
    x, y = sample["click"]
    status, answer = call({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": [], "obj_bbox": box,
                           "threshold": 0.5})
    assert status == 200, answer
    x1, y1, x2, y2 = answer["bounds"]
    assert x1 >= box[0][0] and y1 >= box[0][1] and x2 < box[1][0] and y2 < box[1][1]
    assert iou(gt, full_mask(answer, gt.shape), sample["ignore"]) > 0.8
    status, loose = call({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": [], "obj_bbox": box,
                          "threshold": 0.1})
    assert status == 200 and np.array(loose["mask"]).sum() >= np.array(answer["mask"]).sum()
    assert predictor.calls == 1  # same box, same point: the threshold only re-cuts the cached probability


def test_bad_requests_get_clear_errors_and_the_function_keeps_serving(function, sample):
    call, predictor, _ = function
    x, y = sample["click"]
    cases = [
        ({"pos_points": [[x, y]], "neg_points": []}, 400, "no image"),
        ({"image": sample["b64"], "pos_points": [], "neg_points": [[x, y]]}, 400, "positive point"),
        ({"image": sample["b64"], "pos_points": [[x, "y"]], "neg_points": []}, 400, "pos_points[0]"),
        ({"image": sample["b64"], "pos_points": [[9999.0, y]], "neg_points": []}, 400, "outside"),
        ({"image": "@@not base64@@", "pos_points": [[x, y]], "neg_points": []}, 422, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a broken").decode(), "pos_points": [[x, y]], "neg_points": []}, 422,
         "not a readable image"),
        ({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": [], "threshold": 3}, 400, "threshold"),
        ({"image": sample["b64"], "pos_points": [[x, y]], "obj_bbox": [[1, 2]]}, 400, "two corners"),
    ]
    for body, status, words in cases:
        got, answer = call(body)
        assert got == status, (body.keys(), answer)
        assert words in answer["error"], answer
    assert predictor.calls == 0
    assert call({"image": sample["b64"], "pos_points": [[x, y]], "neg_points": []})[0] == 200


def test_triton_down_is_a_503(monkeypatch, sample):
    from clickmask.client import Client

    monkeypatch.setenv("CLICKMASK_URL", f"127.0.0.1:{free_port()}")
    module = load_function("clickmask_cvat_main_down")
    platform = nuclio_test.Platform()

    def fast_failing(context):
        url = context.user_data.interactor.sessions.predictor.url
        context.user_data.interactor = CvatInteractor(Client(url, timeout_s=1.0, retries=1, backoff_s=0.05))
        return context

    x, y = sample["click"]
    for _ in range(2):
        event = nuclio_sdk.Event(body={"image": sample["b64"], "pos_points": [[x, y]], "neg_points": []})
        response = platform.call_handler_with_context_mutation(module.handler, event, fast_failing)
        assert response.status_code == 503
        assert "clickmask serve" in json.loads(response.body)["error"]


def test_mask_json_matches_json_dumps():
    rng = np.random.default_rng(1)
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:30, 7:44] = rng.random((25, 37)) < 0.6
    text, bounds = mask_json(mask)
    x1, y1, x2, y2 = bounds
    assert json.loads(text) == mask[y1:y2 + 1, x1:x2 + 1].astype(int).tolist()
    assert mask_json(np.zeros((4, 4), dtype=bool)) == ("[[0]]", [0, 0, 0, 0])
    single = np.zeros((4, 4), dtype=bool)
    single[2, 3] = True
    assert mask_json(single) == ("[[1]]", [3, 2, 3, 2])

"""The CVAT interactor function (deploy/cvat/main.py) on nuclio's test platform against a real
tritonserver: init_context connects to ``CLICKMASK_URL`` over gRPC, as in a nuclio deployment."""
from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest

from clickmask.client import iou, load_gt, next_click

from ..conftest import DATASETS
from ..unit.test_cvat_function import SAMPLE, full_mask, load_function

nuclio_test = pytest.importorskip("nuclio_sdk.test", reason="nuclio-sdk is not installed (it is in the dev extra)")
import nuclio_sdk  # noqa: E402


def test_cvat_function_against_triton(monkeypatch, grpc_url):
    root = DATASETS / "COCO_MVal"
    frame = base64.b64encode((root / "images" / f"{SAMPLE}.jpg").read_bytes()).decode("ascii")
    gt, ignore = load_gt(cv2.imread(str(root / "masks" / f"{SAMPLE}.png"), cv2.IMREAD_GRAYSCALE))
    monkeypatch.setenv("CLICKMASK_URL", grpc_url)
    module = load_function("clickmask_cvat_main_triton")
    platform = nuclio_test.Platform()
    contexts = []

    def keep(context):
        contexts.append(context)
        return context

    def call(body):
        event = nuclio_sdk.Event(body=json.dumps(body).encode(), content_type="application/json")
        response = platform.call_handler_with_context_mutation(module.handler, event, keep)
        return response.status_code, json.loads(response.body)

    c = next_click(gt, np.zeros_like(gt), ignore)
    status, answer = call({"image": frame, "pos_points": [[c.x, c.y]], "neg_points": []})
    assert status == 200, answer
    m1 = full_mask(answer, gt.shape)
    assert iou(gt, m1, ignore) > 0.8
    interactor = contexts[-1].user_data.interactor
    assert interactor.sessions.predictor.url == grpc_url
    c2 = next_click(gt, m1, ignore, [c])
    lists = {"pos_points": [[c.x, c.y]], "neg_points": []}
    lists["pos_points" if c2.positive else "neg_points"].append([c2.x, c2.y])
    status, answer = call({"image": frame, **lists})
    assert status == 200, answer
    assert interactor.sessions.inferences == 2, "the second click must cost one inference"
    assert interactor.last_decode_s == 0.0, "a cached frame is not decoded again"
    assert iou(gt, full_mask(answer, gt.shape), ignore) >= iou(gt, m1, ignore) - 0.02

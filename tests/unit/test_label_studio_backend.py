"""The Label Studio ML backend (clickmask.web.label_studio) through Flask's test client.

The model is real: the served ONNX file in-process (LocalPredictor). The brush RLE is decoded
with label-studio-sdk's own decoder. label-studio-sdk needs numpy >= 2.2, so this file runs in
the adapter's environment (``.venv-ls``, made by ``make venv-ls``; ``make test`` runs it there).
"""
from __future__ import annotations

import http.server
import shutil
import threading

import cv2
import numpy as np
import pytest

brush = pytest.importorskip(
    "label_studio_sdk.converter.brush",
    reason="label-studio-sdk is not in this environment (it needs numpy>=2.2; the serve extra pins numpy<2): "
           "make test runs this file with .venv-ls/bin/python (make venv-ls)")

from clickmask.client import Client, iou, load_gt, next_click  # noqa: E402
from clickmask.web.label_studio import (  # noqa: E402
    EXAMPLE_LABEL_CONFIG,
    ImageReader,
    LabelStudioBackend,
    create_app,
    encode_brush_rle,
)
from clickmask.web.session_cache import SessionCache  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

from ..conftest import DATASETS, CountingPredictor, free_port  # noqa: E402

SAMPLE = "apple04_000000562059"  # COCO_MVal (a training set), one apple, 427x640
PROJECT = "1.1700000000"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = DATASETS / "COCO_MVal"
    image_path, mask_path = root / "images" / f"{SAMPLE}.jpg", root / "masks" / f"{SAMPLE}.png"
    if not image_path.is_file():
        pytest.fail(f"{image_path} is missing: put ../shared beside the repo or set CLICKMASK_DATASETS")
    files = tmp_path_factory.mktemp("local-files")
    shutil.copy(image_path, files / "apple.jpg")
    (files / "broken.jpg").write_bytes(b"this is not a JPEG")
    gt, ignore = load_gt(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE))
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    return {"root": files, "gt": gt, "ignore": ignore, "height": image.shape[0], "width": image.shape[1]}


@pytest.fixture()
def predictor(local_model):
    return CountingPredictor(local_model)


@pytest.fixture()
def app_for(sample):
    def make(predictor, cache=None):
        backend = LabelStudioBackend(predictor, ImageReader(local_files_root=sample["root"]), cache=cache,
                                     model_version="clickmask-test")
        return create_app(backend).test_client(), backend
    return make


def keypoint(sample, x, y, positive=True, name="point"):
    """A smart keypoint as Label Studio sends it, from pixel-centre coordinates."""
    w, h = sample["width"], sample["height"]
    return {"id": f"kp{x:.0f}_{y:.0f}", "from_name": name, "to_name": "image", "type": "keypointlabels",
            "original_width": w, "original_height": h, "image_rotation": 0, "is_positive": positive,
            "origin": "manual", "value": {"x": (x + 0.5) / w * 100, "y": (y + 0.5) / h * 100, "width": 0.5,
                                          "keypointlabels": ["Object"]}}


def rectangle(sample, x0, y0, x1, y1):
    w, h = sample["width"], sample["height"]
    return {"id": "box", "from_name": "box", "to_name": "image", "type": "rectanglelabels", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"x": x0 / w * 100, "y": y0 / h * 100, "width": (x1 - x0) / w * 100,
                      "height": (y1 - y0) / h * 100, "rotation": 0, "rectanglelabels": ["Object"]}}


def request(regions, image="/data/local-files/?d=apple.jpg", task_id=7, config=EXAMPLE_LABEL_CONFIG):
    body = {"tasks": [{"id": task_id, "data": {"image": image}}], "project": PROJECT, "label_config": config,
            "params": {"login": None, "password": None}}
    if regions is not None:
        body["params"]["context"] = {"result": regions}
    return body


def decoded(response, sample) -> np.ndarray:
    assert response.status_code == 200, response.get_json()
    region = response.get_json()["results"][0]["result"][0]
    rgba = brush.decode_rle(region["value"]["rle"]).reshape(sample["height"], sample["width"], 4)
    assert set(np.unique(rgba[:, :, 3])) <= {0, 255}
    return rgba[:, :, 3] == 255


def first_click(sample):
    c = next_click(sample["gt"], np.zeros_like(sample["gt"]), sample["ignore"])
    return c.x, c.y


# ------------------------------------------------------------------------------ protocol
def test_health_and_setup(app_for, predictor):
    client, _ = app_for(predictor)
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "UP"
    setup = client.post("/setup", json={"project": PROJECT, "schema": EXAMPLE_LABEL_CONFIG,
                                        "hostname": "http://localhost:8080", "access_token": "x"})
    assert setup.status_code == 200 and setup.get_json() == {"model_version": "clickmask-test"}
    hook = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {}})
    assert hook.status_code == 201 and hook.get_json()["status"] == "ignored"
    assert predictor.calls == 0


def test_setup_refuses_a_config_without_brush_labels(app_for, predictor):
    client, _ = app_for(predictor)
    config = '<View><Image name="image" value="$image"/><KeyPointLabels name="p" toName="image" smart="true">' \
             '<Label value="A"/></KeyPointLabels></View>'
    response = client.post("/setup", json={"project": PROJECT, "schema": config})
    assert response.status_code == 400
    assert "BrushLabels" in response.get_json()["detail"]
    assert "BrushLabels" in response.status  # the reason phrase, which Label Studio shows


def test_a_click_answers_one_brush_region_covering_the_object(app_for, predictor, sample):
    client, _ = app_for(predictor)
    x, y = first_click(sample)
    response = client.post("/predict", json=request([keypoint(sample, x, y)]))
    body = response.get_json()
    assert body["model_version"] == "clickmask-test"
    prediction = body["results"][0]
    assert prediction["model_version"] == "clickmask-test" and 0 < prediction["score"] <= 1
    (region,) = prediction["result"]
    assert region["type"] == "brushlabels" and region["from_name"] == "mask" and region["to_name"] == "image"
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Object"]
    assert (region["original_width"], region["original_height"]) == (sample["width"], sample["height"])
    mask = decoded(response, sample)
    assert iou(sample["gt"], mask, sample["ignore"]) > 0.8
    assert mask[int(round(y)), int(round(x))]
    assert predictor.calls == 1


def test_points_are_diffed_against_the_cached_session(app_for, predictor, sample):
    """Label Studio re-sends every point: one new point is one inference, a re-send or an undo none,
    anything else a replay."""
    client, backend = app_for(predictor)
    x, y = first_click(sample)
    p1 = keypoint(sample, x, y)
    m1 = decoded(client.post("/predict", json=request([p1])), sample)
    assert predictor.calls == 1
    p2 = keypoint(sample, x + 25, y - 20)
    m2 = decoded(client.post("/predict", json=request([p1, p2])), sample)
    assert predictor.calls == 2, "the second click of a task must cost exactly one inference"
    decoded(client.post("/predict", json=request([p1, p2])), sample)
    assert predictor.calls == 2, "the same points again must not run the model"
    undone = decoded(client.post("/predict", json=request([p1])), sample)
    assert predictor.calls == 2 and np.array_equal(undone, m1), "a shorter list is an undo"
    p0 = keypoint(sample, x - 10, y + 10)
    decoded(client.post("/predict", json=request([p0, p2])), sample)
    assert predictor.calls == 4, "a changed first point replays both points"
    # another task (same image) is another session
    decoded(client.post("/predict", json=request([p1], task_id=8)), sample)
    assert predictor.calls == 5
    assert len(backend.sessions.cache) == 2
    assert m2.shape == m1.shape


def test_a_negative_click_removes_area(app_for, predictor, sample):
    client, _ = app_for(predictor)
    x, y = first_click(sample)
    p1 = keypoint(sample, x, y)
    m1 = decoded(client.post("/predict", json=request([p1])), sample)
    ys, xs = np.nonzero(m1 & ~sample["gt"])
    if len(xs):  # a false positive to remove: click the one farthest from the object
        far = np.argmax(cv2.distanceTransform((~sample["gt"]).astype(np.uint8), cv2.DIST_L2, 3)[ys, xs])
        nx, ny = float(xs[far]), float(ys[far])
    else:  # no false positive: cut a part of the object off instead
        ys, xs = np.nonzero(m1)
        nx, ny = float(xs.min() + 3), float(ys[np.argmin(xs)])
    m2 = decoded(client.post("/predict", json=request([p1, keypoint(sample, nx, ny, positive=False)])), sample)
    assert m2.sum() < m1.sum()
    assert not m2[int(ny), int(nx)]
    assert predictor.calls == 2


def test_a_smart_rectangle_alone_segments_inside_it(app_for, predictor, sample):
    client, _ = app_for(predictor)
    ys, xs = np.nonzero(sample["gt"])
    box = (max(0, xs.min() - 5), max(0, ys.min() - 5), xs.max() + 6, ys.max() + 6)
    mask = decoded(client.post("/predict", json=request([rectangle(sample, *box)])), sample)
    assert iou(sample["gt"], mask, sample["ignore"]) > 0.7
    outside = np.ones_like(mask)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert not (mask & outside).any()
    assert predictor.calls == 1


# ------------------------------------------------------------------------------ bad input
def _error(response, status, *words):
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["status"] == status
    for word in words:
        assert word in body["detail"], body["detail"]
    return body["detail"]


def test_bad_requests_get_clear_errors_and_the_service_keeps_serving(app_for, predictor, sample):
    client, _ = app_for(predictor)
    x, y = first_click(sample)
    good = keypoint(sample, x, y)
    _error(client.post("/predict", json=request(None)), 400, "context")
    _error(client.post("/predict", data="not json", content_type="application/json"), 400, "JSON")
    unknown = dict(good, from_name="nope")
    _error(client.post("/predict", json=request([unknown])), 400, "'nope'", "point")
    outside = keypoint(sample, x, y)
    outside["value"] = dict(outside["value"], x=150.0)
    _error(client.post("/predict", json=request([outside])), 400, "outside the image")
    _error(client.post("/predict", json=request([keypoint(sample, x, y, positive=False)])), 400, "positive")
    _error(client.post("/predict", json=request([good], image="/data/local-files/?d=broken.jpg")), 422,
           "not a readable image")
    _error(client.post("/predict", json=request([good], image="/data/local-files/?d=../../etc/passwd")), 422,
           "outside --local-files-root")
    _error(client.post("/predict", json=request([good], image="/data/upload/1/x.jpg")), 422, "--label-studio-url")
    _error(client.post("/predict", json=request([good], image="s3://bucket/x.jpg")), 422, "scheme")
    assert predictor.calls == 0, "no bad request may reach the model"
    decoded(client.post("/predict", json=request([good])), sample)
    assert predictor.calls == 1


def test_triton_down_is_a_503_and_the_service_keeps_serving(app_for, sample):
    dead = Client(f"127.0.0.1:{free_port()}", timeout_s=1.0, retries=1, backoff_s=0.05)
    client, _ = app_for(dead)
    x, y = first_click(sample)
    for _ in range(2):
        detail = _error(client.post("/predict", json=request([keypoint(sample, x, y)])), 503, "clickmask serve")
    assert "not available" in detail
    assert client.get("/health").get_json()["status"] == "UP"
    # connecting Label Studio while the server is down still works; the version is generic until it is up
    setup = create_app(LabelStudioBackend(dead)).test_client().post("/setup", json={"schema": EXAMPLE_LABEL_CONFIG})
    assert setup.status_code == 200 and setup.get_json() == {"model_version": "clickmask"}


def test_an_evicted_session_is_replayed(app_for, predictor, sample):
    client, _ = app_for(predictor, cache=SessionCache(max_entries=1))
    x, y = first_click(sample)
    p1, p2 = keypoint(sample, x, y), keypoint(sample, x + 20, y)
    decoded(client.post("/predict", json=request([p1], task_id=1)), sample)
    decoded(client.post("/predict", json=request([p1], task_id=2)), sample)  # evicts task 1
    decoded(client.post("/predict", json=request([p1, p2], task_id=1)), sample)
    assert predictor.calls == 4  # 1 + 1 + a replay of two points


# ------------------------------------------------------------------------------ RLE, token
def test_rle_is_the_sdk_encoding():
    rng = np.random.default_rng(0)
    mask = np.zeros((97, 131), dtype=bool)
    mask[10:60, 20:90] = True
    mask[rng.random(mask.shape) < 0.02] ^= True
    ours = encode_brush_rle(mask)
    assert ours == list(brush.mask2rle(mask.astype(np.uint8) * 255))
    rgba = brush.decode_rle(ours).reshape(97, 131, 4)
    assert np.array_equal(rgba[:, :, 3] == 255, mask) and (rgba[:, :, 0] == rgba[:, :, 3]).all()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Serves one image; records the Authorization header; /redirect sends to another origin."""

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.server.elsewhere + "/data/upload/1/apple.jpg")
            self.end_headers()
            return
        if self.path.startswith("/user/login"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>log in</html>")
            return
        if self.server.token and self.headers.get("Authorization") != f"Token {self.server.token}":
            self.send_response(302)
            self.send_header("Location", "/user/login/?next=" + self.path)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.server.payload)))
        self.end_headers()
        self.wfile.write(self.server.payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def two_hosts(sample):
    servers = []
    payload = (sample["root"] / "apple.jpg").read_bytes()
    for token in ("s3cret-token", None):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.seen, server.token, server.payload = [], token, payload
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    label_studio, other = servers
    label_studio.elsewhere = f"http://127.0.0.1:{other.server_port}"
    other.elsewhere = label_studio.elsewhere
    yield label_studio, other
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_token_goes_only_to_label_studio(two_hosts, sample):
    label_studio, other = two_hosts
    ls_url = f"http://127.0.0.1:{label_studio.server_port}"
    reader = ImageReader(ls_url, "s3cret-token")
    assert reader.read("/data/upload/1/apple.jpg").shape == (sample["height"], sample["width"], 3)
    assert label_studio.seen[-1] == ("/data/upload/1/apple.jpg", "Token s3cret-token")
    reader.read(f"http://127.0.0.1:{other.server_port}/img.jpg")  # another host: no token
    reader.read("/redirect")  # Label Studio redirects elsewhere: the token stays behind
    assert other.seen and all(auth is None for _, auth in other.seen)
    # without the token Label Studio answers its login page: the error says what to pass
    with pytest.raises(Exception, match="--label-studio-api-key"):
        ImageReader(ls_url, None).read("/data/upload/1/apple.jpg")

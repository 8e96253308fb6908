"""The demo backend (clickmask.web.demo) through Flask's test client, over the real ONNX model in-process."""
from __future__ import annotations

import io
import json
import pathlib

import cv2
import numpy as np
import pytest

from clickmask.client import (
    Client,
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    Mask,
    ModelNotReadyError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY
from clickmask.web import demo
from clickmask.web.session_cache import SessionCache

from ..conftest import free_port, runs_to_mask

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

ONNX = pathlib.Path(DEFAULT_MODEL_REPOSITORY) / "clickmask" / "1" / "model.onnx"
CUP = (250, 160)  # the coffee cup in samples/coffee.jpg (600x400)
SAUCER = (250, 320)  # the saucer below it: a negative click there takes the saucer out


@pytest.fixture(scope="module")
def predictor():
    if not ONNX.is_file():
        pytest.fail(f"{ONNX} is missing: run 'make model'")
    from clickmask.serving.local import LocalPredictor

    return LocalPredictor(ONNX)


@pytest.fixture()
def app(predictor):
    return demo.create_app(predictor)


@pytest.fixture()
def client(app):
    return app.test_client()


def open_sample(client, name="coffee"):
    response = client.post("/api/open", data={"sample": name})
    assert response.status_code == 200, response.json
    return response.json


def click(client, tab, xy, positive=True):
    response = client.post("/api/click", json={"tab": tab, "x": xy[0], "y": xy[1], "positive": positive})
    assert response.status_code == 200, response.json
    return response.json


def png(image: np.ndarray, ext=".png") -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


# ----------------------------------------------------------------------------- page and config
def test_the_page_and_its_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and b'src="/static/demo.js"' in page.data and b"demo.css" in page.data
    for path in ("/static/demo.js", "/static/demo.css", "/static/samples/coffee.jpg"):
        assert client.get(path).status_code == 200, path


def test_config_lists_the_bundled_samples_with_their_credits(client):
    config = client.get("/api/config").json
    names = [s["name"] for s in config["samples"]]
    assert names == ["astronaut", "chelsea", "coffee"]
    assert all(s["credit"] for s in config["samples"])
    assert config["max_megapixels"] == 40.0 and config["max_sessions"] == demo.DEFAULT_MAX_SESSIONS


def test_the_samples_are_small_and_documented():
    readme = (demo.SAMPLES_DIR / "README.md").read_text()
    for path in demo.SAMPLES_DIR.glob("*.jpg"):
        image = cv2.imread(str(path))
        assert max(image.shape[:2]) <= 640 and path.stat().st_size < 150_000, path
        assert path.name in readme
    assert "scikit-image" in readme and "CC0" in readme and "public domain" in readme


def test_health_of_an_in_process_predictor(client):
    assert client.get("/api/health").json["ready"] is True


# ----------------------------------------------------------------------------- one object
def test_a_click_on_the_cup_gives_a_plausible_mask_with_a_latency_split(client):
    tab = open_sample(client)
    assert (tab["width"], tab["height"]) == (600, 400) and tab["current"]["area"] == 0
    state = click(client, tab["tab"], CUP)
    current = state["current"]
    mask = runs_to_mask(current["runs"], 400, 600)
    assert mask[CUP[1], CUP[0]]
    assert 0.05 < mask.mean() < 0.5
    assert current["area"] == mask.sum() and current["clicks"] == [{"x": 250.0, "y": 160.0, "positive": True}]
    x, y, w, h = current["bbox"]
    assert x <= CUP[0] < x + w and y <= CUP[1] < y + h
    assert current["polygons"] and all(len(p) >= 6 for p in current["polygons"])
    latency = state["latency"]
    for key in ("encode_ms", "inference_ms", "decode_ms", "respond_ms", "backend_ms"):
        assert latency[key] >= 0, key
    assert latency["encode_ms"] + latency["inference_ms"] + latency["decode_ms"] <= latency["backend_ms"]
    assert latency["inference_ms"] > latency["encode_ms"]


def test_negative_click_shrinks_undo_restores_reset_clears(client):
    tab = open_sample(client)["tab"]
    first = click(client, tab, CUP)["current"]
    second = click(client, tab, SAUCER, positive=False)["current"]
    assert second["area"] < first["area"]
    assert not runs_to_mask(second["runs"], 400, 600)[SAUCER[1], SAUCER[0]]
    undone = client.post("/api/undo", json={"tab": tab}).json["current"]
    assert undone["runs"] == first["runs"] and len(undone["clicks"]) == 1
    reset = client.post("/api/reset", json={"tab": tab}).json["current"]
    assert reset["area"] == 0 and reset["clicks"] == []


def test_downloaded_mask_png_matches_the_state(client):
    tab = open_sample(client)["tab"]
    current = click(client, tab, CUP)["current"]
    response = client.get(f"/api/download?tab={tab}&format=mask")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert "coffee_mask.png" in response.headers["Content-Disposition"]
    downloaded = cv2.imdecode(np.frombuffer(response.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert downloaded.dtype == np.uint8 and set(np.unique(downloaded)) <= {0, 255}
    np.testing.assert_array_equal(downloaded > 0, runs_to_mask(current["runs"], 400, 600))


# ----------------------------------------------------------------------------- several objects
def test_next_object_builds_an_instance_map_and_a_coco_file(client):
    tab = open_sample(client)["tab"]
    cup = click(client, tab, CUP)["current"]
    state = client.post("/api/next", json={"tab": tab}).json
    assert [o["id"] for o in state["objects"]] == [1] and state["current"]["id"] == 2
    assert state["current"]["area"] == 0 and state["objects"][0]["runs"] == cup["runs"]
    table = click(client, tab, (560, 60))["current"]  # the table top, right
    assert table["area"] > 0
    instances = cv2.imdecode(np.frombuffer(client.get(f"/api/download?tab={tab}&format=instances").data, np.uint8),
                             cv2.IMREAD_UNCHANGED)
    assert instances.shape == (400, 600) and instances.dtype == np.uint8
    assert set(np.unique(instances)) == {0, 1, 2}
    cup_mask, table_mask = runs_to_mask(cup["runs"], 400, 600), runs_to_mask(table["runs"], 400, 600)
    np.testing.assert_array_equal(instances == 2, table_mask)  # later objects are drawn over earlier ones
    np.testing.assert_array_equal(instances == 1, cup_mask & ~table_mask)

    response = client.get(f"/api/download?tab={tab}&format=coco")
    assert response.mimetype == "application/json" and "coffee_coco.json" in response.headers["Content-Disposition"]
    coco = json.loads(response.data)
    assert coco["images"] == [{"id": 1, "file_name": "coffee.jpg", "width": 600, "height": 400}]
    first, second = coco["annotations"]
    assert isinstance(first["segmentation"]["counts"], str) and first["segmentation"]["size"] == [400, 600]
    np.testing.assert_array_equal(Mask.from_rle(first["segmentation"]).array, cup_mask)
    np.testing.assert_array_equal(Mask.from_rle(second["segmentation"]).array, table_mask)
    assert first["area"] == cup["area"] and first["bbox"] == cup["bbox"] and first["iscrowd"] == 0


def test_undo_on_an_empty_object_reopens_the_last_one(client):
    tab = open_sample(client)["tab"]
    cup = click(client, tab, CUP)["current"]
    client.post("/api/next", json={"tab": tab})
    state = client.post("/api/undo", json={"tab": tab}).json
    assert state["objects"] == [] and state["current"]["id"] == 1 and state["current"]["runs"] == cup["runs"]


def test_next_without_a_mask_says_to_click_first(client):
    tab = open_sample(client)["tab"]
    response = client.post("/api/next", json={"tab": tab})
    assert response.status_code == 409 and "click on an object first" in response.json["error"]
    response = client.get(f"/api/download?tab={tab}&format=mask")
    assert response.status_code == 409 and "no mask yet" in response.json["error"]
    assert client.get(f"/api/download?tab={tab}&format=tiff").status_code == 400


# ----------------------------------------------------------------------------- seeded objects
def test_a_mask_png_seeds_the_object_and_clicks_refine_it(client):
    tab = open_sample(client)["tab"]
    seed = np.zeros((400, 600), np.uint8)
    seed[40:260, 170:330] = 255  # a rough box around the cup
    state = client.post("/api/seed", data={"tab": tab, "mask": (io.BytesIO(png(seed)), "cup.png")}).json
    assert state["current"]["seeded"] and state["current"]["area"] == 220 * 160
    refined = click(client, tab, (180, 250), positive=False)["current"]  # a box corner is no cup
    assert refined["seeded"] and refined["area"] != 220 * 160 and len(refined["clicks"]) == 1
    back = client.post("/api/undo", json={"tab": tab}).json["current"]
    assert back["area"] == 220 * 160 and back["clicks"] == []
    dropped = client.post("/api/undo", json={"tab": tab}).json["current"]  # a second undo drops the seed
    assert not dropped["seeded"] and dropped["area"] == 0


def test_a_colour_or_instance_png_seeds_with_every_non_zero_pixel(client):
    tab = open_sample(client)["tab"]
    seed = np.zeros((400, 600, 3), np.uint8)
    seed[10:20, 10:30] = (0, 0, 7)
    state = client.post("/api/seed", data={"tab": tab, "mask": (io.BytesIO(png(seed)), "c.png")}).json
    assert state["current"]["area"] == 200


def test_seed_errors_name_the_problem(client):
    tab = open_sample(client)["tab"]
    small = client.post("/api/seed", data={"tab": tab, "mask": (io.BytesIO(png(np.zeros((40, 60), np.uint8))), "s.png")})
    assert small.status_code == 400
    assert "60x40 but the image is 600x400" in small.json["error"]
    text = client.post("/api/seed", data={"tab": tab, "mask": (io.BytesIO(b"not a png"), "notes.txt")})
    assert text.status_code == 415 and "notes.txt' is not an image" in text.json["error"]
    assert client.post("/api/seed", data={"tab": tab}).status_code == 400


# ----------------------------------------------------------------------------- bad input
def test_a_non_image_file_is_refused_with_what_to_do(client):
    response = client.post("/api/open", data={"image": (io.BytesIO(b"%PDF-1.4 hello"), "report.pdf")})
    assert response.status_code == 415 and response.json["code"] == "not_an_image"
    assert "'report.pdf' is not an image" in response.json["error"] and "JPEG, PNG" in response.json["error"]
    empty = client.post("/api/open", data={"image": (io.BytesIO(b""), "empty.jpg")})
    assert empty.status_code == 400 and "is empty" in empty.json["error"]
    assert client.post("/api/open", data={}).status_code == 400
    assert client.post("/api/open", data={"sample": "../../etc/passwd"}).status_code == 404


def test_a_huge_image_is_refused_from_its_header_and_the_tab_keeps_working(client):
    tab = open_sample(client)["tab"]
    huge = png(np.zeros((6000, 7000), np.uint8))  # 42 MP, about 40 KB of PNG
    response = client.post("/api/open", data={"image": (io.BytesIO(huge), "pano.png"), "tab": tab})
    assert response.status_code == 413 and response.json["code"] == "image_too_large"
    message = response.json["error"]
    assert "7000x6000 = 42.0 megapixels" in message and "at most 40 megapixels" in message
    assert "e.g. to 6831x5855" in message
    assert click(client, tab, CUP)["current"]["area"] > 0  # the open tab was not touched


def test_the_megapixel_limit_is_configurable(predictor):
    client = demo.create_app(predictor, max_megapixels=0.1).test_client()
    response = client.post("/api/open", data={"sample": "coffee"})
    assert response.status_code == 413 and "at most 0.1 megapixels" in response.json["error"]


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
def test_peek_image_size_reads_headers(ext):
    data = png(np.zeros((37, 53, 3), np.uint8), ext)
    assert demo.peek_image_size(data) in ((53, 37), None)
    if ext != ".tiff":
        assert demo.peek_image_size(data) == (53, 37)
    assert demo.decode_image(data, "x" + ext, 10**6).shape == (37, 53, 3)


def test_bad_click_requests_are_400(client):
    tab = open_sample(client)["tab"]
    assert client.post("/api/click", json={"tab": tab, "x": "left"}).status_code == 400
    outside = client.post("/api/click", json={"tab": tab, "x": 600, "y": 10})
    assert outside.status_code == 400 and "x=600 is outside the image" in outside.json["error"]
    assert client.post("/api/click", json={"x": 1, "y": 1}).status_code == 400


# ----------------------------------------------------------------------------- sessions
def test_an_unknown_tab_is_reported_as_expired(client):
    response = client.post("/api/click", json={"tab": "nope", "x": 1, "y": 1})
    assert response.status_code == 410 and response.json["code"] == "session_expired"
    assert "replays its clicks" in response.json["error"]


def test_tabs_live_in_a_bounded_expiring_cache(predictor):
    now = [0.0]
    cache = SessionCache(max_entries=2, ttl_s=60.0, clock=lambda: now[0])
    client = demo.create_app(predictor, cache=cache).test_client()
    first, second, third = (open_sample(client)["tab"] for _ in range(3))
    assert len(cache) == 2 and first not in cache and cache.evicted == 1
    assert client.post("/api/reset", json={"tab": first}).status_code == 410
    now[0] = 61.0
    assert client.post("/api/reset", json={"tab": third}).status_code == 410
    assert cache.expired == 2 and len(cache) == 0


def test_reopening_in_a_tab_and_closing_free_its_session(predictor):
    cache = SessionCache(max_entries=8, ttl_s=60.0)
    client = demo.create_app(predictor, cache=cache).test_client()
    first = open_sample(client)["tab"]
    second = client.post("/api/open", data={"sample": "chelsea", "tab": first}).json["tab"]
    assert first not in cache and second in cache
    client.post("/api/close", data=json.dumps({"tab": second}), content_type="text/plain")  # sendBeacon
    assert len(cache) == 0


def test_the_image_endpoint_returns_what_the_server_decoded(client):
    tab = open_sample(client, "chelsea")["tab"]
    image = cv2.imdecode(np.frombuffer(client.get(f"/api/image?tab={tab}").data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (300, 451, 3)


# ----------------------------------------------------------------------------- server errors
def test_a_server_that_is_down_gets_a_message_to_start_it():
    """A real gRPC client whose port has no server behind it."""
    url = f"127.0.0.1:{free_port()}"
    with Client(url, timeout_s=1.0, retries=1, backoff_s=0.01) as grpc_client:
        client = demo.create_app(grpc_client, server_label=url).test_client()
        health = client.get("/api/health").json
        assert health["ready"] is False and "clickmask serve" in health["message"]
        response = client.post("/api/open", data={"sample": "coffee"})
    assert response.status_code == 503 and response.json["code"] == "server_unavailable"
    assert f"Cannot reach the segmentation server at {url}" in response.json["error"]
    assert "clickmask serve" in response.json["error"] and "--start-server" in response.json["error"]


@pytest.mark.parametrize(
    "error, status, code, fragment",
    [
        (ServerOverloadedError("Exceeds maximum queue size"), 503, "server_overloaded", "overloaded"),
        (ServerUnavailableError("connection refused"), 503, "server_unavailable", "clickmask serve"),
        (DeadlineExceededError("deadline"), 504, "deadline_exceeded", "did not answer in time"),
        (ModelNotReadyError("unknown model"), 503, "model_not_ready", "not ready"),
        (InferenceError("boom"), 502, "inference_error", "failed on this click"),
        (InvalidInputError("x=9 is outside"), 400, "invalid_input", "x=9 is outside"),
    ],
)
def test_client_errors_map_to_statuses_and_messages(error, status, code, fragment):
    got_status, got_code, message = demo._error_for(error, "127.0.0.1:8001")
    assert (got_status, got_code) == (status, code) and fragment in message


# ----------------------------------------------------------------------------- CLI
def test_the_cli_has_the_demo_command(capsys):
    from clickmask.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["demo", "--url", "127.0.0.1:9001", "--port", "0", "--start-server"])
    assert args.func is demo.run_demo and args.start_server and args.compression == "gzip"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--url", "--host", "--port", "--start-server", "--compression", "--max-megapixels",
                   "--max-sessions", "--session-ttl"):
        assert option in help_text


def test_a_bad_url_is_refused():
    args = type("Args", (), {"url": "localhost", "start_server": False})()
    with pytest.raises(InvalidInputError, match="HOST:PORT"):
        demo.run_demo(args)

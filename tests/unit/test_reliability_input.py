"""Bad input on the client side, and properties of the encoding and of the server's batch logic.

Property-based (hypothesis): the encoding keeps the contract for any image, crop and clicks;
``clickmask.serving.run_batch`` answers every request of any mix of good and bad requests,
good ones with exactly their own slice of one batched run.
"""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickmask.client import Click, CropTransform, InvalidInputError, Session
from clickmask.client._validate import MAX_IMAGE_PIXELS, check_rgb_image
from clickmask.client.encoding import decode_prob, encode_clicks, encode_image, encode_inputs, encode_prev_mask
from clickmask.errors import ModelFault, RequestError
from clickmask.client.contract import INPUT_CHANNELS
from clickmask.serving import run_batch

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class EchoNetwork:
    """A predictor that answers the positive click channel as the probability."""

    size = 32

    def __init__(self):
        self.calls = 0

    def infer(self, inputs):
        self.calls += 1
        return (inputs["clicks"][:1] * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- image formats
@pytest.mark.parametrize(
    "image, fragment",
    [
        (np.zeros((20, 30), np.uint8), "grayscale image: expand it"),
        (np.zeros((20, 30, 1), np.uint8), "grayscale image: expand it"),
        (np.zeros((20, 30, 4), np.uint8), "RGBA image: drop the alpha channel"),
        (np.zeros((20, 30, 3), np.uint16), "16-bit image: scale it to 8 bits"),
        (np.zeros((20, 30, 3), np.float32), "float image"),
        (np.full((20, 30, 3), np.nan, np.float64), "NaN and inf are refused"),
        (np.zeros((20, 30, 3), np.int64), "convert it to uint8 RGB"),
        (np.zeros((0, 30, 3), np.uint8), "it has no pixels"),
        (np.zeros((20, 0, 3), np.uint8), "it has no pixels"),
        (np.zeros((2, 20, 30, 3), np.uint8), "got uint8 of shape (2, 20, 30, 3)"),
        ([[0, 0, 0]], "got list"),
        (None, "got NoneType"),
    ],
    ids=["gray-2d", "gray-hw1", "rgba", "uint16", "float", "nan", "int64", "no-rows", "no-cols", "4d", "list", "none"],
)
def test_each_unsupported_image_is_refused_with_the_conversion_that_fixes_it(image, fragment):
    with pytest.raises(InvalidInputError, match="HxWx3 uint8 RGB") as info:
        Session(EchoNetwork(), image)
    assert fragment in str(info.value)


def test_the_suggested_grayscale_and_rgba_fixes_work():
    gray = np.arange(600, dtype=np.uint8).reshape(20, 30)
    h, w = gray.shape
    assert check_rgb_image(np.repeat(gray.reshape(h, w, 1), 3, axis=2)).shape == (20, 30, 3)
    rgba = np.zeros((20, 30, 4), np.uint8)
    assert Session(EchoNetwork(), rgba[..., :3]).image.shape == (20, 30, 3)  # a non-contiguous view is fine


def test_an_image_over_the_pixel_limit_is_refused_before_anything_is_copied():
    big = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (9000, 8000, 3))  # 72 MP, no memory behind it
    assert 9000 * 8000 > MAX_IMAGE_PIXELS
    with pytest.raises(InvalidInputError, match="exceeds the limit of 67 megapixels; downscale it"):
        Session(EchoNetwork(), big)
    small_limit = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(InvalidInputError, match="max_image_pixels"):
        Session(EchoNetwork(), small_limit, max_image_pixels=5000)
    assert Session(EchoNetwork(), small_limit, max_image_pixels=None).image.shape == (100, 100, 3)


def test_encoding_a_large_image_builds_no_full_size_copy():
    """Crop and resize run on the uint8 image: no float or full-size copy of a 24 MP image."""
    image = np.zeros((4000, 6000, 3), np.uint8)
    t = CropTransform.full(4000, 6000, 320)
    tracemalloc.start()
    try:
        encode_inputs(image, [Click(100.0, 200.0)], None, t)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"encoding allocated {peak / 1e6:.1f} MB for a {image.nbytes / 1e6:.0f} MB image"


# -------------------------------------------------------------------------------- clicks
@pytest.mark.parametrize(
    "x, y, fragment",
    [
        (float("nan"), 5, "x=nan is outside the image"),
        (5, float("inf"), "y=inf is outside the image"),
        (-0.5, 5, "x=-0.5 is outside"),
        (5, 19.01, "y=19.01 is outside"),
        ("5", 5, "expected x as a number of pixels, got str"),
        (None, 5, "got NoneType"),
        (True, 5, "got bool"),
        (5, [5], "got list"),
        (complex(1, 1), 5, "got complex"),
    ],
)
def test_bad_click_coordinates_are_refused_and_the_session_is_unchanged(x, y, fragment):
    network = EchoNetwork()
    session = Session(network, np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(InvalidInputError) as info:
        session.click(x=x, y=y)
    assert fragment in str(info.value)
    assert network.calls == 0 and session.clicks == () and session.mask is None


def test_fractional_and_numpy_coordinates_are_valid_sub_pixel_clicks():
    session = Session(EchoNetwork(), np.zeros((20, 30, 3), np.uint8))
    session.click(x=np.float32(12.25), y=np.int64(7))
    session.click(x=0.0, y=19.0, positive=np.bool_(False))
    assert [(c.x, c.y) for c in session.clicks] == [(12.25, 7.0), (0.0, 19.0)]


def test_undo_with_no_clicks_is_a_harmless_no_op():
    session = Session(EchoNetwork(), np.zeros((20, 30, 3), np.uint8))
    assert session.undo() is None and session.undo() is None
    assert session.click(x=3, y=4).array.shape == (20, 30)
    assert session.undo() is None and session.clicks == ()


# --------------------------------------------------------------------- encoding properties
@st.composite
def crops(draw):
    height = draw(st.integers(1, 120))
    width = draw(st.integers(1, 120))
    x0 = draw(st.integers(0, width - 1))
    y0 = draw(st.integers(0, height - 1))
    x1 = draw(st.integers(x0 + 1, width))
    y1 = draw(st.integers(y0 + 1, height))
    size = draw(st.sampled_from([32, 64]))
    return height, width, CropTransform(x0, y0, x1, y1, size)


@SETTINGS
@given(crops(), st.integers(0, 255))
def test_encoded_image_keeps_the_contract_for_any_crop(crop, fill):
    height, width, t = crop
    image = np.full((height, width, 3), fill, np.uint8)
    out = encode_image(image, t)
    rows, cols = t.content_hw
    assert out.dtype == np.uint8 and out.shape == (3, t.size, t.size)
    assert (out[:, :rows, :cols] == fill).all()
    assert not out[:, rows:, :].any() and not out[:, :, cols:].any()


@SETTINGS
@given(crops(), st.lists(st.tuples(st.floats(-50, 200), st.floats(-50, 200), st.booleans()), max_size=12))
def test_encoded_clicks_are_0_1_disks_in_their_own_channel_wherever_the_clicks_are(crop, raw_clicks):
    _, _, t = crop
    clicks = [Click(x, y, positive) for x, y, positive in raw_clicks]
    out = encode_clicks(clicks, t)
    assert out.dtype == np.uint8 and out.shape == (2, t.size, t.size)
    assert set(np.unique(out)) <= {0, 1}
    for channel, positive in ((0, True), (1, False)):
        if not any(c.positive == positive for c in clicks):
            assert not out[channel].any()
    for click in clicks:  # the pixel nearest a click's network centre is in its disk
        xn, yn = t.to_network(click.x, click.y)
        col, row = math.floor(xn + 0.5), math.floor(yn + 0.5)
        if 0 <= row < t.size and 0 <= col < t.size:
            assert out[0 if click.positive else 1, row, col] == 1


@SETTINGS
@given(crops(), st.floats(0, 1))
def test_decode_pastes_a_probability_inside_the_crop_and_zero_outside(crop, level):
    height, width, t = crop
    plane = np.zeros((1, t.size, t.size), np.uint8)
    rows, cols = t.content_hw
    plane[0, :rows, :cols] = round(level * 255)
    prob = decode_prob(plane, t, (height, width))
    assert prob.shape == (height, width) and prob.dtype == np.float32
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    outside = np.ones((height, width), bool)
    outside[t.y0:t.y1, t.x0:t.x1] = False
    assert not prob[outside].any()
    np.testing.assert_allclose(prob[t.y0:t.y1, t.x0:t.x1], round(level * 255) / 255, atol=1e-6)
    again = encode_prev_mask(prob, t)  # the round trip through the network canvas is stable
    assert (again[0, :rows, :cols] == round(level * 255)).all()


@SETTINGS
@given(crops(), st.floats(-1e4, 1e4), st.floats(-1e4, 1e4))
def test_network_coordinates_invert(crop, x, y):
    _, _, t = crop
    back = t.to_image(*t.to_network(x, y))
    assert back == pytest.approx((x, y), abs=1e-6)


@SETTINGS
@given(st.integers(1, 60), st.integers(1, 60), st.data())
def test_any_valid_click_sequence_runs_and_any_invalid_click_changes_nothing(height, width, data):
    network = EchoNetwork()
    session = Session(network, np.zeros((height, width, 3), np.uint8))
    coordinate = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-100, 100))
    for _ in range(data.draw(st.integers(1, 5))):
        x, y, positive = data.draw(coordinate), data.draw(coordinate), data.draw(st.booleans())
        before = (session.clicks, network.calls)
        valid = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (x, y)) and (
            0 <= x <= width - 1 and 0 <= y <= height - 1)
        if valid:
            mask = session.click(x=x, y=y, positive=positive)
            assert mask.array.shape == (height, width)
            assert len(session.clicks) == len(before[0]) + 1
        else:
            with pytest.raises(InvalidInputError):
                session.click(x=x, y=y, positive=positive)
            assert (session.clicks, network.calls) == before


# ----------------------------------------------------------------- run_batch properties
S = 8
CORRUPTIONS = {
    "missing": lambda r: {**r, "prev_mask": None},
    "dtype": lambda r: {**r, "image": r["image"].astype(np.float32)},
    "rank": lambda r: {**r, "clicks": r["clicks"][0]},
    "size": lambda r: {**r, "image": np.zeros((r["image"].shape[0], 3, S + 1, S + 1), np.uint8)},
    "channels": lambda r: {**r, "clicks": np.zeros((r["clicks"].shape[0], 1, S, S), np.uint8)},
    "batch-mix": lambda r: {**r, "prev_mask": np.zeros((r["prev_mask"].shape[0] + 1, 1, S, S), np.uint8)},
    "not-0/1": lambda r: {**r, "clicks": np.full_like(r["clicks"], 7)},
    "empty": lambda r: {name: a[:0] for name, a in r.items()},
}
PHRASES = {
    "missing": "is missing", "dtype": "must be UINT8", "rank": "has shape", "size": "has shape",
    "channels": "has shape", "batch-mix": "disagree on the batch size", "not-0/1": "0/1 disks",
    "empty": "empty batch",
}


def _request(seed: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (batch, 3, S, S), dtype=np.uint8),
        "clicks": rng.integers(0, 2, (batch, 2, S, S), dtype=np.uint8),  # all-ones maps are valid too
        "prev_mask": rng.integers(0, 256, (batch, 1, S, S), dtype=np.uint8),
    }


def _echo(feeds):
    """Stands in for the network: the first image channel is the 'probability'."""
    return feeds["image"][:, :1].copy()


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 3), st.sampled_from([None, *CORRUPTIONS])), min_size=1, max_size=10))
def test_run_batch_answers_every_request_and_good_ones_get_their_own_slice(specs):
    requests, calls = [], []
    for index, (batch, corruption) in enumerate(specs):
        request = _request(index, batch)
        requests.append(CORRUPTIONS[corruption](request) if corruption else request)

    def infer(feeds):
        calls.append({name: feeds[name].shape[0] for name in INPUT_CHANNELS})
        return _echo(feeds)

    results = run_batch(requests, infer, S)
    assert len(results) == len(requests)
    good = [i for i, (_, corruption) in enumerate(specs) if corruption is None]
    assert len(calls) == (1 if good else 0)
    for index, (batch, corruption) in enumerate(specs):
        result = results[index]
        if corruption is None:
            assert isinstance(result, np.ndarray) and result.shape == (batch, 1, S, S)
            np.testing.assert_array_equal(result, requests[index]["image"][:, :1])
        else:
            assert isinstance(result, RequestError) and PHRASES[corruption] in str(result)


@SETTINGS
@given(st.lists(st.sampled_from([None, "dtype", "missing"]), min_size=1, max_size=6))
def test_a_failing_network_answers_each_good_request_with_an_error_and_keeps_the_others_own(kinds):
    requests = [CORRUPTIONS[k](_request(i, 1)) if k else _request(i, 1) for i, k in enumerate(kinds)]

    def broken(feeds):
        raise RuntimeError("onnxruntime exploded")

    results = run_batch(requests, broken, S)
    for kind, result in zip(kinds, results):
        assert isinstance(result, ModelFault if kind is None else RequestError)  # INTERNAL vs INVALID_ARGUMENT
        assert ("onnxruntime exploded" in str(result)) == (kind is None)


def test_all_ones_click_maps_are_a_valid_request():
    request = _request(0, 2)
    request["clicks"][:] = 1
    (result,) = run_batch([request], _echo, S)
    assert isinstance(result, np.ndarray) and result.shape == (2, 1, S, S)


# ------------------------------------------------------------------- unreadable files, CLI
def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p / "missing.png", "does not exist"),
        (lambda p: _write(p / "empty.png", b""), "cannot decode"),
        (lambda p: _write(p / "text.jpg", b"not an image"), "cannot decode"),
        (lambda p: _write(p / "cut.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "cannot decode"),
        (lambda p: p, "does not exist"),  # a folder
    ],
    ids=["missing", "empty", "text", "truncated-png", "folder"],
)
def test_segment_with_an_unreadable_image_file_says_so_before_any_network_call(tmp_path, capsys, make, fragment):
    from clickmask.cli import main

    path = make(tmp_path)
    code = main(["segment", str(path), "--pos", "1,1", "--url", "127.0.0.1:9", "-o", str(tmp_path / "m.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert "clickmask segment: error:" in err and fragment in err


def test_a_16_bit_png_file_is_read_as_8_bit_rgb(tmp_path):
    import cv2

    from clickmask.imageio import read_rgb

    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((10, 12, 3), 65535, np.uint16))
    image = read_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (10, 12, 3) and image.max() == 255

"""Mask formats: COCO RLE (checked against pycocotools output), polygons, PNG."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from clickmask.client import InvalidInputError, Mask

GOLDEN_RLE = Path(__file__).parent / "golden" / "client_rle_pycocotools.json"
CASES = json.loads(GOLDEN_RLE.read_text())["cases"]


def decode_rle_independently(rle: dict) -> np.ndarray:
    """Plain-Python COCO RLE decoder: runs alternate 0/1 down the columns, zeros first."""
    height, width = rle["size"]
    flat = []
    value = 0
    for count in rle["counts"]:
        flat.extend([value] * count)
        value = 1 - value
    assert len(flat) == height * width
    out = np.zeros((height, width), dtype=bool)
    for index, v in enumerate(flat):
        out[index % height, index // height] = bool(v)
    return out


def random_masks():
    rng = np.random.default_rng(7)
    yield np.zeros((5, 4), bool)
    yield np.ones((3, 8), bool)
    yield rng.random((1, 1)) < 2
    for shape in ((13, 17), (64, 48), (2, 100)):
        for density in (0.05, 0.5, 0.95):
            yield rng.random(shape) < density


def test_rle_of_a_small_mask_runs_down_the_columns():
    array = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)
    assert Mask(array).to_rle() == {"size": [2, 3], "counts": [2, 1, 1, 2]}


def test_rle_starts_with_a_zero_count_when_the_first_pixel_is_set():
    array = np.array([[1, 0], [1, 1]], dtype=bool)
    assert Mask(array).to_rle()["counts"] == [0, 2, 1, 1]


@pytest.mark.parametrize("index", range(9))
def test_rle_decodes_back_to_the_mask_with_an_independent_decoder(index):
    array = list(random_masks())[index]
    rle = Mask(array).to_rle()
    assert all(isinstance(c, int) for c in rle["counts"])
    np.testing.assert_array_equal(decode_rle_independently(rle), array)
    np.testing.assert_array_equal(Mask.from_rle(rle).array, array)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_rle_matches_pycocotools(case):
    array = decode_rle_independently({"size": case["size"], "counts": case["counts"]})
    mask = Mask(array)
    assert mask.to_rle() == {"size": case["size"], "counts": case["counts"]}
    assert mask.to_rle(compressed=True) == {"size": case["size"], "counts": case["compressed"]}
    np.testing.assert_array_equal(Mask.from_rle({"size": case["size"], "counts": case["compressed"]}).array, array)
    np.testing.assert_array_equal(
        Mask.from_rle({"size": case["size"], "counts": case["compressed"].encode("ascii")}).array, array
    )
    assert mask.area == case["area"]
    assert list(mask.bbox) == case["bbox"]


@pytest.mark.parametrize("index", range(9))
def test_compressed_rle_round_trips(index):
    array = list(random_masks())[index]
    rle = Mask(array).to_rle(compressed=True)
    assert isinstance(rle["counts"], str)
    json.dumps(rle)
    np.testing.assert_array_equal(Mask.from_rle(rle).array, array)


@pytest.mark.parametrize(
    "rle, fragment",
    [
        ({"size": [2, 2], "counts": [1, 2]}, "sum to 3"),
        ({"counts": [4]}, "COCO RLE dict"),
        ({"size": [2, 2], "counts": "\x7f"}, "invalid character"),
    ],
)
def test_malformed_rle_is_rejected(rle, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        Mask.from_rle(rle)


def test_area_and_bbox_are_in_coco_order():
    array = np.zeros((20, 30), bool)
    array[5:9, 10:25] = True
    mask = Mask(array)
    assert mask.area == 60
    assert mask.bbox == (10, 5, 15, 4)  # x, y, w, h
    assert Mask(np.zeros((3, 3), bool)).bbox == (0, 0, 0, 0)


def test_rectangle_becomes_one_polygon_with_its_corners():
    array = np.zeros((20, 30), bool)
    array[5:9, 10:25] = True
    polygons = Mask(array).to_polygons()
    assert len(polygons) == 1
    xs, ys = polygons[0][0::2], polygons[0][1::2]
    assert set(zip(xs, ys)) == {(10, 5), (10, 8), (24, 8), (24, 5)}


def test_polygons_fill_back_to_the_mask():
    yy, xx = np.mgrid[0:80, 0:100]
    array = ((xx - 30) ** 2 + (yy - 40) ** 2 < 15**2) | ((xx > 60) & (xx < 90) & (yy > 10) & (yy < 30))
    polygons = Mask(array).to_polygons()
    assert len(polygons) == 2
    filled = np.zeros(array.shape, np.uint8)
    for polygon in polygons:
        assert len(polygon) % 2 == 0 and len(polygon) >= 6
        cv2.fillPoly(filled, [np.array(polygon, np.int32).reshape(-1, 2)], 1)
    np.testing.assert_array_equal(filled.astype(bool), array)


def test_small_polygons_are_dropped_below_min_area():
    array = np.zeros((40, 40), bool)
    array[2:4, 2:4] = True  # tiny blob
    array[10:30, 10:30] = True
    assert len(Mask(array).to_polygons()) == 2
    assert len(Mask(array).to_polygons(min_area=10)) == 1


def test_png_round_trips_through_bytes_and_files(tmp_path):
    rng = np.random.default_rng(3)
    array = rng.random((33, 47)) < 0.4
    data = Mask(array).to_png()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint8 and decoded.shape == (33, 47)
    assert set(np.unique(decoded)) == {0, 255}
    np.testing.assert_array_equal(Mask.from_png(data).array, array)
    path = tmp_path / "mask.png"
    assert Mask(array).to_png(path) == data
    np.testing.assert_array_equal(Mask.from_png(path).array, array)


def test_undecodable_png_is_rejected():
    with pytest.raises(InvalidInputError, match="PNG"):
        Mask.from_png(b"not a png")


def test_mask_copies_and_freezes_its_arrays():
    array = np.zeros((4, 4), bool)
    prob = np.zeros((4, 4), np.float64)
    mask = Mask(array, prob)
    array[0, 0] = True
    assert not mask.array[0, 0]
    assert mask.prob.dtype == np.float32
    with pytest.raises(ValueError):
        mask.array[1, 1] = True


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2)), [[1, 0]], np.zeros(5)])
def test_mask_rejects_non_2d_input(bad):
    with pytest.raises(InvalidInputError, match="HxW"):
        Mask(bad)


def test_prob_must_match_the_mask_shape():
    with pytest.raises(InvalidInputError, match="prob"):
        Mask(np.zeros((4, 4), bool), np.zeros((3, 4), np.float32))

"""Zoom-in crop boxes (RITM's get_object_roi, exclusive ends)."""

from __future__ import annotations

import numpy as np
import pytest

from clickmask.client import Click, CropTransform, InvalidInputError, zoom_in_box
from clickmask.client.zoom_in import box_iou, roi_needs_update


def square_mask(height, width, rows, cols):
    mask = np.zeros((height, width), bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


def test_empty_mask_without_positive_clicks_gives_none():
    mask = np.zeros((50, 60), bool)
    assert zoom_in_box(mask, []) is None
    assert zoom_in_box(mask, [Click(x=10, y=10, positive=False)]) is None


def test_small_object_gets_the_minimum_crop_centred_on_it():
    mask = square_mask(500, 600, rows=(100, 109), cols=(200, 209))
    # centre (row 104.5, col 204.5), side max(1.4 * 10, 200) = 200, rounded half to even as RITM
    assert zoom_in_box(mask, []) == (104, 4, 305, 205)


def test_large_object_is_expanded_by_the_ratio():
    mask = square_mask(1000, 1000, rows=(350, 649), cols=(350, 649))
    # side 1.4 * 300 = 420 around 499.5: 289.5 -> 290, 709.5 -> 710 (inclusive) -> 711 exclusive
    assert zoom_in_box(mask, []) == (290, 290, 711, 711)


def test_box_is_clamped_to_the_image():
    mask = square_mask(300, 400, rows=(0, 299), cols=(0, 399))
    assert zoom_in_box(mask, []) == (0, 0, 400, 300)
    corner = square_mask(300, 400, rows=(0, 4), cols=(395, 399))
    x0, y0, x1, y1 = zoom_in_box(corner, [])
    assert (x1, y0) == (400, 0) and x0 >= 0 and y1 <= 300


def test_positive_clicks_extend_the_object_and_negative_ones_do_not():
    mask = square_mask(1000, 1000, rows=(400, 499), cols=(400, 499))
    base = zoom_in_box(mask, [Click(x=900, y=450, positive=False)])
    assert base == zoom_in_box(mask, [])
    x0, y0, x1, y1 = zoom_in_box(mask, [Click(x=900, y=450)])
    assert x1 > 900 and x0 < 400


def test_a_positive_click_alone_on_an_empty_mask_gives_a_crop_around_it():
    box = zoom_in_box(np.zeros((400, 400), bool), [Click(x=200, y=100)])
    assert box == (100, 0, 301, 201)


def test_box_is_ready_for_crop_transform():
    mask = square_mask(240, 320, rows=(50, 80), cols=(60, 120))
    box = zoom_in_box(mask, [Click(x=70, y=60)], min_crop_size=20)
    t = CropTransform(*box, size=64)
    t.check_inside(240, 320)


def test_zoom_in_does_not_mutate_the_mask():
    mask = np.zeros((100, 100), bool)
    mask.setflags(write=False)
    zoom_in_box(mask, [Click(x=5, y=5)])


@pytest.mark.parametrize("kwargs", [{"expansion_ratio": 0.5}, {"min_crop_size": 0}])
def test_bad_parameters_are_rejected(kwargs):
    with pytest.raises(InvalidInputError):
        zoom_in_box(np.ones((10, 10), bool), [], **kwargs)


def test_box_iou_is_the_product_of_interval_ious():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(5 / 15)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_roi_is_kept_while_clicks_stay_inside_and_overlap_is_high():
    roi = (100, 100, 300, 300)
    assert roi_needs_update(None, roi, [])
    assert not roi_needs_update(roi, (110, 100, 310, 300), [Click(x=150, y=150)])
    assert roi_needs_update(roi, (110, 100, 310, 300), [Click(x=305, y=150)])  # positive outside
    assert not roi_needs_update(roi, (110, 100, 310, 300), [Click(x=305, y=150, positive=False)])
    assert roi_needs_update(roi, (250, 250, 450, 450), [])  # overlap below 0.5

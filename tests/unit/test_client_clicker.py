"""The standard click simulator (RITM's clicker), IoU and ground-truth loading."""

from __future__ import annotations

import numpy as np
import pytest

from clickmask.client import Click, InvalidInputError, iou, load_gt, next_click


def box(height, width, rows, cols):
    mask = np.zeros((height, width), bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def test_first_click_is_the_centre_of_the_object():
    gt = box(50, 60, rows=(10, 21), cols=(30, 41))  # 11x11, centre row 15, col 35
    assert next_click(gt, np.zeros_like(gt)) == Click(x=35.0, y=15.0, positive=True)


def test_click_goes_to_the_largest_error_region():
    gt = box(100, 100, rows=(5, 10), cols=(5, 10)) | box(100, 100, rows=(40, 61), cols=(50, 71))
    click = next_click(gt, np.zeros_like(gt))
    assert click == Click(x=60.0, y=50.0, positive=True)


def test_false_positive_region_larger_than_false_negatives_gives_a_negative_click():
    gt = box(100, 100, rows=(0, 30), cols=(0, 30))
    pred = gt.copy()
    pred[2:4, 2:4] = False  # small false negative
    pred[60:81, 60:81] = True  # large false positive
    assert next_click(gt, pred) == Click(x=70.0, y=70.0, positive=False)


def test_equal_false_negative_and_false_positive_regions_tie_to_negative():
    gt = box(60, 60, rows=(10, 15), cols=(10, 15))
    pred = box(60, 60, rows=(40, 45), cols=(40, 45))
    click = next_click(gt, pred)
    assert click == Click(x=42.0, y=42.0, positive=False)


def test_image_border_counts_as_a_region_border():
    gt = np.ones((21, 21), bool)
    assert next_click(gt, np.zeros_like(gt)) == Click(x=10.0, y=10.0, positive=True)


def test_ties_in_distance_pick_the_first_pixel_in_row_major_order():
    gt = box(30, 40, rows=(10, 12), cols=(10, 30))  # every pixel of a 2-row bar is 1 px from the border
    assert next_click(gt, np.zeros_like(gt)) == Click(x=10.0, y=10.0, positive=True)


def test_ignored_pixels_are_never_clicked_and_act_as_borders():
    raw = np.zeros((40, 60), np.uint8)
    raw[5:35, 5:55] = 255
    raw[:, :30] = np.where(raw[:, :30] == 255, 128, 0)  # left half of the object is ignored
    gt, ignore = load_gt(raw)
    click = next_click(gt, np.zeros_like(gt), ignore)
    assert click.positive and click.x >= 30
    assert not ignore[int(click.y), int(click.x)]
    # the right half (rows 5..34, cols 30..54) is 25 wide: distance 13 at col 42 on rows 17..22,
    # the first of them in row-major order; the ignore band is the left border
    assert click == Click(x=42.0, y=17.0, positive=True)


def test_errors_only_inside_the_ignore_band_give_no_click():
    gt = box(20, 20, rows=(5, 15), cols=(5, 15))
    ignore = box(20, 20, rows=(4, 16), cols=(4, 16)) & ~box(20, 20, rows=(6, 14), cols=(6, 14))
    pred = gt & ~ignore  # wrong only on the ignored ring
    assert next_click(gt, pred, ignore) is None


def test_no_error_gives_none():
    gt = box(20, 20, rows=(5, 15), cols=(5, 15))
    assert next_click(gt, gt.copy()) is None


def test_previous_click_pixels_are_not_chosen_again():
    gt = box(50, 60, rows=(10, 21), cols=(30, 41))
    first = next_click(gt, np.zeros_like(gt))
    second = next_click(gt, np.zeros_like(gt), previous=[first])
    assert second is not None and (second.x, second.y) != (first.x, first.y)
    assert gt[int(second.y), int(second.x)]


def test_clicker_does_not_mutate_its_inputs():
    gt = box(30, 30, rows=(5, 20), cols=(5, 20))
    pred = np.zeros_like(gt)
    ignore = np.zeros_like(gt)
    for array in (gt, pred, ignore):
        array.setflags(write=False)
    next_click(gt, pred, ignore, previous=[Click(x=12, y=12)])


def test_shape_mismatch_is_rejected():
    with pytest.raises(InvalidInputError, match=r"\(10, 10\)"):
        next_click(np.zeros((10, 10), bool), np.zeros((10, 11), bool))


def test_iou_counts_intersection_over_union():
    gt = box(10, 10, rows=(0, 5), cols=(0, 10))  # 50 px
    pred = box(10, 10, rows=(0, 10), cols=(0, 5))  # 50 px, 25 shared
    assert iou(gt, pred) == pytest.approx(25 / 75)


def test_iou_excludes_ignored_pixels():
    gt = box(10, 10, rows=(0, 5), cols=(0, 10))
    pred = box(10, 10, rows=(0, 10), cols=(0, 10))
    ignore = box(10, 10, rows=(5, 10), cols=(0, 10))
    assert iou(gt, pred, ignore) == 1.0


def test_iou_of_two_empty_masks_is_one():
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0


def test_load_gt_splits_object_and_ignore():
    raw = np.array([[0, 128, 255, 1]], np.uint8)
    gt, ignore = load_gt(raw)
    np.testing.assert_array_equal(gt, [[False, False, True, True]])
    np.testing.assert_array_equal(ignore, [[False, True, False, False]])


def test_load_gt_rejects_colour_masks():
    with pytest.raises(InvalidInputError, match="IMREAD_GRAYSCALE"):
        load_gt(np.zeros((4, 4, 3), np.uint8))

"""The standard click simulator (RITM's ``Clicker``) and IoU, used by training, evaluation
and load tests so that our NoC numbers compare with the published ones.

Fixes over RITM's copy: no mutated arguments, no removed numpy aliases, an empty union gives
IoU 1.0, and "no error left" is reported as None instead of a click at (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ._validate import check_mask_2d, describe
from .clicks import Click
from .errors import InvalidInputError

__all__ = ["IGNORE_VALUE", "next_click", "iou", "load_gt"]

IGNORE_VALUE = 128
"""Mask value marking pixels ignored for clicking and IoU (GrabCut's uncertain band)."""


def load_gt(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a dataset mask into the object and the ignore region.

    Args:
        mask: HxW uint8; 0 background, 128 ignored, any other value object.

    Returns:
        ``(gt, ignore)``, both HxW bool.
    """
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.uint8:
        raise InvalidInputError(
            f"expected the ground-truth mask as an HxW uint8 array, got {describe(mask)}; "
            "read PNGs with cv2.imread(path, cv2.IMREAD_GRAYSCALE)"
        )
    ignore = mask == IGNORE_VALUE
    gt = (mask != 0) & ~ignore
    return gt, ignore


def _check_pair(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None):
    gt = check_mask_2d(gt, "gt")
    pred = check_mask_2d(pred, "pred", gt.shape)
    ignore = None if ignore is None else check_mask_2d(ignore, "ignore", gt.shape)
    return gt, pred, ignore


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """L2 distance of each region pixel to the nearest non-region pixel; borders count."""
    padded = np.pad(region.astype(np.uint8), 1, mode="constant")
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def next_click(
    gt: np.ndarray,
    pred: np.ndarray,
    ignore: np.ndarray | None = None,
    previous: Sequence[Click] = (),
) -> Click | None:
    """The next click of the standard protocol (RITM's ``Clicker._get_next_click``).

    False negatives ``gt & ~pred`` and false positives ``~gt & pred`` (both outside
    ``ignore``) are each zero-padded by one pixel, so the image border counts as a border,
    and distance-transformed (``cv2.DIST_L2``, precise mask). Pixels of ``previous`` clicks
    are excluded. The click is positive iff the largest false-negative distance beats the
    largest false-positive one (ties go negative, as in RITM), and lands on the first pixel
    in row-major order with that maximum distance: the most interior point of the thickest
    error region.

    Args:
        gt: HxW bool, the object.
        pred: HxW bool, the current prediction.
        ignore: HxW bool or None, pixels never clicked (value 128 in GrabCut).
        previous: clicks already made; their pixels are never chosen again.

    Returns:
        A :class:`Click` with integer-valued ``x`` (column) and ``y`` (row), or None when no
        clickable error is left.
    """
    gt, pred, ignore = _check_pair(gt, pred, ignore)
    valid = np.ones_like(gt) if ignore is None else ~ignore
    fn_dist = _inner_distance(gt & ~pred & valid)
    fp_dist = _inner_distance(~gt & pred & valid)
    height, width = gt.shape
    for click in previous:
        if 0 <= click.row < height and 0 <= click.col < width:
            fn_dist[click.row, click.col] = 0.0
            fp_dist[click.row, click.col] = 0.0
    fn_max = float(fn_dist.max()) if fn_dist.size else 0.0
    fp_max = float(fp_dist.max()) if fp_dist.size else 0.0
    positive = fn_max > fp_max
    best, dist = (fn_max, fn_dist) if positive else (fp_max, fp_dist)
    if best <= 0.0:
        return None
    flat = int(np.argmax(dist == best))  # first in row-major order
    row, col = divmod(flat, width)
    return Click(x=float(col), y=float(row), positive=positive)


def iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two HxW bool masks, excluding ``ignore`` pixels.

    An empty union (both masks empty outside ``ignore``) gives 1.0.
    """
    gt, pred, ignore = _check_pair(gt, pred, ignore)
    if ignore is not None:
        gt = gt & ~ignore
        pred = pred & ~ignore
    union = int(np.count_nonzero(gt | pred))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt & pred)) / union

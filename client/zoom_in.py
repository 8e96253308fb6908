"""Client-side zoom-in (RITM's ``ZoomIn`` / ``get_object_roi``).

After the first click the network sees a crop around the current object instead of the
whole image, which is what makes small objects segmentable at a fixed S. Boxes here are
``(x0, y0, x1, y1)`` with exclusive ``x1, y1``, ready for
:class:`~clickmask.client.encoding.CropTransform`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._validate import check_mask_2d
from .clicks import Click
from .errors import InvalidInputError

__all__ = ["Box", "zoom_in_box", "box_iou", "roi_needs_update", "RECOMPUTE_THRESH_IOU"]

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in full-image pixels, ``x1``/``y1`` exclusive."""

RECOMPUTE_THRESH_IOU = 0.5


def zoom_in_box(
    prev_mask: np.ndarray,
    clicks: Sequence[Click],
    expansion_ratio: float = 1.4,
    min_crop_size: int = 200,
) -> Box | None:
    """The zoom-in crop around the object, as RITM's ``get_object_roi`` computes it.

    The pixels of the positive clicks are added to the mask; the mask's bounding box is
    expanded around its centre by ``expansion_ratio`` (each side at least ``min_crop_size``
    pixels, ends rounded as RITM does) and clamped to the image.

    Args:
        prev_mask: HxW bool, the current (previous-click) mask at full resolution.
        clicks: all clicks so far, including the new one, in full-image coordinates.
        expansion_ratio: how much larger than the object's box the crop is (>= 1).
        min_crop_size: minimum crop side in image pixels.

    Returns:
        ``(x0, y0, x1, y1)`` with exclusive ends, or None when the mask plus the positive
        clicks is empty (then the caller uses the full image).
    """
    mask = check_mask_2d(prev_mask, "prev_mask")
    if not expansion_ratio >= 1.0:
        raise InvalidInputError(f"expansion_ratio must be >= 1, got {expansion_ratio}")
    if min_crop_size < 1:
        raise InvalidInputError(f"min_crop_size must be >= 1 pixel, got {min_crop_size}")
    height, width = mask.shape
    rows = np.any(mask, axis=1)
    cols = np.any(mask, axis=0)
    for click in clicks:  # positive clicks belong to the object; RITM adds them to the mask
        if click.positive and 0 <= click.row < height and 0 <= click.col < width:
            rows[click.row] = True
            cols[click.col] = True
    if not rows.any():
        return None
    row_idx = np.flatnonzero(rows)
    col_idx = np.flatnonzero(cols)
    rmin, rmax = int(row_idx[0]), int(row_idx[-1])  # inclusive, as in RITM
    cmin, cmax = int(col_idx[0]), int(col_idx[-1])

    rcenter = 0.5 * (rmin + rmax)
    ccenter = 0.5 * (cmin + cmax)
    box_h = max(expansion_ratio * (rmax - rmin + 1), min_crop_size)
    box_w = max(expansion_ratio * (cmax - cmin + 1), min_crop_size)
    # RITM rounds with Python's round (half to even); keep it for identical crops.
    rmin = max(0, int(round(rcenter - 0.5 * box_h)))
    rmax = min(height - 1, int(round(rcenter + 0.5 * box_h)))
    cmin = max(0, int(round(ccenter - 0.5 * box_w)))
    cmax = min(width - 1, int(round(ccenter + 0.5 * box_w)))
    return cmin, rmin, cmax + 1, rmax + 1


def _segment_iou(a0: int, a1: int, b0: int, b1: int) -> float:
    intersection = max(0, min(a1, b1) - max(a0, b0))
    union = max(1e-6, max(a1, b1) - min(a0, b0))
    return intersection / union


def box_iou(a: Box, b: Box) -> float:
    """RITM's box overlap: the product of the row-interval and column-interval IoUs."""
    return _segment_iou(a[0], a[2], b[0], b[2]) * _segment_iou(a[1], a[3], b[1], b[3])


def roi_needs_update(
    current: Box | None,
    candidate: Box,
    clicks: Sequence[Click],
    recompute_thresh_iou: float = RECOMPUTE_THRESH_IOU,
) -> bool:
    """RITM's rule for replacing the zoom-in crop used so far by a new candidate.

    The crop changes when there is none yet, when a positive click lies outside it, or when
    it overlaps the candidate by less than ``recompute_thresh_iou`` (see :func:`box_iou`).
    """
    if current is None:
        return True
    x0, y0, x1, y1 = current
    for click in clicks:
        if click.positive and not (x0 <= click.col < x1 and y0 <= click.row < y1):
            return True
    return box_iou(current, candidate) < recompute_thresh_iou

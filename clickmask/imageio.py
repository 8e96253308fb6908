"""Image files in and out for the CLI: RGB reading with clear errors, and the overlay picture."""
from __future__ import annotations

import pathlib
from typing import Sequence

import cv2
import numpy as np

from clickmask.client.errors import InvalidInputError

POSITIVE_BGR = (60, 200, 60)
NEGATIVE_BGR = (60, 60, 230)
MASK_BGR = np.array([255, 144, 30], dtype=np.float32)


def read_rgb(path: pathlib.Path | str) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grayscale files are expanded to three channels)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidInputError(f"image file {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInputError(f"cannot decode {path} as an image; use JPEG, PNG, BMP or TIFF")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: pathlib.Path | str) -> np.ndarray:
    """Read an 8-bit single-channel mask PNG (HxW uint8)."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise InvalidInputError(f"cannot read the mask {path}")
    if mask.ndim == 3:
        mask = mask[..., 0]
    return mask


def draw_overlay(image: np.ndarray, mask: np.ndarray, clicks: Sequence, path: pathlib.Path | str) -> None:
    """Write ``image`` with the mask tinted and its contour drawn, clicks as green/red dots."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).astype(np.float32)
    bgr[mask] = 0.55 * bgr[mask] + 0.45 * MASK_BGR
    canvas = bgr.clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, (255, 255, 255), 2)
    radius = max(4, round(max(image.shape[:2]) / 120))
    for click in clicks:
        centre = (int(round(click.x)), int(round(click.y)))
        cv2.circle(canvas, centre, radius + 2, (255, 255, 255), -1)
        cv2.circle(canvas, centre, radius, POSITIVE_BGR if click.positive else NEGATIVE_BGR, -1)
    if not cv2.imwrite(str(path), canvas):
        raise InvalidInputError(f"cannot write {path}; use a .png or .jpg name in an existing folder")

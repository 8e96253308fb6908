"""Image files in and out for the CLI: reading (the dataset reader's functions) and the overlay picture."""
from __future__ import annotations

import pathlib
from typing import Sequence

import cv2
import numpy as np

from clickmask.client.errors import InvalidInputError
from clickmask.datasets import read_image, read_mask  # noqa: F401 - re-exported for the CLI

POSITIVE_BGR = (60, 200, 60)
NEGATIVE_BGR = (60, 60, 230)
MASK_BGR = np.array([255, 144, 30], dtype=np.float32)


read_rgb = read_image  # the one image reader (clickmask.datasets), kept under the CLI's name


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

"""The model's input encoding and its inverse: the one copy used by every component.

Training, evaluation, the server adapter and the clients all build the network inputs with
these functions, so they cannot disagree. The tensor contract (per request, Triton adds the
batch dim):

=============  =========  ===========  ==================================================
tensor         dtype      shape        meaning
=============  =========  ===========  ==================================================
``image``      uint8      [3, S, S]    RGB crop, aspect kept, longer side S, top-left,
                                       zero padded
``clicks``     uint8      [2, S, S]    0/1 disks of radius 5 network px: 0 pos, 1 neg
``prev_mask``  uint8      [1, S, S]    previous probability x 255 (zeros at first click)
``mask_prob``  uint8      [1, S, S]    output: object probability x 255
=============  =========  ===========  ==================================================

Coordinates are pixel centres: ``x`` is the column, ``y`` the row. A full-image point maps to
the network as ``xn = (x - x0) * scale``, ``yn = (y - y0) * scale`` with
``scale = S / max(crop_h, crop_w)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .contract import DEFAULT_SIZE, DISK_RADIUS
from ._validate import check_prob_2d, check_rgb_image, describe
from .clicks import Click
from .errors import InvalidInputError

__all__ = [
    "DEFAULT_SIZE",
    "DISK_RADIUS",
    "CropTransform",
    "encode_image",
    "encode_clicks",
    "encode_prev_mask",
    "encode_inputs",
    "decode_prob",
]



def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


@dataclass(frozen=True)
class CropTransform:
    """Maps a crop box of the full image to the S x S network canvas and back.

    ``x0, y0`` is the top-left pixel of the crop, ``x1, y1`` are exclusive, ``size`` is S.
    The crop is resized with its aspect kept so that its longer side becomes S, placed at the
    top-left of the canvas, and the rest is zero padding.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    size: int

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidInputError(f"CropTransform.{name} must be an int, got {type(value).__name__}")
            object.__setattr__(self, name, int(value))
        if self.x0 < 0 or self.y0 < 0 or self.x1 <= self.x0 or self.y1 <= self.y0:
            raise InvalidInputError(
                f"invalid crop box x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1}: "
                "need 0 <= x0 < x1 and 0 <= y0 < y1 (x1, y1 exclusive)"
            )
        if self.size < 1:
            raise InvalidInputError(f"network size must be positive, got {self.size}")

    @classmethod
    def full(cls, height: int, width: int, size: int = DEFAULT_SIZE) -> "CropTransform":
        """The transform of the whole ``height x width`` image (no zoom-in)."""
        return cls(0, 0, int(width), int(height), int(size))

    @property
    def crop_hw(self) -> tuple[int, int]:
        """(rows, cols) of the crop in image pixels."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def scale(self) -> float:
        """Network pixels per image pixel: ``S / max(crop_h, crop_w)``."""
        return self.size / max(self.crop_hw)

    @property
    def content_hw(self) -> tuple[int, int]:
        """(rows, cols) of the resized crop inside the S x S canvas (the rest is padding)."""
        crop_h, crop_w = self.crop_hw
        scale = self.scale
        rows = min(self.size, max(1, _round_half_up(crop_h * scale)))
        cols = min(self.size, max(1, _round_half_up(crop_w * scale)))
        return rows, cols

    def to_network(self, x: float, y: float) -> tuple[float, float]:
        """Full-image ``(x, y)`` -> network ``(xn, yn)``."""
        scale = self.scale
        return (x - self.x0) * scale, (y - self.y0) * scale

    def to_image(self, xn: float, yn: float) -> tuple[float, float]:
        """Network ``(xn, yn)`` -> full-image ``(x, y)``; the inverse of :meth:`to_network`."""
        scale = self.scale
        return xn / scale + self.x0, yn / scale + self.y0

    def check_inside(self, height: int, width: int) -> None:
        """Raise InvalidInputError unless the crop box lies inside a ``height x width`` image."""
        if self.x1 > width or self.y1 > height:
            raise InvalidInputError(
                f"crop box ({self.x0}, {self.y0}, {self.x1}, {self.y1}) exceeds the "
                f"{height}x{width} image; clamp x1 <= {width} and y1 <= {height}"
            )


def _resize(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    if array.shape[0] == rows and array.shape[1] == cols:
        return array
    return cv2.resize(array, (cols, rows), interpolation=cv2.INTER_LINEAR)


def encode_image(image: np.ndarray, t: CropTransform) -> np.ndarray:
    """Crop, resize and pad an RGB image.

    Args:
        image: HxWx3 uint8 RGB, full resolution.
        t: the crop transform (its box must lie inside the image).

    Returns:
        uint8 [3, S, S], channel-first RGB; padding is 0.
    """
    image = check_rgb_image(image)
    t.check_inside(image.shape[0], image.shape[1])
    rows, cols = t.content_hw
    crop = np.ascontiguousarray(image[t.y0 : t.y1, t.x0 : t.x1])
    resized = _resize(crop, rows, cols)
    out = np.zeros((3, t.size, t.size), dtype=np.uint8)
    out[:, :rows, :cols] = resized.transpose(2, 0, 1)
    return out


def encode_clicks(clicks: Sequence[Click], t: CropTransform, radius: float = DISK_RADIUS) -> np.ndarray:
    """Draw each click as a disk of ``radius`` network pixels.

    A network pixel ``(xn, yn)`` (integer column, row) is set when
    ``(xn - cx)**2 + (yn - cy)**2 <= radius**2``, where ``(cx, cy) = t.to_network(x, y)``.
    Disks are clipped to the canvas; clicks outside the crop still draw their visible part.

    Args:
        clicks: sequence of :class:`Click` in full-image coordinates.
        t: the crop transform.
        radius: disk radius in network pixels.

    Returns:
        uint8 [2, S, S] of 0/1: channel 0 positive clicks, channel 1 negative clicks.
    """
    size = t.size
    out = np.zeros((2, size, size), dtype=np.uint8)
    if len(clicks) == 0:
        return out
    try:
        xs = np.array([c.x for c in clicks], dtype=np.float64)
        ys = np.array([c.y for c in clicks], dtype=np.float64)
        channels = np.array([0 if c.positive else 1 for c in clicks], dtype=np.intp)
    except AttributeError as error:
        raise InvalidInputError("expected clicks as a sequence of clickmask.client.Click") from error
    scale = t.scale
    cx = (xs - t.x0) * scale  # (N,)
    cy = (ys - t.y0) * scale
    r = float(radius)
    span = int(math.floor(r)) * 2 + 2
    offsets = np.arange(span)
    col = np.floor(cx - r).astype(np.intp)[:, None] + offsets  # (N, span)
    row = np.floor(cy - r).astype(np.intp)[:, None] + offsets
    inside = ((row[:, :, None] - cy[:, None, None]) ** 2 + (col[:, None, :] - cx[:, None, None]) ** 2) <= r * r
    inside &= ((row >= 0) & (row < size))[:, :, None] & ((col >= 0) & (col < size))[:, None, :]
    n, i, j = np.nonzero(inside)
    out[channels[n], row[n, i], col[n, j]] = 1
    return out


def encode_prev_mask(prob: np.ndarray | None, t: CropTransform) -> np.ndarray:
    """Crop, resize and quantise the previous full-resolution probability.

    Args:
        prob: HxW float in [0, 1] (the previous prediction), or None before the first click.
        t: the crop transform.

    Returns:
        uint8 [1, S, S]: ``round(prob * 255)`` inside the content region, 0 in the padding.
    """
    out = np.zeros((1, t.size, t.size), dtype=np.uint8)
    if prob is None:
        return out
    prob = check_prob_2d(prob, "prev_prob")
    t.check_inside(prob.shape[0], prob.shape[1])
    rows, cols = t.content_hw
    crop = np.ascontiguousarray(prob[t.y0 : t.y1, t.x0 : t.x1])
    resized = _resize(crop, rows, cols)
    out[0, :rows, :cols] = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
    return out


def encode_inputs(
    image: np.ndarray,
    clicks: Sequence[Click],
    prev_prob: np.ndarray | None,
    t: CropTransform,
) -> dict[str, np.ndarray]:
    """All three model inputs for one request.

    Returns:
        ``{"image": uint8 [3,S,S], "clicks": uint8 [2,S,S], "prev_mask": uint8 [1,S,S]}``
    """
    return {
        "image": encode_image(image, t),
        "clicks": encode_clicks(clicks, t),
        "prev_mask": encode_prev_mask(prev_prob, t),
    }


def decode_prob(mask_prob: np.ndarray, t: CropTransform, image_hw: tuple[int, int]) -> np.ndarray:
    """Paste the network output back into a full-resolution probability map.

    Args:
        mask_prob: uint8 [1, S, S] or [S, S], probability x 255 (the model output).
        t: the crop transform used to encode the request.
        image_hw: (H, W) of the full image.

    Returns:
        float32 HxW in [0, 1]: the content region resized back to the crop box (bilinear),
        zero outside the crop.
    """
    size = t.size
    if (
        not isinstance(mask_prob, np.ndarray)
        or mask_prob.dtype != np.uint8
        or tuple(mask_prob.shape) not in ((1, size, size), (size, size))
    ):
        raise InvalidInputError(
            f"expected mask_prob as uint8 [1,{size},{size}] or [{size},{size}], got {describe(mask_prob)}"
        )
    height, width = int(image_hw[0]), int(image_hw[1])
    t.check_inside(height, width)
    plane = mask_prob.reshape(size, size)
    rows, cols = t.content_hw
    content = plane[:rows, :cols].astype(np.float32) * np.float32(1.0 / 255.0)
    crop_h, crop_w = t.crop_hw
    out = np.zeros((height, width), dtype=np.float32)
    out[t.y0 : t.y1, t.x0 : t.x1] = _resize(content, crop_h, crop_w)
    np.clip(out, 0.0, 1.0, out=out)
    return out

"""Input checks shared by the client modules; each raises InvalidInputError saying how to fix it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InvalidInputError


def describe(value: Any) -> str:
    """Short description of a value for error messages: dtype and shape for arrays."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


def check_rgb_image(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is an HxWx3 uint8 array, else raise InvalidInputError."""
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] < 1
        or image.shape[1] < 1
    ):
        raise InvalidInputError(
            f"expected {name} as an HxWx3 uint8 RGB array, got {describe(image)}; "
            "convert with np.asarray(pil_image.convert('RGB')) or cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)"
        )
    return image


def check_mask_2d(mask: Any, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``mask`` as a bool HxW array (any numeric/bool dtype accepted)."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not (
        mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.number)
    ):
        raise InvalidInputError(f"expected {name} as an HxW bool array, got {describe(mask)}")
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise InvalidInputError(
            f"expected {name} of shape {tuple(shape)} (the image's HxW), got {tuple(mask.shape)}"
        )
    return mask.astype(bool, copy=False)


def check_prob_2d(prob: Any, name: str = "prob") -> np.ndarray:
    """Return ``prob`` as a float32 HxW array in [0, 1]."""
    if not isinstance(prob, np.ndarray) or prob.ndim != 2 or not np.issubdtype(prob.dtype, np.floating):
        raise InvalidInputError(
            f"expected {name} as an HxW float array with values in [0, 1], got {describe(prob)}"
        )
    if prob.size and (not np.isfinite(prob).all() or prob.min() < 0.0 or prob.max() > 1.0):
        raise InvalidInputError(f"expected {name} values in [0, 1]; clip or apply a sigmoid first")
    return prob.astype(np.float32, copy=False)


def check_coordinate(value: Any, name: str, limit: int) -> float:
    """Return ``value`` as float if it is a finite number in ``[0, limit - 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"expected {name} as a number of pixels, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > limit - 1:
        raise InvalidInputError(
            f"{name}={value:g} is outside the image: pixel centres run from 0 to {limit - 1}; "
            f"clamp the click to [0, {limit - 1}]"
        )
    return value

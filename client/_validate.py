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


#: Largest image a session accepts (64 megapixels, e.g. 8192 x 8192). Memory per click grows
#: with the pixel count (the full-resolution probability is kept for undo), so bigger images
#: should be downscaled (or tiled) by the caller.
MAX_IMAGE_PIXELS = 8192 * 8192


def check_rgb_image(image: Any, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Return ``image`` if it is an HxWx3 uint8 array, else raise InvalidInputError.

    The library takes exactly one image format and converts nothing silently; each refusal
    names the conversion that fixes it (grayscale, RGBA, 16-bit and float images are common).
    ``max_pixels`` bounds H*W (None: no bound).
    """
    fix = None
    if not isinstance(image, np.ndarray):
        fix = "convert with np.asarray(pil_image.convert('RGB'))"
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        fix = "a grayscale image: expand it with np.repeat(gray.reshape(h, w, 1), 3, axis=2)"
    elif image.ndim == 3 and image.shape[2] == 4:
        fix = "an RGBA image: drop the alpha channel with image[..., :3]"
    elif image.ndim != 3 or image.shape[2] != 3:
        fix = "convert with np.asarray(pil_image.convert('RGB')) or cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)"
    elif image.dtype == np.uint16:
        fix = "a 16-bit image: scale it to 8 bits, e.g. (image >> 8).astype(np.uint8)"
    elif np.issubdtype(image.dtype, np.floating):
        fix = "a float image: np.clip(image * 255, 0, 255).astype(np.uint8) if it holds [0, 1] (NaN and inf are refused)"
    elif image.dtype != np.uint8:
        fix = "convert it to uint8 RGB"
    elif image.shape[0] < 1 or image.shape[1] < 1:
        fix = "it has no pixels"
    if fix is not None:
        raise InvalidInputError(f"expected {name} as an HxWx3 uint8 RGB array, got {describe(image)}; {fix}")
    pixels = image.shape[0] * image.shape[1]
    if max_pixels is not None and pixels > max_pixels:
        raise InvalidInputError(
            f"{name} of {image.shape[1]}x{image.shape[0]} pixels exceeds the limit of {max_pixels / 1e6:.0f} "
            "megapixels; downscale it (cv2.resize with INTER_AREA) or raise max_image_pixels"
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

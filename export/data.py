"""Training data: object discovery, the fixed validation split, augmented crops, click sampling.

Dataset folders and their mask conventions (binary, instance ids, MSRC's 255 ignore) are read by
:mod:`clickmask.datasets`, the one reader shared with evaluation.

Everything here is numpy/OpenCV; the clicks use ``clickmask.client`` (the one copy of the
encoding and the clicker shared with serving).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from clickmask.client.clicker import next_click
from clickmask.client.clicks import Click
from clickmask.datasets import EVALUATION_ONLY_SETS, IMAGE_SUFFIXES, ObjectRef, list_objects, load_object
from clickmask.datasets import read_image as load_image

__all__ = ["EVALUATION_ONLY_SETS", "ObjectRef", "discover_objects", "load_image", "load_object", "split_objects",
           "AugmentConfig", "TrainSample", "augment", "ClickSamplerConfig", "sample_initial_clicks",
           "list_backgrounds", "paste_object"]

def discover_objects(root: str | Path, dataset: str, min_object_fraction: float = 0.01) -> list[ObjectRef]:
    """The training objects of ``root/dataset`` in a stable (sorted) order (the one dataset reader)."""
    return list_objects(root, dataset, min_object_fraction=min_object_fraction, training=True)


def _hash_unit(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_objects(objects: list[ObjectRef], val_fraction: float, seed: int) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Fixed train/validation split by image group, per dataset.

    Each dataset's groups are ranked by a seeded hash and the lowest ``val_fraction`` (at least
    one group) go to validation: adding files to a set does not reshuffle the others.
    """
    train, val = [], []
    by_dataset: dict[str, list[ObjectRef]] = {}
    for obj in objects:
        by_dataset.setdefault(obj.dataset, []).append(obj)
    for items in by_dataset.values():
        groups = sorted({o.group for o in items}, key=lambda g: _hash_unit(g, seed))
        n_val = max(1, round(val_fraction * len(groups))) if val_fraction > 0 else 0
        val_groups = set(groups[:n_val])
        for o in items:
            (val if o.group in val_groups else train).append(o)
    return train, val


# ------------------------------------------------------------------------------ copy-paste
def list_backgrounds(root: str | Path, name: str = "BSDS500_backgrounds") -> list[Path]:
    """The background images of ``root/name/images`` (sorted), for copy-paste."""
    folder = Path(root) / name / "images"
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no background images in {folder}: copy-paste needs the {name} set "
                                "(or --copy-paste 0)")
    return paths


def paste_object(image: np.ndarray, gt: np.ndarray, background: np.ndarray, rng: np.random.Generator,
                 feather: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy-paste: the object's pixels of ``image`` onto ``background`` at a random place.

    The background is resized so that its longer side equals the source image's, so the object
    keeps its size relative to the frame (and the full view at S keeps its scale); it is grown
    further only if the object would not fit. The alpha edge is feathered by a Gaussian of
    ``feather`` px, like a camera's blur, so the network cannot find the object by a cut-out
    edge. Returns ``(image, gt, ignore)``: the object's mask moves with it, and nothing is
    ignored (the source's ignore band stays behind with its background).
    """
    h, w = gt.shape
    bh, bw = background.shape[:2]
    ys, xs = np.nonzero(gt)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    oh, ow = y1 - y0, x1 - x0
    scale = max(max(h, w) / max(bh, bw), oh / bh, ow / bw)
    size = (max(ow, int(math.ceil(bw * scale))), max(oh, int(math.ceil(bh * scale))))
    canvas = cv2.resize(background, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    height, width = canvas.shape[:2]
    ty, tx = int(rng.integers(0, height - oh + 1)), int(rng.integers(0, width - ow + 1))
    # the object's box plus a margin for the feathered edge, clipped to both images
    m = int(math.ceil(3 * feather))
    sy0, sy1, sx0, sx1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
    dy0, dx0 = ty - (y0 - sy0), tx - (x0 - sx0)
    cy0, cx0 = max(0, -dy0), max(0, -dx0)
    cy1 = min(sy1 - sy0, height - dy0)
    cx1 = min(sx1 - sx0, width - dx0)
    src_mask = gt[sy0:sy1, sx0:sx1].astype(np.float32)
    alpha = cv2.GaussianBlur(src_mask, (0, 0), feather) if feather > 0 else src_mask
    alpha = np.maximum(alpha, src_mask)[cy0:cy1, cx0:cx1, None]  # the object itself stays opaque
    src = image[sy0:sy1, sx0:sx1].astype(np.float32)[cy0:cy1, cx0:cx1]
    region = canvas[dy0 + cy0:dy0 + cy1, dx0 + cx0:dx0 + cx1]
    canvas[dy0 + cy0:dy0 + cy1, dx0 + cx0:dx0 + cx1] = region * (1 - alpha) + src * alpha
    out_gt = np.zeros((height, width), bool)
    out_gt[dy0 + cy0:dy0 + cy1, dx0 + cx0:dx0 + cx1] = src_mask[cy0:cy1, cx0:cx1] > 0.5
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), out_gt, np.zeros((height, width), bool)


# ------------------------------------------------------------------------------ augmentation
@dataclass(frozen=True)
class AugmentConfig:
    crop_size: int = 256
    view_size: int = 320  # the serving size S: full views keep the object's pixel scale at S
    scale_min: float = 0.85
    scale_max: float = 1.3
    zoom_fraction: tuple[float, float] = (0.3, 0.8)  # object's longer side / max(crop, S), zoomed views
    zoom_prob: float = 0.5
    color_jitter: float = 0.2
    flip: bool = True
    min_object_pixels: int = 64


@dataclass
class TrainSample:
    """One augmented training crop (all arrays crop_size x crop_size).

    ``valid`` marks real image pixels (False in the zero padding, which the loss ignores and
    the clicker never clicks); ``gt`` excludes ignored pixels, ``ignore`` holds them.
    """

    image: np.ndarray  # HxWx3 uint8
    gt: np.ndarray  # HxW bool
    ignore: np.ndarray  # HxW bool (dataset ignore band or padding)
    valid: np.ndarray  # HxW bool


def _warp(array: np.ndarray, matrix: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    return cv2.warpAffine(array, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _color_jitter(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    if amount <= 0:
        return image
    x = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, size=3)
    x = x * brightness
    x = (x - x.mean()) * contrast + x.mean()
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * saturation + gray
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def augment(image: np.ndarray, gt: np.ndarray, ignore: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator) -> TrainSample | None:
    """A random square crop of ``cfg.crop_size`` that contains (most of) the object.

    Two views, like serving: the whole image resized so its longer side is ``view_size``
    (the serving S, times a scale jitter), as for the first click; or a zoom-in around the
    object (its longer side a ``zoom_fraction`` of max(crop, S)), as after zoom-in. Content smaller than the crop sits at
    the top-left with zero padding, exactly like ``CropTransform``. Returns None when the
    object ends up too small.
    """
    size = cfg.crop_size
    height, width = gt.shape
    ys, xs = np.nonzero(gt)
    if ys.size == 0:
        return None
    bx0, bx1, by0, by1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    full_scale = cfg.view_size / max(height, width)
    if rng.random() < cfg.zoom_prob:
        # a zoom-in never shows the image smaller than the full view does
        # relative to the serving size S: after zoom-in the object fills about S / 1.4
        scale = max(size, cfg.view_size) * rng.uniform(*cfg.zoom_fraction) / max(bx1 - bx0, by1 - by0)
        scale = min(max(scale, full_scale * cfg.scale_min), 4.0 * full_scale)
    else:
        scale = full_scale * rng.uniform(cfg.scale_min, cfg.scale_max)

    def offset(lo: float, hi: float, extent: float) -> float:
        # crop start (scaled px) so that [lo, hi) lies inside [start, start + size) if possible
        if extent <= size:
            return 0.0
        low, high = max(0.0, hi - size), min(lo, extent - size)
        if low > high:  # object larger than the crop: any window inside the object span
            low, high = max(0.0, lo), max(0.0, min(hi - size, extent - size))
            low, high = min(low, high), max(low, high)
        return float(rng.uniform(low, high))

    ox = offset(bx0 * scale, bx1 * scale, width * scale)
    oy = offset(by0 * scale, by1 * scale, height * scale)
    # cv2.resize's pixel-centre convention: dst = s * src + (s - 1) / 2, then the crop shift
    shift = (scale - 1.0) / 2.0
    matrix = np.array([[scale, 0, shift - ox], [0, scale, shift - oy]], np.float64)
    out_image = _warp(image, matrix, size, cv2.INTER_LINEAR)
    out_gt = _warp(gt.astype(np.uint8) * 255, matrix, size, cv2.INTER_LINEAR) >= 128
    out_ignore = _warp(ignore.astype(np.uint8) * 255, matrix, size, cv2.INTER_LINEAR) >= 128
    content_w = min(size, int(math.floor(width * scale - ox + 0.5)))
    content_h = min(size, int(math.floor(height * scale - oy + 0.5)))
    valid = np.zeros((size, size), bool)
    valid[:max(content_h, 0), :max(content_w, 0)] = True
    out_gt &= valid & ~out_ignore
    if np.count_nonzero(out_gt) < cfg.min_object_pixels:
        return None
    if cfg.flip and rng.random() < 0.5:
        # flip the content only, so the padding stays bottom/right like CropTransform
        cw = max(content_w, 0)
        for arr in (out_image, out_gt, out_ignore):
            arr[:, :cw] = arr[:, :cw][:, ::-1].copy()
    out_image = _color_jitter(out_image, cfg.color_jitter, rng)
    out_image[~valid] = 0
    return TrainSample(out_image, out_gt, out_ignore | ~valid, valid)


# --------------------------------------------------------------------------- click sampling
@dataclass(frozen=True)
class ClickSamplerConfig:
    max_pos: int = 3
    max_neg: int = 2
    min_neg: int = 0  # at least this many negatives (part objects: a positive alone means the whole object)
    first_click_standard_prob: float = 0.3  # first positive = the evaluation protocol's first click
    border_fraction: float = 0.3  # positives keep at least this share of the max inner distance
    neg_band_px: tuple[float, float] = (6.0, 40.0)  # negatives this far from the object
    min_separation_px: float = 10.0


def _inner_distance(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _count(max_count: int, minimum: int, rng: np.random.Generator, decay: float = 0.6) -> int:
    counts = np.arange(minimum, max_count + 1)
    weights = decay ** (counts - minimum)
    return int(rng.choice(counts, p=weights / weights.sum()))


def _pick(candidates: np.ndarray, n: int, chosen: list[tuple[int, int]], sep: float,
          rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to n (row, col) from a boolean candidate map, at least ``sep`` apart from the rest."""
    rows, cols = np.nonzero(candidates)
    picked: list[tuple[int, int]] = []
    if rows.size == 0:
        return picked
    for idx in rng.permutation(rows.size)[: 50 * max(n, 1)]:
        if len(picked) == n:
            break
        r, c = int(rows[idx]), int(cols[idx])
        if all((r - pr) ** 2 + (c - pc) ** 2 >= sep ** 2 for pr, pc in chosen + picked):
            picked.append((r, c))
    return picked


def sample_initial_clicks(gt: np.ndarray, valid: np.ndarray, cfg: ClickSamplerConfig,
                          rng: np.random.Generator, ignore: np.ndarray | None = None) -> list[Click]:
    """RITM's multi-point idea, simplified: 1..max_pos positives inside the object away from its
    border, then min_neg..max_neg negatives outside it, near the object, inside ``valid`` pixels.

    Returns clicks in crop pixel coordinates (``x`` column, ``y`` row), positives first.
    """
    clicks: list[Click] = []
    chosen: list[tuple[int, int]] = []
    n_pos = _count(cfg.max_pos, 1, rng)
    if rng.random() < cfg.first_click_standard_prob:
        first = next_click(gt, np.zeros_like(gt), ignore)
        if first is not None:
            clicks.append(first)
            chosen.append((first.row, first.col))
    inner = _inner_distance(gt)
    if inner.max() > 0:
        deep = inner >= max(1.0, cfg.border_fraction * float(inner.max()))
        for r, c in _pick(deep, n_pos - len(clicks), chosen, cfg.min_separation_px, rng):
            clicks.append(Click(x=float(c), y=float(r), positive=True))
            chosen.append((r, c))
    n_neg = _count(max(cfg.max_neg, cfg.min_neg), cfg.min_neg, rng)
    if n_neg:
        outer = _inner_distance(~gt)
        near, far = cfg.neg_band_px
        band = (outer >= near) & (outer <= far) & valid
        if ignore is not None:
            band &= ~ignore
        for r, c in _pick(band, n_neg, chosen, cfg.min_separation_px, rng):
            clicks.append(Click(x=float(c), y=float(r), positive=False))
    return clicks

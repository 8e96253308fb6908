"""The device-resident training path: samples that never leave the accelerator.

The CPU path (:mod:`clickmask.export.train`) draws each batch with OpenCV in worker processes,
and runs the click rounds one sample at a time in the main process (a ``.cpu()`` copy of the
prediction and a CPU :func:`clickmask.client.clicker.next_click` per sample). Here the same
recipe runs batched on the device:

- **Data:** every image and label map of the staged shards (:mod:`clickmask.export.shards`)
  decoded once into device memory (:class:`ResidentData`, uint8, zero padded to the longest
  side); objects are drawn by the recipe's set weights (inverse CDF, no host sync).
- **Augmentation:** :func:`augment_batch` is the twin of :func:`clickmask.export.data.augment`:
  the same two views (full view with scale jitter, zoom-in around the object), crop offsets,
  top-left placement with zero padding, content-only flip, brightness/contrast/saturation
  jitter, computed from uniform draws ``u`` (one column per draw of the CPU code) and applied
  with one ``grid_sample``. Bilinear sampling replaces ``cv2.warpAffine`` (which rounds
  coordinates to 1/32 px), so pixels differ by a few levels at most; the tests state the bounds.
- **Clicks:** :func:`squared_edt` is an exact squared Euclidean distance transform (a row pass
  by running max/min of background indices, then an exact min-plus column pass), so
  :func:`next_clicks` is the standard clicker itself: the first pixel, in row-major order, of
  the largest interior distance of the false-negative or false-positive region, positive iff
  the FN maximum beats the FP one, previous click pixels excluded.
  :func:`initial_clicks` follows :func:`clickmask.export.data.sample_initial_clicks`.
- **Step:** the no-grad click rounds, then forward/backward under autocast (bf16 on CUDA),
  channels-last, optionally ``torch.compile``; each phase is timed by CUDA events, which do not
  synchronise, so the step has no host round trip except the loss read every ``log_every`` steps.
- **Randomness:** every draw of step ``n`` comes from generators seeded by ``(seed, n)``, so the
  state to resume is the step alone (:func:`save_split_state` / :func:`load_split_state` split
  weights, optimiser and step into files under a size limit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import pathlib
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from clickmask.client.contract import DISK_RADIUS

from .data import AugmentConfig, ClickSamplerConfig
from .losses import IGNORE_LABEL, RITMLoss
from .shards import LABEL_IGNORE, ShardImage
from .train import _param_groups, lr_factor, parse_set_weights
from .train_config import TrainConfig

PHASES = ("sample", "clicks", "forward_backward", "optimizer")
STATE_META = "state-meta.json"
STATE_PART = "state-part-{:02d}.pt"
STATE_LIMIT_BYTES = 15 * 2**20  # under the 16 MiB a result file may have
TENSOR_OVERHEAD_BYTES = 1024  # what torch.save adds per tensor (zip entry, alignment, pickle), generously


# ------------------------------------------------------------------------------ distance transform
def _row_pass(region: torch.Tensor) -> torch.Tensor:
    """Squared distance along each row to the nearest background pixel; columns -1 and W count as
    background (the 1-px zero padding of the CPU clicker)."""
    width = region.shape[-1]
    idx = torch.arange(width, device=region.device)
    left = torch.where(region, -1, idx).cummax(dim=-1).values
    right = torch.where(region, width, idx).flip(-1).cummin(dim=-1).values.flip(-1)
    dist = torch.minimum(idx - left, right - idx).to(torch.float32)
    return dist * dist


def _column_min_plus(lines: torch.Tensor, parabola: torch.Tensor) -> torch.Tensor:
    """``out[n, i] = min_j lines[n, j] + (i - j)**2`` (``parabola[i, j] = (i - j)**2``)."""
    return (lines[:, None, :] + parabola).amin(dim=-1)


def squared_edt(region: torch.Tensor, max_elements: int = 2**27, column_pass=None) -> torch.Tensor:
    """Exact squared Euclidean distance of every pixel of ``region`` [N, H, W] (bool) to the
    nearest pixel outside it, the image border counting as outside (as ``cv2.distanceTransform``
    with ``DIST_L2`` and the precise mask on the 1-px zero-padded map). float32, exact integers.

    The column pass is a brute-force min-plus over each column, in chunks of at most
    ``max_elements`` intermediate values; ``column_pass`` replaces :func:`_column_min_plus`
    (a compiled copy fuses it into one kernel).
    """
    n, height, width = region.shape
    rows = _row_pass(region)  # [N, H, W]
    lines = rows.transpose(1, 2).reshape(n * width, height)
    idx = torch.arange(height, device=region.device, dtype=torch.float32)
    parabola = (idx[:, None] - idx[None, :]) ** 2
    border = torch.minimum(idx + 1, height - idx) ** 2  # the padding rows -1 and H
    fn = column_pass or _column_min_plus
    chunk = max(1, max_elements // (height * height))
    out = torch.cat([fn(lines[s:s + chunk], parabola) for s in range(0, lines.shape[0], chunk)])
    out = torch.minimum(out, border)
    return out.reshape(n, width, height).transpose(1, 2).contiguous()


# ------------------------------------------------------------------------------ clicks
@dataclasses.dataclass
class ClickSet:
    """Up to K clicks per sample: ``xy`` long [B, K, 2] (x column, y row), ``sign`` int8 [B, K]
    (+1 positive, -1 negative, 0 no click)."""

    xy: torch.Tensor
    sign: torch.Tensor

    @classmethod
    def empty(cls, batch: int, slots: int, device) -> ClickSet:
        return cls(torch.zeros(batch, slots, 2, dtype=torch.long, device=device),
                   torch.zeros(batch, slots, dtype=torch.int8, device=device))

    def put(self, slot: int, xy: torch.Tensor, sign: torch.Tensor) -> None:
        self.xy[:, slot] = xy
        self.sign[:, slot] = sign


def click_maps(clicks: ClickSet, size: int, radius: float = DISK_RADIUS) -> torch.Tensor:
    """float [B, 2, S, S] 0/1 disks: the batched twin of :func:`clickmask.client.encoding.encode_clicks`
    on ``CropTransform.full(S, S, S)`` (a pixel is set when its squared distance to the click is
    at most ``radius**2``)."""
    idx = torch.arange(size, device=clicks.xy.device, dtype=torch.float32)
    x = clicks.xy[..., 0].to(torch.float32)[..., None, None]
    y = clicks.xy[..., 1].to(torch.float32)[..., None, None]
    disks = ((idx[:, None] - y) ** 2 + (idx[None, :] - x) ** 2) <= radius * radius  # [B, K, S, S]
    pos = (disks & (clicks.sign > 0)[..., None, None]).any(dim=1)
    neg = (disks & (clicks.sign < 0)[..., None, None]).any(dim=1)
    return torch.stack([pos, neg], dim=1).to(torch.float32)


def _zero_at_clicks(dist: torch.Tensor, clicks: ClickSet | None) -> torch.Tensor:
    """``dist`` [B, H, W] with the pixels of the clicks set to 0 (empty slots leave it unchanged)."""
    if clicks is None:
        return dist
    b, height, width = dist.shape
    xy = clicks.xy
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
    index = xy[..., 1].clamp(0, height - 1) * width + xy[..., 0].clamp(0, width - 1)
    hits = torch.zeros(b, height * width, dtype=torch.int32, device=dist.device)
    hits.scatter_add_(1, index, ((clicks.sign != 0) & inside).to(torch.int32))  # duplicates add up
    return torch.where(hits.reshape(b, height, width) > 0, torch.zeros_like(dist), dist)


def _first_argmax(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the maximum of ``dist`` [B, H, W] and its first pixel in row-major order (x, y)."""
    b, _, width = dist.shape
    values = dist.reshape(b, -1)
    best = values.amax(dim=1)
    # the smallest index holding the maximum (max/argmax do not promise which tie they return)
    index = torch.arange(values.shape[1], device=dist.device)
    flat = torch.where(values == best[:, None], index, values.shape[1]).amin(dim=1)
    return best, torch.stack([flat % width, flat // width], dim=-1)


def next_clicks(gt: torch.Tensor, pred: torch.Tensor, ignore: torch.Tensor | None = None,
                previous: ClickSet | None = None, **edt: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard clicker (:func:`clickmask.client.clicker.next_click`) on a batch.

    Args:
        gt, pred, ignore: bool [B, H, W].
        previous: clicks already made; their pixels are never chosen again.

    Returns:
        ``(xy long [B, 2], sign int8 [B])``: x column, y row; sign +1/-1, 0 where no clickable
        error is left. Distances are compared squared, which orders them as the CPU's do.
    """
    valid = torch.ones_like(gt) if ignore is None else ~ignore
    both = squared_edt(torch.cat([gt & ~pred & valid, ~gt & pred & valid]), **edt)
    fn, fp = both.chunk(2)
    fn_max, fn_xy = _first_argmax(_zero_at_clicks(fn, previous))
    fp_max, fp_xy = _first_argmax(_zero_at_clicks(fp, previous))
    positive = fn_max > fp_max  # ties go negative, as in RITM
    xy = torch.where(positive[:, None], fn_xy, fp_xy)
    found = torch.maximum(fn_max, fp_max) > 0
    sign = torch.where(positive, 1, -1).to(torch.int8) * found.to(torch.int8)
    return xy, sign


def draw_index(weights: torch.Tensor, n: int | None, gen: torch.Generator) -> torch.Tensor:
    """Indices drawn with probability proportional to ``weights`` (with replacement), by inverse
    CDF: ``n`` draws from a [M] vector, or one per row of a [B, M] matrix (``n`` None).
    Unlike ``torch.multinomial`` this never waits for the device."""
    cdf = weights.to(torch.float64).cumsum(dim=-1)
    if weights.dim() == 1:
        u = torch.rand(n, generator=gen, device=weights.device, dtype=torch.float64) * cdf[-1]
    else:
        u = torch.rand(weights.shape[0], 1, generator=gen, device=weights.device, dtype=torch.float64) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).clamp_max(weights.shape[-1] - 1)
    return index if weights.dim() == 1 else index[:, 0]


def _counts(low: torch.Tensor, high: int, gen: torch.Generator, decay: float = 0.6) -> torch.Tensor:
    """Per sample a count in ``low[b]..high`` with probability proportional to ``decay**(c - low)``
    (the CPU sampler's ``_count``)."""
    c = torch.arange(high + 1, device=low.device)
    weights = torch.where(c[None, :] >= low[:, None], decay ** (c[None, :] - low[:, None]).clamp_min(0).float(),
                          torch.zeros((), device=low.device))
    return draw_index(weights, None, gen)


def _pick_separated(candidates: torch.Tensor, count: torch.Tensor, slots: int, chosen: list[torch.Tensor],
                    sep: float, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``count[b]`` uniformly random pixels of ``candidates`` [B, H, W], each at least ``sep``
    from the others and from the ``chosen`` pairs ``(xy [B, 2], present [B])``. Returns ``slots``
    pairs ``(xy, picked)``: a random permutation's first separated pixels, as the CPU ``_pick``."""
    b, height, width = candidates.shape
    rows = torch.arange(height, device=candidates.device, dtype=torch.float32)[:, None]
    cols = torch.arange(width, device=candidates.device, dtype=torch.float32)[None, :]
    free = candidates.clone()
    for xy, mask in chosen:
        far = (rows - xy[:, 1, None, None]) ** 2 + (cols - xy[:, 0, None, None]) ** 2 >= sep * sep
        free &= far | ~mask[:, None, None]
    out = []
    for slot in range(slots):
        score = torch.rand(b, height, width, generator=gen, device=candidates.device) * free
        best, xy = _first_argmax(score)
        picked = (best > 0) & (count > slot)
        far = (rows - xy[:, 1, None, None].float()) ** 2 + (cols - xy[:, 0, None, None].float()) ** 2 >= sep * sep
        free &= far | ~picked[:, None, None]
        out.append((xy, picked))
    return out


def initial_clicks(gt: torch.Tensor, valid: torch.Tensor, ignore: torch.Tensor, cfg: ClickSamplerConfig,
                   slots: int, gen: torch.Generator, min_neg: torch.Tensor | None = None, **edt: Any) -> ClickSet:
    """The batched twin of :func:`clickmask.export.data.sample_initial_clicks` (in distribution:
    the draws differ): 1..max_pos positives at least ``border_fraction`` of the maximal inner
    distance inside the object (with ``first_click_standard_prob`` the first is the standard
    clicker's first click), then ``min_neg..max_neg`` negatives 6-40 px outside it in valid,
    unignored pixels, all ``min_separation_px`` apart. ``min_neg`` [B] overrides ``cfg.min_neg``
    per sample (part sets). Returns a :class:`ClickSet` of ``slots`` slots, positives first."""
    b = gt.shape[0]
    device = gt.device
    clicks = ClickSet.empty(b, slots, device)
    dist = squared_edt(torch.cat([gt, ~gt]), **edt)
    inner, outer = dist.chunk(2)
    inner_max, first_xy = _first_argmax(inner)
    n_pos = _counts(torch.ones(b, dtype=torch.long, device=device), cfg.max_pos, gen)
    standard = (torch.rand(b, generator=gen, device=device) < cfg.first_click_standard_prob) & (inner_max > 0)
    threshold = torch.clamp(cfg.border_fraction ** 2 * inner_max, min=1.0)  # squared: (0.3 * max)**2
    deep = inner >= threshold[:, None, None]
    picks = _pick_separated(deep, n_pos - standard.long(), cfg.max_pos, [(first_xy, standard)],
                            cfg.min_separation_px, gen)
    # slot 0 is the standard first click where drawn, else the first random pick; the rest follow
    clicks.put(0, torch.where(standard[:, None], first_xy, picks[0][0]),
               torch.where(standard | picks[0][1], 1, 0).to(torch.int8))
    chosen = [(clicks.xy[:, 0], clicks.sign[:, 0] != 0)]
    for j in range(1, cfg.max_pos):
        # with the standard first click, random pick j-1 becomes click j
        xy = torch.where(standard[:, None], picks[j - 1][0], picks[j][0])
        ok = torch.where(standard, picks[j - 1][1], picks[j][1])
        clicks.put(j, xy, ok.to(torch.int8))
        chosen.append((xy, ok))
    high = max(cfg.max_neg, cfg.min_neg, 1 if min_neg is not None else 0)
    if high == 0:
        return clicks
    low = torch.full((b,), cfg.min_neg, dtype=torch.long, device=device) if min_neg is None else min_neg
    n_neg = _counts(low, high, gen)
    near, far = cfg.neg_band_px
    band = (outer >= near * near) & (outer <= far * far) & valid & ~ignore
    for slot, (xy, ok) in enumerate(_pick_separated(band, n_neg, high, chosen, cfg.min_separation_px, gen),
                                    start=cfg.max_pos):
        clicks.put(slot, xy, -ok.to(torch.int8))
    return clicks


# ------------------------------------------------------------------------------ resident data
@dataclasses.dataclass
class ResidentData:
    """Every staged image and label map in device memory, and the object table.

    ``images`` uint8 [N, 3, L, L] and ``labels`` uint8 [N, L, L] hold image i at the top-left
    (``hw[i]`` = its height, width), zeros elsewhere. Object j is label ``obj_label[j]`` of image
    ``obj_image[j]``, with bounding box ``obj_box[j]`` = (x0, y0, x1, y1), x1/y1 exclusive, drawn
    with probability ``obj_prob[j]``; ``obj_part[j]`` marks part sets.
    """

    images: torch.Tensor
    labels: torch.Tensor
    hw: torch.Tensor
    obj_image: torch.Tensor
    obj_label: torch.Tensor
    obj_box: torch.Tensor
    obj_prob: torch.Tensor
    obj_part: torch.Tensor
    keys: list[str]
    datasets: list[str]

    @property
    def num_objects(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.labels))

    def summary(self) -> dict[str, Any]:
        by_set: dict[str, int] = {}
        for name in self.datasets:
            by_set[name] = by_set.get(name, 0) + 1
        return {"images": int(self.images.shape[0]), "objects": self.num_objects, "objects_by_set": by_set,
                "side": int(self.images.shape[-1]), "bytes": self.nbytes()}

    @classmethod
    def build(cls, images: Sequence[ShardImage], device, set_weights: str = "", part_sets: frozenset[str] = frozenset(),
              chunk: int = 256) -> ResidentData:
        """Copy decoded shard images to ``device`` and index their objects (empty ones dropped)."""
        if not images:
            raise ValueError("no staged images: stage shards first")
        side = max(max(im.image.shape[:2]) for im in images)
        n = len(images)
        host_images = np.zeros((n, 3, side, side), np.uint8)
        host_labels = np.zeros((n, side, side), np.uint8)
        for i, im in enumerate(images):
            h, w = im.labels.shape
            host_images[i, :, :h, :w] = im.image.transpose(2, 0, 1)
            host_labels[i, :h, :w] = im.labels
        image_t = torch.from_numpy(host_images).to(device)
        label_t = torch.from_numpy(host_labels).to(device)
        del host_images, host_labels
        hw = torch.tensor([im.labels.shape for im in images], dtype=torch.long, device=device)
        obj_image = torch.tensor([i for i, im in enumerate(images) for _ in im.objects], dtype=torch.long, device=device)
        obj_label = torch.tensor([lab for im in images for lab, _ in im.objects], dtype=torch.uint8, device=device)
        keys = [key for im in images for _, key in im.objects]
        boxes, sizes = [], []
        idx = torch.arange(side, device=device)
        for s in range(0, len(keys), chunk):
            mask = label_t[obj_image[s:s + chunk]] == obj_label[s:s + chunk, None, None]
            cols, rows = mask.any(dim=1), mask.any(dim=2)
            big = side + 1
            boxes.append(torch.stack([torch.where(cols, idx, big).amin(1), torch.where(rows, idx, big).amin(1),
                                      torch.where(cols, idx + 1, 0).amax(1), torch.where(rows, idx + 1, 0).amax(1)], 1))
            sizes.append(mask.sum(dim=(1, 2)))
        box = torch.cat(boxes)
        keep = (torch.cat(sizes) > 0).cpu().numpy()
        datasets = [key.partition("/")[0] for key in keys]
        kept = np.nonzero(keep)[0]
        keys = [keys[j] for j in kept]
        datasets = [datasets[j] for j in kept]
        sel = torch.from_numpy(kept).to(device)
        refs = [SimpleNamespace(dataset=d, index=j) for j, d in enumerate(datasets)]
        sets = parse_set_weights(set_weights, refs)
        prob = np.full(len(keys), 1.0 / max(1, len(keys)))
        if sets is not None:
            for group, p in zip(*sets):
                for ref in group:
                    prob[ref.index] = p / len(group)
        part = torch.tensor([d in part_sets for d in datasets], dtype=torch.bool, device=device)
        return cls(image_t, label_t, hw, obj_image[sel], obj_label[sel], box[sel],
                   torch.tensor(prob, dtype=torch.float32, device=device), part, keys, datasets)


# ------------------------------------------------------------------------------ augmentation
def augment_config(cfg: TrainConfig) -> AugmentConfig:
    return AugmentConfig(crop_size=cfg.crop_size, view_size=cfg.input_size, scale_min=cfg.scale_min,
                         scale_max=cfg.scale_max, color_jitter=cfg.color_jitter, flip=cfg.flip)


AUGMENT_DRAWS = 8  # u columns: zoom?, scale, x offset, y offset, flip?, brightness, contrast, saturation


def augment_params(hw: torch.Tensor, box: torch.Tensor, u: torch.Tensor, cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """Per sample the crop of :func:`clickmask.export.data.augment` from uniform draws ``u`` [B, 8]:
    ``scale``, offsets ``ox``, ``oy`` (scaled px), content size ``cw``, ``ch``, ``flip``, and
    the colour factors. ``hw`` [B, 2] (height, width), ``box`` [B, 4] (x0, y0, x1, y1)."""
    size = cfg.crop_size
    u = u.to(torch.float64)
    height, width = hw[:, 0].to(torch.float64), hw[:, 1].to(torch.float64)
    bx0, by0, bx1, by1 = box.to(torch.float64).unbind(1)
    # tensor / tensor: ``number / tensor`` is computed as number * (1 / tensor), which rounds differently
    full = torch.full_like(height, float(cfg.view_size)) / torch.maximum(height, width)
    zf0, zf1 = cfg.zoom_fraction
    zoom_scale = max(size, cfg.view_size) * (zf0 + (zf1 - zf0) * u[:, 1]) / torch.maximum(bx1 - bx0, by1 - by0)
    zoom_scale = torch.minimum(torch.maximum(zoom_scale, full * cfg.scale_min), 4.0 * full)
    full_scale = full * (cfg.scale_min + (cfg.scale_max - cfg.scale_min) * u[:, 1])
    scale = torch.where(u[:, 0] < cfg.zoom_prob, zoom_scale, full_scale)

    def offset(lo, hi, extent, draw):
        low, high = torch.clamp(hi - size, min=0.0), torch.minimum(lo, extent - size)
        inverted = low > high  # object larger than the crop: any window inside the object span
        alt_low = torch.clamp(lo, min=0.0)
        alt_high = torch.clamp(torch.minimum(hi - size, extent - size), min=0.0)
        low, high = (torch.where(inverted, torch.minimum(alt_low, alt_high), low),
                     torch.where(inverted, torch.maximum(alt_low, alt_high), high))
        return torch.where(extent <= size, torch.zeros_like(lo), low + (high - low) * draw)

    ox = offset(bx0 * scale, bx1 * scale, width * scale, u[:, 2])
    oy = offset(by0 * scale, by1 * scale, height * scale, u[:, 3])
    cw = torch.clamp(torch.floor(width * scale - ox + 0.5), 0, size).long()
    ch = torch.clamp(torch.floor(height * scale - oy + 0.5), 0, size).long()
    flip = (u[:, 4] < 0.5) if cfg.flip else torch.zeros_like(u[:, 4], dtype=torch.bool)
    a = cfg.color_jitter
    color = (1 - a) + 2 * a * u[:, 5:8]
    return {"scale": scale, "ox": ox, "oy": oy, "cw": cw, "ch": ch, "flip": flip, "color": color}


def _color_jitter(image: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """The twin of the CPU colour jitter on float [B, 3, S, S] images of uint8 values."""
    brightness, contrast, saturation = (factors[:, k, None, None, None].to(torch.float32) for k in range(3))
    x = image * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * saturation + gray
    return torch.floor(x + 0.5).clamp_(0, 255)


def augment_batch(data: ResidentData, obj: torch.Tensor, u: torch.Tensor, cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """Crops of objects ``obj`` [B] from the resident data: the twin of ``augment``.

    Returns ``image`` float [B, 3, S, S] (uint8 values), ``gt``, ``ignore`` (dataset ignore or
    padding), ``valid`` bool [B, S, S], ``ok`` bool [B] (at least ``min_object_pixels`` object
    pixels; where False the CPU code returns None), and the ``params``.
    """
    size = cfg.crop_size
    img_idx = data.obj_image[obj]
    hw = data.hw[img_idx]
    params = augment_params(hw, data.obj_box[obj], u, cfg)
    side = data.images.shape[-1]
    b = obj.shape[0]
    dev = obj.device
    j = torch.arange(size, device=dev, dtype=torch.float64)
    cw = params["cw"].to(torch.float64)
    # the flip mirrors the content columns [0, cw): sample column cw - 1 - j there instead of j
    jx = torch.where(params["flip"][:, None] & (j[None, :] < cw[:, None]), cw[:, None] - 1 - j[None, :], j[None, :])
    scale = params["scale"][:, None]
    shift = (scale - 1.0) / 2.0
    src_x = (jx - shift + params["ox"][:, None]) / scale  # [B, S]
    src_y = (j[None, :] - shift + params["oy"][:, None]) / scale
    gx = ((2 * src_x + 1) / side - 1).to(torch.float32)
    gy = ((2 * src_y + 1) / side - 1).to(torch.float32)
    grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], dim=-1)
    labels = data.labels[img_idx]
    planes = torch.cat([data.images[img_idx].to(torch.float32),
                        (labels == data.obj_label[obj][:, None, None]).to(torch.float32)[:, None] * 255.0,
                        (labels == LABEL_IGNORE).to(torch.float32)[:, None] * 255.0], dim=1)
    warped = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = torch.floor(warped + 0.5)  # uint8 values, as cv2 writes them
    rows = torch.arange(size, device=dev)
    valid = (rows[None, :, None] < params["ch"][:, None, None]) & (rows[None, None, :] < params["cw"][:, None, None])
    ignore = warped[:, 4] >= 128
    gt = (warped[:, 3] >= 128) & valid & ~ignore
    ok = gt.sum(dim=(1, 2)) >= cfg.min_object_pixels
    image = warped[:, :3]
    if cfg.color_jitter > 0:
        image = _color_jitter(image, params["color"])
    image = image * valid[:, None]
    return {"image": image, "gt": gt, "ignore": ignore | ~valid, "valid": valid, "ok": ok, "params": params}


# ------------------------------------------------------------------------------ the step
@dataclasses.dataclass(frozen=True)
class GpuOptions:
    """How the resident path runs (the recipe is the :class:`TrainConfig`)."""

    amp: str = "bf16"  # bf16, fp16 or off (autocast dtype of the forward passes; CUDA only)
    channels_last: bool = True
    compile: bool = False  # torch.compile the network
    compile_edt: bool = False  # torch.compile the distance transform's column pass
    oversample: float = 0.25  # extra candidates drawn per batch, to replace crops with too small an object
    edt_max_elements: int = 2**27
    log_every: int = 50  # read the loss back (one host sync) every N steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PhaseTimer:
    """Elapsed time of named phases per step: CUDA events on a GPU (no sync until :meth:`totals`),
    ``perf_counter`` on the CPU (where work is synchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[list[tuple[str, Any]]] = []

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self.marks.append([("", self._now())])

    def mark(self, name: str) -> None:
        self.marks[-1].append((name, self._now()))

    def totals(self, skip: int = 0) -> dict[str, float]:
        """Seconds per phase summed over the steps after the first ``skip``."""
        if self.cuda:
            torch.cuda.synchronize()
        out = {p: 0.0 for p in PHASES}
        for marks in self.marks[skip:]:
            for (_, a), (name, b) in itertools.pairwise(marks):
                out[name] = out.get(name, 0.0) + (a.elapsed_time(b) / 1000.0 if self.cuda else b - a)
        return out


def _seed(seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"gpu-train:{seed}:{step}".encode()).digest()[:7], "big")


class ResidentTrainer:
    """The step of the resident path: sample, click rounds, forward/backward, optimiser."""

    def __init__(self, net: torch.nn.Module, cfg: TrainConfig, options: GpuOptions, data: ResidentData,
                 device: torch.device, step: int = 0):
        self.net, self.cfg, self.options, self.data, self.device = net, cfg, options, data, device
        self.step = step
        self.aug = augment_config(cfg)
        self.clicker = ClickSamplerConfig(max_pos=cfg.max_pos_clicks, max_neg=cfg.max_neg_clicks)
        self.slots = cfg.max_pos_clicks + max(cfg.max_neg_clicks, 1) + cfg.max_extra_rounds
        self.criterion = RITMLoss(cfg.nfl_alpha, cfg.nfl_gamma, cfg.aux_weight)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.Adam(_param_groups(net, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                          weight_decay=cfg.weight_decay, **fused)
        self.gen = torch.Generator(device=device)
        self.timer = PhaseTimer(device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(options.amp)
        if device.type != "cuda":
            self.autocast_dtype = None
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        if options.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.forward = torch.compile(net) if options.compile else net
        self.has_parts = bool(data.obj_part.any())
        self.edt: dict[str, Any] = {"max_elements": options.edt_max_elements}
        if options.compile_edt:
            self.edt["column_pass"] = torch.compile(_column_min_plus, dynamic=False)
        self.loss_sum = torch.zeros((), device=device)
        self.dropped = torch.zeros((), device=device)
        self.loss_count = 0

    # -- sampling ------------------------------------------------------------------------
    def sample(self, step: int) -> dict[str, Any]:
        """Batch ``step``: crops, labels and initial clicks, all on the device."""
        b = self.cfg.batch_size
        candidates = b + math.ceil(b * self.options.oversample)
        self.gen.manual_seed(_seed(self.cfg.seed, step))
        obj = draw_index(self.data.obj_prob, candidates, self.gen)
        u = torch.rand(candidates, AUGMENT_DRAWS, generator=self.gen, device=self.device)
        crops = augment_batch(self.data, obj, u, self.aug)
        order = torch.argsort((~crops["ok"]).to(torch.uint8), stable=True)[:b]  # objects large enough first
        gt, ignore, valid = crops["gt"][order], crops["ignore"][order], crops["valid"][order]
        min_neg = self.data.obj_part[obj[order]].long()  # part sets: at least one negative
        clicks = initial_clicks(gt, valid, ignore, self.clicker, self.slots, self.gen,
                                min_neg=min_neg if self.has_parts else None, **self.edt)
        ok = crops["ok"][order] & (clicks.sign > 0).any(dim=1)
        labels = torch.where(ignore | ~ok[:, None, None], float(IGNORE_LABEL), gt.to(torch.float32))[:, None]
        image = crops["image"][order] / 255.0
        if self.options.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        rounds = int(np.random.default_rng([self.cfg.seed, step]).integers(0, self.cfg.max_extra_rounds + 1))
        return {"image": image, "labels": labels, "gt": gt, "ignore": ignore, "clicks": clicks, "ok": ok,
                "rounds": rounds, "first_free": self.cfg.max_pos_clicks + max(self.cfg.max_neg_clicks, 1)}

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # -- click rounds ----------------------------------------------------------------------
    def click_rounds(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """RITM's no-grad rounds, batched: predict, click in the error, feed the prediction back."""
        image, clicks, size = batch["image"], batch["clicks"], batch["image"].shape[-1]
        prev = torch.zeros(image.shape[0], 1, size, size, device=self.device)
        if batch["rounds"]:
            self.net.eval()
            with torch.no_grad(), self._autocast():
                for r in range(batch["rounds"]):
                    logits = self.forward(image, click_maps(clicks, size), prev)["instances"].float()
                    prev = torch.round(torch.sigmoid(logits) * 255.0) / 255.0  # the uint8 contract
                    xy, sign = next_clicks(batch["gt"], prev[:, 0] >= 0.5, batch["ignore"], clicks, **self.edt)
                    clicks.put(batch["first_free"] + r, xy, sign)
            self.net.train()
            if self.cfg.prev_mask_drop > 0:
                keep = torch.rand(image.shape[0], generator=self.gen, device=self.device) >= self.cfg.prev_mask_drop
                prev = prev * keep[:, None, None, None]
        return click_maps(clicks, size), prev

    # -- one step --------------------------------------------------------------------------
    def train_step(self) -> None:
        timer = self.timer
        timer.start()
        batch = self.sample(self.step)
        timer.mark("sample")
        maps, prev = self.click_rounds(batch)
        timer.mark("clicks")
        factor = lr_factor(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor * group["lr_mult"]
        with self._autocast():
            outputs = self.forward(batch["image"], maps, prev)
        outputs = {k: v.float() for k, v in outputs.items()}
        losses = self.criterion(outputs, batch["labels"])
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(losses["loss"]).backward()
        else:
            losses["loss"].backward()
        timer.mark("forward_backward")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        timer.mark("optimizer")
        self.loss_sum += losses["loss"].detach()
        self.dropped += (~batch["ok"]).sum()
        self.loss_count += 1
        self.step += 1

    def read_loss(self) -> tuple[float, float]:
        """Mean loss since the last read and the share of samples dropped (one host sync)."""
        count = max(1, self.loss_count)
        loss, dropped = float(self.loss_sum) / count, float(self.dropped) / (count * self.cfg.batch_size)
        self.loss_sum.zero_()
        self.dropped.zero_()
        self.loss_count = 0
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} by step {self.step}")
        return loss, dropped


def train_for(trainer: ResidentTrainer, seconds: float, max_steps: int | None = None, warmup_steps: int = 2,
              log=None) -> dict[str, Any]:
    """Train until ``seconds`` have passed (or ``max_steps``); the first ``warmup_steps`` (compile,
    autotuning) are timed apart. Returns samples/s by the wall clock, the phase table and the
    loss curve."""
    device = trainer.device
    start = time.perf_counter()
    deadline = start + seconds
    curve = []
    warm_at, warm_step = None, trainer.step
    first = trainer.step
    while time.perf_counter() < deadline and (max_steps is None or trainer.step - first < max_steps):
        trainer.train_step()
        done = trainer.step - first
        if done == warmup_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            warm_at, warm_step = time.perf_counter(), trainer.step
        if trainer.step % trainer.options.log_every == 0:
            loss, dropped = trainer.read_loss()
            curve.append({"step": trainer.step, "loss": round(loss, 5), "dropped": round(dropped, 4),
                          "seconds": round(time.perf_counter() - start, 2)})
            if log:
                log(f"step {trainer.step}: loss {loss:.4f}, dropped {dropped:.3f}, {curve[-1]['seconds']} s")
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    steps = trainer.step - first
    b = trainer.cfg.batch_size
    phases = trainer.timer.totals(skip=min(warmup_steps, steps))
    timed = max(0, steps - warmup_steps)
    steady = (end - warm_at) if warm_at is not None else None
    return {
        "steps": steps, "first_step": first, "last_step": trainer.step, "batch_size": b, "seconds": round(end - start, 2),
        "samples_per_s_wall": round(steps * b / (end - start), 1) if end > start else None,
        "samples_per_s_steady": round((trainer.step - warm_step) * b / steady, 1) if steady else None,
        "warmup_steps": min(warmup_steps, steps),
        "warmup_seconds": round(warm_at - start, 2) if warm_at is not None else None,
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
        "phases_ms_per_step": {k: round(1000 * v / timed, 2) for k, v in phases.items()} if timed else {},
        "timed_steps": timed, "loss_curve": curve,
    }


# ------------------------------------------------------------------------------ state files
def save_split_state(folder: str | pathlib.Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     config: dict[str, Any], limit_bytes: int = STATE_LIMIT_BYTES,
                     moments_dtype: torch.dtype = torch.float32) -> list[pathlib.Path]:
    """Weights (float32), the optimiser (its moments as ``moments_dtype``) and the step, split into
    ``state-part-NN.pt`` files of at most ``limit_bytes`` each, plus ``state-meta.json``
    (step, config, the optimiser's hyper-parameters, every part's tensors and sha256).

    The step is all the randomness there is to resume (draws are seeded by ``(seed, step)``).
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = getattr(net, "_orig_mod", net)
    tensors: dict[str, torch.Tensor] = {f"net/{k}": v.detach().to("cpu", torch.float32 if v.is_floating_point()
                                                                   else v.dtype).contiguous()
                                         for k, v in base.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                dtype = moments_dtype if value.is_floating_point() and value.dim() else value.dtype
                tensors[f"opt/{pid}/{name}"] = value.detach().to("cpu", dtype).contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])}
              for g in opt["param_groups"]]
    parts: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, value in tensors.items():
        size = value.numel() * value.element_size() + TENSOR_OVERHEAD_BYTES
        if size > limit_bytes:
            raise ValueError(f"{name} alone is {size} bytes, over the {limit_bytes}-byte limit of a part")
        if used + size > limit_bytes and parts[-1]:
            parts.append({})
            used = 0
        parts[-1][name] = value
        used += size
    written, listing = [], []
    for i, part in enumerate(parts):
        path = folder / STATE_PART.format(i)
        torch.save(part, path)
        written.append(path)
        listing.append({"file": path.name, "bytes": path.stat().st_size, "tensors": len(part),
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    meta = {"format": "clickmask-split-state/1", "step": int(step), "config": config, "param_groups": groups,
            "moments_dtype": str(moments_dtype).removeprefix("torch."), "parts": listing}
    (folder / STATE_META).write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return written + [folder / STATE_META]


def load_split_state(folder: str | pathlib.Path, net: torch.nn.Module,
                     optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load what :func:`save_split_state` wrote into ``net`` (and ``optimizer``); returns the meta.
    Every part is checked against its sha256 first."""
    folder = pathlib.Path(folder)
    meta_path = folder / STATE_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: not a split state folder")
    meta = json.loads(meta_path.read_text())
    tensors: dict[str, torch.Tensor] = {}
    for part in meta["parts"]:
        path = folder / part["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (listed in {meta_path})")
        if hashlib.sha256(path.read_bytes()).hexdigest() != part["sha256"]:
            raise ValueError(f"{path} does not match its sha256 in {meta_path}: damaged or from another save")
        tensors.update(torch.load(path, map_location="cpu", weights_only=True))
    base = getattr(net, "_orig_mod", net)
    base.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")})
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}  # load_state_dict casts to each parameter
        for name, value in tensors.items():
            if name.startswith("opt/"):
                _, pid, key = name.split("/", 2)
                state.setdefault(int(pid), {})[key] = value.float() if value.is_floating_point() else value
        groups = meta["param_groups"]
        current = optimizer.state_dict()["param_groups"]
        if len(groups) != len(current):
            raise ValueError(f"{folder}: the state has {len(groups)} parameter groups, the optimiser {len(current)}")
        optimizer.load_state_dict({"state": state, "param_groups": [g | {"params": c["params"]}
                                                                    for g, c in zip(groups, current)]})
    return meta

"""Turn the stateless calls of annotation platforms into stateful clickmask sessions.

Label Studio and CVAT call an interactive model once per click and re-send *every* point of
the object each time (and the whole task or frame with it). clickmask's
:class:`~clickmask.client.session.Session` is stateful: it keeps the clicks, the previous
probability and the zoom-in crop, so one click costs one fixed-size inference.
:class:`InteractiveSessions` keeps one session per key (Label Studio: project, task and image;
CVAT: a hash of the frame) in the shared bounded, expiring
:class:`~clickmask.web.session_cache.SessionCache` and diffs the re-sent points against it:

* the same points as last time: no inference, the cached mask is answered again;
* the cached points plus one: one click, one inference;
* a prefix of the cached points (a shorter list): undo, no inference;
* anything else (a point moved or deleted in the middle, a fresh start): replay, one
  inference per point, from an empty session.

An optional box (Label Studio's smart rectangle, CVAT's ``obj_bbox``) restricts the session
to a crop around the box (so the network sees the object large) and the mask to the box;
a box without a positive point gets a positive click at its centre first.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from clickmask.client.errors import (
    ClickmaskError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from clickmask.client.session import Session

from .session_cache import SessionCache

LOGGER = logging.getLogger(__name__)

#: Points are compared after rounding to this many decimals of a pixel.
_POINT_DECIMALS = 3
#: The crop around a box is the box grown by this fraction of its size on each side.
BOX_MARGIN = 0.2
#: ... and at least this many pixels.
BOX_MIN_MARGIN_PX = 16

Point = tuple[float, float, bool]
"""(x, y, positive): pixel coordinates in the full image, pixel centres at integers."""
Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels of the full image, x1/y1 exclusive."""


class AdapterError(Exception):
    """A request the adapter cannot serve; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Result:
    """The answer to one platform call.

    Attributes:
        mask: HxW bool over the full image.
        prob: HxW float32 probability over the full image (None when no click is left).
        score: mean probability of the mask's pixels (0 for an empty mask), computed on first use.
        action: what the diff decided: ``"same"``, ``"click"``, ``"undo"`` or ``"replay"``.
        inferences: model calls this request cost.
        cached: True when the session came from the cache (False: a new one was started).
    """

    mask: np.ndarray
    prob: np.ndarray | None
    action: str
    inferences: int
    cached: bool

    @property
    def score(self) -> float:
        area = int(np.count_nonzero(self.mask))
        if not area or self.prob is None:
            return 0.0
        return float(np.sum(self.prob, where=self.mask, dtype=np.float64)) / area


@dataclass
class _Entry:
    session: Session
    crop: tuple[int, int, int, int]  # the part of the image the session runs on
    image_hw: tuple[int, int]  # the full image's (height, width)
    points: tuple[Point, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) to HxWx3 uint8 RGB; EXIF orientation applied as
    browsers do."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise AdapterError(f"the image {where[:200]} is not a readable image ({len(data)} bytes; "
                           "JPEG, PNG, BMP, TIFF and WebP are)", status=422)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def error_status(error: BaseException) -> tuple[int, str]:
    """(HTTP status, message) for an error raised while serving a platform call."""
    if isinstance(error, AdapterError):
        return error.status, str(error)
    if isinstance(error, DeadlineExceededError):
        return 504, f"the clickmask server did not answer in time: {error}"
    if isinstance(error, (ServerUnavailableError, ModelNotReadyError)):
        return 503, f"the clickmask server is not available: {error} (start it with 'clickmask serve', " \
                    "or pass --url HOST:PORT)"
    if isinstance(error, InvalidInputError):
        return 400, str(error)
    if isinstance(error, ClickmaskError):
        return 502, f"the clickmask server failed the request: {error}"
    return 500, f"{type(error).__name__}: {error}"


def frame_key(data: bytes | str, *parts: object) -> str:
    """A cache key from a frame's bytes (or its base64 text) and any further parts."""
    digest = hashlib.blake2b(data.encode("ascii") if isinstance(data, str) else data, digest_size=16)
    for part in parts:
        digest.update(b"\0" + repr(part).encode())
    return digest.hexdigest()


def check_points(points: Sequence[Point], width: int, height: int, *, where: str = "point") -> tuple[Point, ...]:
    """Validate continuous coordinates in ``[0, width] x [0, height]`` and map them to pixel centres.

    Platforms place points on a continuous canvas where pixel ``i`` spans ``[i, i + 1)``;
    the session wants pixel-centre coordinates in ``[0, width - 1]``. Raises
    :class:`AdapterError` naming the first bad point.
    """
    out = []
    for index, (x, y, positive) in enumerate(points):
        if not (isinstance(x, (int, float)) and isinstance(y, (int, float))) or isinstance(x, bool) \
                or isinstance(y, bool) or not (math.isfinite(x) and math.isfinite(y)):
            raise AdapterError(f"{where} {index + 1} has non-numeric coordinates ({x!r}, {y!r})")
        if not (0 <= x <= width and 0 <= y <= height):
            raise AdapterError(
                f"{where} {index + 1} at (x={x:g}, y={y:g}) px is outside the {width}x{height} image; "
                f"place points inside the image")
        out.append((round(min(max(x - 0.5, 0.0), width - 1.0), _POINT_DECIMALS),
                    round(min(max(y - 0.5, 0.0), height - 1.0), _POINT_DECIMALS), bool(positive)))
    return tuple(out)


def check_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Validate a box in continuous coordinates and return it as integer pixels, clipped."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise AdapterError(f"the box must be four numbers (x0, y0, x1, y1), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise AdapterError(f"the box has non-finite coordinates: {box!r}")
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise AdapterError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) px is outside the {width}x{height} image")
    ix0, iy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    ix1, iy1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        raise AdapterError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) px is too small (under 2 px)")
    return ix0, iy0, ix1, iy1


def _crop_for(box: tuple[int, int, int, int] | None, points: Sequence[Point], width: int,
              height: int) -> tuple[int, int, int, int]:
    """The part of the image the session runs on: all of it, or the box grown by a margin
    and extended over every point."""
    if box is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = box
    mx = max(BOX_MIN_MARGIN_PX, int(round((x1 - x0) * BOX_MARGIN)))
    my = max(BOX_MIN_MARGIN_PX, int(round((y1 - y0) * BOX_MARGIN)))
    x0, y0, x1, y1 = x0 - mx, y0 - my, x1 + mx, y1 + my
    for x, y, _ in points:
        x0, y0 = min(x0, int(math.floor(x)) - 1), min(y0, int(math.floor(y)) - 1)
        x1, y1 = max(x1, int(math.ceil(x)) + 2), max(y1, int(math.ceil(y)) + 2)
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def _load(load_image: Callable[[], np.ndarray]) -> np.ndarray:
    image = load_image()
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
            and image.shape[0] > 0 and image.shape[1] > 0):
        raise AdapterError("the image could not be read as an RGB image", status=422)
    return image


def _in_session_order(cached: tuple[Point, ...], wanted: tuple[Point, ...]) -> tuple[Point, ...]:
    """``wanted`` reordered: the points the session has, in its order, then the new ones."""
    left = list(wanted)
    kept = []
    for point in cached:
        if point in left:
            left.remove(point)
            kept.append(point)
    return tuple(kept) + tuple(left)


def _diff(cached: tuple[Point, ...], wanted: tuple[Point, ...]) -> str:
    if wanted == cached:
        return "same"
    if len(wanted) == len(cached) + 1 and wanted[:-1] == cached:
        return "click"
    if len(wanted) < len(cached) and cached[:len(wanted)] == wanted:
        return "undo"
    return "replay"


class InteractiveSessions:
    """Sessions kept per key, synchronised with the full point lists platforms re-send.

    Args:
        predictor: the model (a :class:`~clickmask.client.Client`, a
            :class:`~clickmask.serving.local.LocalPredictor`, anything with ``size`` and ``infer``).
        cache: where sessions live (default: a :class:`SessionCache` with its defaults).
        session_options: passed to every :class:`Session` (``zoom_in``, ...).
    """

    def __init__(self, predictor, cache: SessionCache | None = None, **session_options) -> None:
        self.predictor = predictor
        self.cache: SessionCache[_Entry] = cache if cache is not None else SessionCache()
        self.session_options = session_options
        self._count_lock = threading.Lock()
        #: Model calls made so far (all keys); the tests read it.
        self.inferences = 0

    def segment(
        self,
        key: str,
        load_image: Callable[[], np.ndarray],
        points: Sequence[Point],
        *,
        box: Sequence[float] | None = None,
        image_size: tuple[int, int] | None = None,
        threshold: float | None = None,
        ordered: bool = True,
    ) -> Result:
        """The mask for ``points`` (continuous pixel coordinates) on the image under ``key``.

        ``load_image`` (returning HxWx3 uint8 RGB) is called only when no session is cached
        for ``key``. ``image_size`` (width, height), when the platform states it, lets the
        points be checked before the image is read. ``threshold`` overrides the 0.5 cut of
        the probability (CVAT passes one). ``ordered=False`` says the platform does not keep
        the click order (CVAT sends positive and negative points in two lists): points
        already in the session keep their order and new ones go after them.
        """
        if image_size is not None:
            check_points(points, *image_size)
            if box is not None:
                check_box(box, *image_size)
        if box is None and not points:
            raise AdapterError("no points: place at least one positive point (or a box)")
        if points and not any(p for _, _, p in points) and box is None:
            raise AdapterError("only negative points: place a positive point on the object first")

        entry = self.cache.get(key)
        cached = entry is not None
        image = None
        if entry is None:
            image = _load(load_image)
            height, width = image.shape[:2]
        else:
            height, width = entry.image_hw

        wanted = check_points(points, width, height)
        ibox = check_box(box, width, height) if box is not None else None
        if ibox is not None and not any(p for _, _, p in wanted):
            # a box without a positive point: its centre is the first, positive click
            wanted = ((round((ibox[0] + ibox[2] - 1) / 2, _POINT_DECIMALS),
                       round((ibox[1] + ibox[3] - 1) / 2, _POINT_DECIMALS), True),) + wanted
        if not ordered and entry is not None:
            wanted = _in_session_order(entry.points, wanted)
        crop = _crop_for(ibox, wanted, width, height)
        if entry is not None and entry.crop != crop:
            entry, cached = None, False  # the box moved, or a point left the old crop: start over
        if entry is None:
            if image is None:
                image = _load(load_image)
            x0, y0, x1, y1 = crop
            session = Session(self.predictor, np.ascontiguousarray(image[y0:y1, x0:x1]), **self.session_options)
            entry = _Entry(session=session, crop=crop, image_hw=(height, width))
            self.cache.put(key, entry)

        with entry.lock:
            action = _diff(entry.points, wanted)
            inferences = self._apply(entry, action, wanted)
            mask, prob = self._paste(entry, ibox, (height, width), threshold)
        LOGGER.debug("key %s: %s (%d inference(s)), %d points", key[:12], action, inferences, len(wanted))
        return Result(mask=mask, prob=prob, action=action, inferences=inferences, cached=cached)

    # -------------------------------------------------------------------------------- details
    def _apply(self, entry: _Entry, action: str, wanted: tuple[Point, ...]) -> int:
        session, x0, y0 = entry.session, entry.crop[0], entry.crop[1]
        count = 0
        if action == "same":
            return 0
        if action == "undo":
            for _ in range(len(entry.points) - len(wanted)):
                session.undo()
            entry.points = wanted
            return 0
        todo = wanted
        if action == "click":
            todo = wanted[-1:]
        else:
            session.reset()
            entry.points = ()
        for x, y, positive in todo:
            started = time.perf_counter()
            session.click(x - x0, y - y0, positive)
            count += 1
            with self._count_lock:
                self.inferences += 1
            entry.points = entry.points + ((x, y, positive),)
            LOGGER.debug("click at (%.1f, %.1f) %s: %.1f ms", x, y, "+" if positive else "-",
                         (time.perf_counter() - started) * 1e3)
        return count

    def _paste(self, entry: _Entry, box, hw: tuple[int, int], threshold: float | None):
        session = entry.session
        if session.mask is None:
            return np.zeros(hw, dtype=bool), None
        prob_crop = session.mask.prob
        mask_crop = session.mask.array if threshold is None or prob_crop is None else prob_crop > threshold
        x0, y0, x1, y1 = entry.crop
        if (x0, y0, x1, y1) == (0, 0, hw[1], hw[0]) and box is None:
            return mask_crop, prob_crop
        mask = np.zeros(hw, dtype=bool)
        mask[y0:y1, x0:x1] = mask_crop
        prob = None
        if prob_crop is not None:
            prob = np.zeros(hw, dtype=np.float32)
            prob[y0:y1, x0:x1] = prob_crop
        if box is not None:
            bx0, by0, bx1, by1 = box
            keep = np.zeros(hw, dtype=bool)
            keep[by0:by1, bx0:bx1] = True
            mask &= keep
        return mask, prob

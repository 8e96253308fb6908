"""Interactive sessions: one image, a sequence of clicks, the mask after each click.

The session state (image, clicks, previous probability, zoom-in crop) lives here, on the
client, so any server replica can answer any click. A session talks to the model through a
:class:`Predictor` (the gRPC :class:`~clickmask.client.grpc_client.Client`, an in-process
ONNX Runtime predictor, or a test double); :class:`AsyncSession` does the same over an
:class:`AsyncPredictor`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from ._validate import MAX_IMAGE_PIXELS, check_coordinate, check_rgb_image, describe
from .contract import PROB_THRESHOLD
from .clicks import Click
from .compact import merge_flip, mirror
from .encoding import CropTransform, decode_prob, encode_inputs
from .errors import InferenceError, InvalidInputError
from .mask import Mask
from .zoom_in import Box, roi_needs_update, zoom_in_box

__all__ = [
    "PROB_THRESHOLD",
    "Predictor",
    "AsyncPredictor",
    "ClickRecord",
    "Session",
    "AsyncSession",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_UNDO = 200
"""Undo steps a session keeps (S x S bytes each: 20 MB at S=320); older ones are dropped."""

PASSES_ENV = "CLICKMASK_PASSES"
"""Environment variable that picks the passes of sessions made without ``flip``/``refine``:
``fast`` (the default since session 10: one model call a click), ``balanced`` (``refine=True``:
a second pass on the object's box, mostly on the first click, 1.09 model calls a click) or
``accurate`` (``flip=True, refine=True``: about 2.3 calls a click, a few tenths of a click fewer;
the default in sessions 6 to 9). ``benchmarks/results/select/passes-session10.md`` and
``docs/passes.md`` have their cost and NoC.
One switch for every program that makes sessions (eval, the demo, the Label Studio and CVAT
adapters, Locust)."""
PASSES = {"fast": {"flip": False, "refine": False}, "balanced": {"flip": False, "refine": True},
          "accurate": {"flip": True, "refine": True}}
DEFAULT_PASSES = "fast"


def default_passes() -> dict[str, bool]:
    """The passes ``CLICKMASK_PASSES`` asks for (``fast`` when it is not set)."""
    name = os.environ.get(PASSES_ENV, "").strip().lower() or DEFAULT_PASSES
    if name not in PASSES:
        raise InvalidInputError(f"{PASSES_ENV}={name!r} is not one of {', '.join(PASSES)}; unset it for "
                                f"{DEFAULT_PASSES!r}")
    return dict(PASSES[name])

FLIP_AUTO_THRESHOLD = 0.1
"""``flip="auto"``: a pass is flip-averaged when the answer before it is uncertain: its pixels
with probability between 0.2 and 0.8 number more than this fraction of its object pixels
(``answer_uncertainty``). The answer before a click's first pass is the previous click's; before
the refine pass, the first pass's. So the choice costs no extra round trip, and the first pass
of a session's first click is never flipped."""
UNCERTAIN_LEVELS = (51, 204)  # uint8 levels of probabilities 0.2 and 0.8


def answer_uncertainty(output: np.ndarray) -> float:
    """Pixels of a uint8 answer (its content region) with probability in [0.2, 0.8], as a fraction
    of its object pixels (probability above 0.5; at least 1)."""
    low, high = UNCERTAIN_LEVELS
    uncertain = np.count_nonzero((output >= low) & (output <= high))
    return uncertain / max(int(np.count_nonzero(output > 127)), 1)


REFINE_MIN_GAIN = 1.5
"""``refine``: a second pass runs when the predicted object's zoom-in box is at least this many
times smaller (longer side) than the crop the first pass saw, i.e. when the second pass sees
the object with at least this many times the resolution."""

# One click's model calls: the generator yields the requests of a pass (one, or two with flip),
# receives the network's answers in order, and finally returns the pending click and its
# (merged) uint8 [S, S] output.
_Steps = Generator[list, list, "tuple[_Pending, np.ndarray]"]


@dataclass(frozen=True)
class FlipPair:
    """A flip pass: the request and its left-right mirror over the content region (``rows`` x
    ``cols``), answered as one averaged output. A predictor with ``infer_flip(inputs, rows,
    cols)`` does it in one call (the compact gRPC path mirrors on the server); any other gets
    the two requests as one batch and the session averages."""

    inputs: dict
    rows: int
    cols: int

    def requests(self) -> list[dict]:
        return [self.inputs, {name: mirror(array, self.rows, self.cols) for name, array in self.inputs.items()}]


def _infer_all(predictor, requests: list) -> list:
    """Answers to the requests of one pass: one batch when the predictor takes batches (the gRPC
    ``Client``: one round trip, and Triton runs both at once), else one call each. A
    :class:`FlipPair` is answered by ``infer_flip`` where the predictor has it (the merged
    output), else by the pair of answers (a tuple)."""
    if len(requests) == 1 and isinstance(requests[0], FlipPair):
        pair = requests[0]
        if hasattr(predictor, "infer_flip"):
            return [predictor.infer_flip(pair.inputs, pair.rows, pair.cols)]
        return [tuple(_infer_all(predictor, pair.requests()))]
    if len(requests) > 1 and hasattr(predictor, "infer_batch"):
        return list(predictor.infer_batch(requests))
    return [predictor.infer(request) for request in requests]


async def _infer_all_async(predictor, requests: list) -> list:
    if len(requests) == 1 and isinstance(requests[0], FlipPair):
        pair = requests[0]
        if hasattr(predictor, "infer_flip"):
            return [await predictor.infer_flip(pair.inputs, pair.rows, pair.cols)]
        return [tuple(await _infer_all_async(predictor, pair.requests()))]
    if len(requests) > 1 and hasattr(predictor, "infer_batch"):
        return list(await predictor.infer_batch(requests))
    return list(await asyncio.gather(*(predictor.infer(request) for request in requests)))


@runtime_checkable
class Predictor(Protocol):
    """Anything that runs the model on one request.

    ``size`` is the network input size S. ``infer`` takes the per-request tensors
    ``{"image": uint8 [3,S,S], "clicks": uint8 [2,S,S], "prev_mask": uint8 [1,S,S]}`` (no
    batch dim) and returns ``mask_prob`` as uint8 [1,S,S].
    """

    size: int

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


@runtime_checkable
class AsyncPredictor(Protocol):
    """Like :class:`Predictor` with ``async def infer``."""

    size: int

    async def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class ClickRecord:
    """What happened on one click, for logs and annotation-quality analytics.

    Attributes:
        click: the click.
        timestamp: ``time.time()`` when the click was submitted.
        latency_s: seconds from submission to the mask (encoding, model, decoding).
        area: object pixels in the new mask.
        changed_pixels: pixels that differ from the previous mask.
        iou_with_previous: IoU of the new mask with the previous one (1.0 if both empty;
            0.0 against the empty mask before the first click, unless the new one is empty).
        mean_confidence: mean of ``|2p - 1|`` over the network output's content region:
            1 means every pixel was predicted with certainty, 0 means all at p = 0.5.
        crop: the ``(x0, y0, x1, y1)`` box the network saw (the full image or the zoom-in).
    """

    click: Click
    timestamp: float
    latency_s: float
    area: int
    changed_pixels: int
    iou_with_previous: float
    mean_confidence: float
    crop: Box


@dataclass(eq=False)
class _State:
    """Everything a click depends on; undo restores the previous one exactly.

    A click's state keeps what the network returned (``output``, uint8 S x S, and the crop it
    covers), not the full-resolution map: the mask and probability are decoded from it on
    demand, exactly as after the click (decoding is deterministic), so a click costs S x S bytes
    of history whatever the image size. Only the current state keeps its decoded ``Mask``.
    """

    clicks: tuple[Click, ...] = ()
    roi: Box | None = None  # zoom-in crop kept across clicks (RITM's _object_roi)
    record: ClickRecord | None = None
    output: np.ndarray | None = None  # uint8 [S, S], read-only: the network's answer
    transform: CropTransform | None = None
    image_hw: tuple[int, int] | None = None
    seed: Mask | None = None  # the initial_mask of a seeded session's first state
    decoded: Mask | None = None  # cached while this is the current state

    @property
    def mask(self) -> Mask | None:
        if self.decoded is not None:
            return self.decoded
        if self.output is None:
            return self.seed
        prob = decode_prob(self.output[None], self.transform, self.image_hw)
        return Mask(prob > PROB_THRESHOLD, prob)

    @property
    def prob(self) -> np.ndarray | None:
        mask = self.mask
        return None if mask is None else mask.prob

    def keep(self) -> None:
        """Cache the decoded mask (this state became the current one)."""
        self.decoded = self.mask

    def compact(self) -> None:
        """Drop the decoded full-resolution mask (another state is current now)."""
        if self.output is not None:
            self.decoded = None


@dataclass(frozen=True, eq=False)
class _Pending:
    """A click between encoding and decoding."""

    click: Click
    clicks: tuple[Click, ...]
    roi: Box | None
    transform: CropTransform
    inputs: dict[str, np.ndarray]
    timestamp: float
    started: float
    prior: np.ndarray | None = None  # content region of the answer before this pass (flip="auto")


class _SessionCore:
    """The state machine shared by :class:`Session` and :class:`AsyncSession`."""

    def __init__(
        self,
        image: np.ndarray,
        size: int,
        *,
        zoom_in: bool = True,
        expansion_ratio: float = 1.4,
        min_crop_size: int = 200,
        max_image_pixels: int | None = MAX_IMAGE_PIXELS,
        initial_mask: np.ndarray | Mask | None = None,
        max_undo: int = DEFAULT_MAX_UNDO,
        flip: bool | int | str | None = None,
        refine: bool | None = None,
        _seed: _State | None = None,
    ) -> None:
        image = check_rgb_image(image, max_pixels=max_image_pixels)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise InvalidInputError(f"the predictor's size must be a positive int, got {size!r}")
        seed = _seed if _seed is not None else _initial_state(initial_mask, image.shape[:2])
        self._image = image.copy()
        self._image.setflags(write=False)
        self._size = int(size)
        self._zoom_in = zoom_in
        self._expansion_ratio = expansion_ratio
        self._min_crop_size = min_crop_size
        if isinstance(max_undo, bool) or not isinstance(max_undo, (int, np.integer)) or max_undo < 1:
            raise InvalidInputError(f"max_undo must be a positive int, got {max_undo!r}")
        self._max_undo = int(max_undo)
        passes = resolve_passes({"flip": flip, "refine": refine})
        self._flip, self._refine = passes["flip"], passes["refine"]
        self._dropped = False  # older undo steps were dropped: undo stops at the oldest one kept
        self._states: list[_State] = [seed]

    @property
    def passes(self) -> dict[str, bool]:
        """The inference options this session runs with: ``{"flip": ..., "refine": ...}``
        (``flip``: False, True, or the number of first clicks that are flip-averaged)."""
        return {"flip": self._flip, "refine": self._refine}

    @property
    def seeded(self) -> bool:
        """True when the session started from an ``initial_mask``."""
        return self._states[0].mask is not None

    @property
    def initial_mask(self) -> Mask | None:
        """The mask the session started from (``initial_mask``), or None."""
        return self._states[0].mask

    @property
    def image(self) -> np.ndarray:
        """The session's HxWx3 uint8 RGB image (a read-only copy)."""
        return self._image

    @property
    def mask(self) -> Mask | None:
        """The mask after the last click; before the first click the initial mask of a
        seeded session, else None."""
        return self._states[-1].mask

    @property
    def clicks(self) -> tuple[Click, ...]:
        return self._states[-1].clicks

    @property
    def history(self) -> tuple[ClickRecord, ...]:
        """One record per current click (undone clicks are dropped)."""
        return tuple(s.record for s in self._states[1:] if s.record is not None)

    def to_log(self, *, session_id: str | None = None, meta: dict | None = None,
               closed_at: float | None = None) -> dict:
        """This session's history as a ``clickmask.session/1`` log record (see
        :mod:`clickmask.client.session_log`); write many with ``write_sessions``."""
        from .session_log import session_log

        return session_log(self, session_id=session_id, meta=meta, closed_at=closed_at)

    def _prepare(self, x: float, y: float, positive: bool) -> _Pending:
        timestamp, started = time.time(), time.perf_counter()
        height, width = self._image.shape[:2]
        click = Click(
            x=check_coordinate(x, "x", width),
            y=check_coordinate(y, "y", height),
            positive=_check_bool(positive),
        )
        state = self._states[-1]
        clicks = state.clicks + (click,)
        roi = state.roi
        crop: Box = (0, 0, width, height)
        # From the second click on; from the first when a seeded session starts from a
        # non-empty mask (the seed is the current mask).
        if self._zoom_in and state.mask is not None and (len(clicks) > 1 or state.mask.area > 0):
            candidate = zoom_in_box(state.mask.array, clicks, self._expansion_ratio, self._min_crop_size)
            if candidate is not None:
                if roi_needs_update(roi, candidate, clicks):
                    roi = candidate
                crop = roi  # type: ignore[assignment]
        transform = CropTransform(*crop, size=self._size)
        inputs = encode_inputs(self._image, clicks, state.prob, transform)
        prior = None
        if state.output is not None:
            rows, cols = state.transform.content_hw
            prior = state.output[:rows, :cols]
        return _Pending(click, clicks, roi, transform, inputs, timestamp, started, prior)

    def _check_output(self, output: object) -> np.ndarray:
        """The predictor's answer as uint8 [S, S], or InferenceError."""
        size = self._size
        if not isinstance(output, np.ndarray) or output.dtype != np.uint8 or output.shape not in (
            (1, size, size),
            (size, size),
            (1, 1, size, size),
        ):
            raise InferenceError(f"the predictor returned {describe(output)}, expected uint8 [1,{size},{size}]")
        return output.reshape(size, size)

    def _passes(self, pending: _Pending) -> _Steps:
        """The model calls of one pass: one request, or with ``flip`` the request and its mirror,
        whose answers are averaged (the mirrored answer flipped back)."""
        if not self._flips(pending):
            (output,) = yield [pending.inputs]
            return pending, self._check_output(output)
        rows, cols = pending.transform.content_hw
        (answer,) = yield [FlipPair(pending.inputs, rows, cols)]
        if isinstance(answer, tuple):  # the two answers: average here
            output, back = answer
            return pending, merge_flip(self._check_output(output), self._check_output(back), rows, cols)
        return pending, self._check_output(answer)  # averaged by the predictor

    def _flips(self, pending: _Pending) -> bool:
        """Whether this pass is flip-averaged (see ``flip`` in :class:`Session`)."""
        flip = self._flip
        if isinstance(flip, bool):
            return flip
        if isinstance(flip, int):
            return len(pending.clicks) <= flip
        return pending.prior is not None and answer_uncertainty(pending.prior) > _auto_threshold(flip)

    def _refined(self, output: np.ndarray, pending: _Pending) -> _Pending | None:
        """With ``refine``: a second pass on the zoom-in box of the first pass's mask, when that
        box is at least ``REFINE_MIN_GAIN`` times smaller than the first pass's crop (the
        first click at full view, mostly); the first pass's probability is its previous mask."""
        if not self._refine:
            return None
        height, width = self._image.shape[:2]
        prob = decode_prob(output[None], pending.transform, (height, width))
        box = zoom_in_box(prob > PROB_THRESHOLD, pending.clicks, self._expansion_ratio, self._min_crop_size)
        if box is None:
            return None
        t = pending.transform
        seen = max(t.x1 - t.x0, t.y1 - t.y0)
        if seen < REFINE_MIN_GAIN * max(box[2] - box[0], box[3] - box[1]):
            return None
        transform = CropTransform(*box, size=self._size)
        rows, cols = t.content_hw
        return replace(pending, roi=box, transform=transform, prior=output[:rows, :cols],
                       inputs=encode_inputs(self._image, pending.clicks, prob, transform))

    def _steps(self, x: float, y: float, positive: bool) -> _Steps:
        """Every model call of one click (see ``_Steps``); nothing changes until ``_finish``."""
        pending, output = yield from self._passes(self._prepare(x, y, positive))
        second = self._refined(output, pending)
        if second is not None:
            pending, output = yield from self._passes(second)
        return pending, output

    def _finish(self, output: np.ndarray, pending: _Pending) -> Mask:
        click, clicks, transform = pending.click, pending.clicks, pending.transform
        size = self._size
        output = self._check_output(output)
        height, width = self._image.shape[:2]
        prob = decode_prob(output.reshape(1, size, size), transform, (height, width))
        mask = Mask(prob > PROB_THRESHOLD, prob)
        previous = self._states[-1].mask
        prev_array = previous.array if previous is not None else np.zeros_like(mask.array)
        changed = int(np.count_nonzero(prev_array != mask.array))
        union = int(np.count_nonzero(prev_array | mask.array))
        rows, cols = transform.content_hw
        content = output.reshape(size, size)[:rows, :cols].astype(np.float32)
        record = ClickRecord(
            click=click,
            timestamp=pending.timestamp,
            latency_s=time.perf_counter() - pending.started,
            area=mask.area,
            changed_pixels=changed,
            iou_with_previous=1.0 if union == 0 else 1.0 - changed / union,
            mean_confidence=float(np.abs(content * (2.0 / 255.0) - 1.0).mean()),
            crop=(transform.x0, transform.y0, transform.x1, transform.y1),
        )
        output = output.reshape(size, size).copy()
        output.setflags(write=False)
        self._states[-1].compact()
        self._states.append(_State(clicks=clicks, roi=pending.roi, record=record, output=output,
                                   transform=transform, image_hw=(height, width), decoded=mask))
        if len(self._states) > self._max_undo + 1:  # the oldest undo step goes; the seed stays
            del self._states[1]
            self._dropped = True
        logger.debug(
            "click %d at x=%.1f y=%.1f positive=%s: area=%d, crop=%s, %.1f ms",
            len(clicks), click.x, click.y, click.positive, record.area, record.crop, record.latency_s * 1e3,
        )
        return mask

    def _observe(self, predictor: object, pending: _Pending, sent: float, received: float) -> None:
        """Record the click in the predictor's client metrics, if it has any."""
        metrics = getattr(predictor, "metrics", None)
        if metrics is None:
            return
        done = time.perf_counter()
        metrics.observe_click(
            getattr(predictor, "model_name", ""),
            total_s=done - pending.started, encode_s=sent - pending.started, decode_s=done - received,
        )

    def _undo(self) -> Mask | None:
        if len(self._states) == 1:
            logger.debug("undo with no clicks: nothing to do")
            return self._states[0].mask
        if self._dropped and len(self._states) == 2:
            logger.debug("undo: the %d undo steps kept are used up (max_undo)", self._max_undo)
            return self._states[-1].mask
        self._states.pop()
        self._states[-1].keep()
        return self._states[-1].mask

    def _reset(self) -> None:
        del self._states[1:]
        self._states[0].keep()
        self._dropped = False


def _initial_state(initial_mask: object, image_hw: tuple[int, int]) -> _State:
    """The state before the first click: empty, or seeded with ``initial_mask``.

    ``initial_mask`` is a :class:`Mask` (its probability is used when it has one), an HxW
    bool array, or an HxW float array of probabilities in [0, 1]; nothing is converted
    silently, so a 0/255 uint8 mask is refused with the conversion that fixes it.
    """
    if initial_mask is None:
        return _State()
    height, width = image_hw
    if isinstance(initial_mask, Mask):
        prob = initial_mask.prob if initial_mask.prob is not None else initial_mask.array.astype(np.float32)
    elif not isinstance(initial_mask, np.ndarray):
        raise InvalidInputError(
            f"expected initial_mask as a Mask or an HxW numpy array (bool, or float in [0, 1]), got "
            f"{type(initial_mask).__name__}; use np.asarray(...) or Mask.from_png(path)"
        )
    elif initial_mask.ndim != 2:
        fix = " (drop the channel axis: mask[..., 0])" if initial_mask.ndim == 3 else ""
        raise InvalidInputError(
            f"expected initial_mask as an HxW array of the image's {height}x{width} pixels, got "
            f"{describe(initial_mask)}{fix}"
        )
    elif initial_mask.dtype == np.bool_:
        prob = initial_mask.astype(np.float32)
    elif np.issubdtype(initial_mask.dtype, np.floating):
        if initial_mask.size and (not np.isfinite(initial_mask).all() or initial_mask.min() < 0
                                  or initial_mask.max() > 1):
            raise InvalidInputError(
                "initial_mask holds floats outside [0, 1] (or NaN/inf): pass probabilities in [0, 1], e.g. "
                "np.clip(mask, 0, 1), or a bool mask"
            )
        prob = initial_mask.astype(np.float32)
    else:
        raise InvalidInputError(
            f"expected initial_mask as a bool array or float probabilities in [0, 1], got {describe(initial_mask)}; "
            "for a 0/255 (or instance-id) mask pass mask > 0, or Mask.from_png(path)"
        )
    if prob.shape != (height, width):
        raise InvalidInputError(
            f"initial_mask has shape {prob.shape} but the image is {height}x{width} (HxW); give a mask of the "
            "image's size (resize it with cv2.INTER_NEAREST)"
        )
    prob = prob.copy()
    prob.setflags(write=False)
    return _State(seed=Mask(prob > PROB_THRESHOLD, prob))


def _check_bool(value: object, name: str = "positive") -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"expected {name} as a bool, got {type(value).__name__}")
    return bool(value)


def _check_flip(value: object) -> bool | int | str:
    """``flip``: a bool, an int N >= 0 (the first N clicks; 0 is False), or ``"auto"`` /
    ``"auto:T"`` (passes after an uncertain answer; T defaults to ``FLIP_AUTO_THRESHOLD``),
    returned as ``"auto:T"``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value >= 0:
        return int(value) if value > 0 else False
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return f"auto:{FLIP_AUTO_THRESHOLD:g}"
        if text.startswith("auto:"):
            try:
                threshold = float(text[5:])
            except ValueError:
                threshold = -1.0
            if threshold >= 0:
                return f"auto:{threshold:g}"
    raise InvalidInputError(f"expected flip as a bool, a number of first clicks >= 0, 'auto' or 'auto:T' "
                            f"(T >= 0, the uncertain fraction above which a pass is flipped), got {value!r}")


def _auto_threshold(flip: str) -> float:
    return float(flip.partition(":")[2])


def resolve_passes(options: dict) -> dict[str, bool | int]:
    """``{"flip": ..., "refine": ...}`` as a session made with ``options`` runs (defaults filled in)."""
    given = {k: options.get(k) for k in ("flip", "refine")}
    defaults = default_passes() if None in given.values() else {}
    flip = defaults["flip"] if given["flip"] is None else given["flip"]
    refine = defaults["refine"] if given["refine"] is None else given["refine"]
    return {"flip": _check_flip(flip), "refine": _check_bool(refine, "refine")}


class Session(_SessionCore):
    """An interactive segmentation session over a synchronous :class:`Predictor`.

    Create it with ``client.session(image)``. Not thread-safe across calls that mutate it;
    a lock serialises ``click``/``undo``/``reset`` if several threads share one session.

    Args:
        predictor: runs the model (``.size`` and ``.infer(inputs)``).
        image: HxWx3 uint8 RGB, full resolution (copied).
        zoom_in: crop around the object from the second click on (RITM ZoomIn).
        expansion_ratio, min_crop_size: zoom-in parameters, see
            :func:`~clickmask.client.zoom_in.zoom_in_box`.
        flip, refine: None (default) takes both from ``CLICKMASK_PASSES`` (``fast``, the
            default: both off; ``balanced``: refine; ``accurate``: both), see :data:`PASSES_ENV`.
        flip: also run the request mirrored left-right and average the two answers
            (test-time flip averaging: two model calls a pass). True: every click; an int N:
            the first N clicks only (where the mask is coarsest), so it costs little on average;
            ``"auto"`` (or ``"auto:T"``): only passes that follow an uncertain answer (see
            ``FLIP_AUTO_THRESHOLD``), decided before the request leaves, so no extra round trip.
        refine: after a pass whose crop is much larger than the object it found (the first
            click, at full view), run a second pass on that object's zoom-in box, with the
            first pass's answer as the previous mask (see ``REFINE_MIN_GAIN``).
        max_image_pixels: refuse larger images (default 64 megapixels; None: no limit).
        max_undo: undo steps kept (default 200). Each keeps the network's uint8 S x S answer
            and its crop, not a full-resolution map (100 KB a click at S=320, whatever the
            image size); only the current mask is held at full resolution (5 bytes a pixel).
        initial_mask: start from an existing mask (a :class:`Mask`, an HxW bool array or
            float probabilities in [0, 1], of the image's size) instead of nothing: the
            first click sends it as the previous mask, and zoom-in crops around it from the
            first click on. ``.mask`` is this mask before the first click, and ``undo``
            / ``reset`` go back to it.

    When the predictor has a ``metrics`` attribute that is not None (a ``Client`` made with
    ``metrics=ClientMetrics(...)``), every successful click is recorded there: its latency,
    encoding and decoding time.
    """

    def __init__(self, predictor: Predictor, image: np.ndarray, **options) -> None:
        check_rgb_image(image, max_pixels=options.get("max_image_pixels", MAX_IMAGE_PIXELS))  # before .size
        seed = options.pop("_seed", None) or _initial_state(options.pop("initial_mask", None), image.shape[:2])
        super().__init__(image, getattr(predictor, "size", None), _seed=seed, **options)
        self._predictor = predictor
        self._lock = threading.Lock()

    def click(self, x: float, y: float, positive: bool = True) -> Mask:
        """Add a click at pixel ``(x, y)`` (column, row) and return the new full-size mask.

        Raises InvalidInputError (before any model call) when ``(x, y)`` is outside the
        image; the session is unchanged when the model call fails.
        """
        with self._lock:
            steps = self._steps(x, y, positive)
            requests = next(steps)
            sent = time.perf_counter()
            try:
                while True:
                    requests = steps.send(_infer_all(self._predictor, requests))
            except StopIteration as done:
                pending, output = done.value
            received = time.perf_counter()
            mask = self._finish(output, pending)
            self._observe(self._predictor, pending, sent, received)
            return mask

    def undo(self) -> Mask | None:
        """Drop the last click and restore the state after the one before it.

        Returns the restored mask; when no click is left (or there was none) that is the
        initial mask of a seeded session, else None.
        """
        with self._lock:
            return self._undo()

    def reset(self) -> None:
        """Forget all clicks; the next click starts from an empty previous mask (from the
        initial mask in a seeded session)."""
        with self._lock:
            self._reset()


class AsyncSession(_SessionCore):
    """:class:`Session` for asyncio: ``await session.click(x, y)`` over an :class:`AsyncPredictor`."""

    def __init__(self, predictor: AsyncPredictor, image: np.ndarray, **options) -> None:
        check_rgb_image(image, max_pixels=options.get("max_image_pixels", MAX_IMAGE_PIXELS))
        seed = options.pop("_seed", None) or _initial_state(options.pop("initial_mask", None), image.shape[:2])
        super().__init__(image, getattr(predictor, "size", None), _seed=seed, **options)
        self._predictor = predictor
        self._lock = asyncio.Lock()

    async def click(self, x: float, y: float, positive: bool = True) -> Mask:
        """Add a click at pixel ``(x, y)``; see :meth:`Session.click`."""
        async with self._lock:
            steps = self._steps(x, y, positive)
            requests = next(steps)
            sent = time.perf_counter()
            try:
                while True:
                    requests = steps.send(await _infer_all_async(self._predictor, requests))
            except StopIteration as done:
                pending, output = done.value
            received = time.perf_counter()
            mask = self._finish(output, pending)
            self._observe(self._predictor, pending, sent, received)
            return mask

    async def undo(self) -> Mask | None:
        """Drop the last click; see :meth:`Session.undo`."""
        async with self._lock:
            return self._undo()

    async def reset(self) -> None:
        """Forget all clicks."""
        async with self._lock:
            self._reset()

"""CVAT interactor over the clickmask client (the nuclio function in ``deploy/cvat/``).

CVAT calls an interactor function with the whole frame as base64 and every point placed so
far, with each click::

    {"image": "<base64 JPEG/PNG>", "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
     "obj_bbox": [[x1, y1], [x2, y2]] | null, "threshold": 0.5?}

and expects ``{"mask": [[0|1, ...], ...], "bounds": [x1, y1, x2, y2]}``: the mask's rows over
the inclusive pixel box ``bounds`` (cvat-ui's tools control turns it into CVAT's mask RLE
with ``mask2Rle`` and appends the bounds). CVAT sends no task id, so a session is keyed by a
hash of the frame's base64 text: a click on a frame seen before skips decoding it and costs one
inference. CVAT keeps positive and negative points in two lists, so the click order is taken
from the cached session (new points go last).

Source of the request and response formats: CVAT's ``cvat/apps/lambda_manager/views.py``
(the interactor payload) and ``cvat-ui``'s ``tools-control.tsx`` / ``cvat-core``'s
``InteractorResults`` (the response), in the public ``cvat-ai/cvat`` repository.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from typing import Any

import numpy as np

from clickmask.client.errors import ClickmaskError

from .interactive import AdapterError, InteractiveSessions, decode_image, error_status, frame_key
from .session_cache import SessionCache

LOGGER = logging.getLogger(__name__)

#: Largest frame accepted, as base64 characters (CVAT's function.yaml allows 32 MB bodies).
MAX_IMAGE_B64 = 48 * 1024 * 1024


def _points(value: Any, name: str) -> list[tuple[float, float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise AdapterError(f"{name} must be a list of [x, y] pairs, got {type(value).__name__}")
    out = []
    for index, item in enumerate(value):
        if not (isinstance(item, (list, tuple)) and len(item) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
                and all(math.isfinite(v) for v in item)):
            raise AdapterError(f"{name}[{index}] must be [x, y] in pixels, got {item!r}")
        out.append((float(item[0]), float(item[1])))
    return out


def mask_json(mask: np.ndarray) -> tuple[str, list[int]]:
    """``(rows as JSON text, [x1, y1, x2, y2])`` for an HxW bool mask: 0/1 rows over the mask's
    inclusive bounding box; an empty mask is one 0 at (0, 0). Written with numpy: 20x faster
    than ``json.dumps(mask.tolist())`` for a large object."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return "[[0]]", [0, 0, 0, 0]
    xs = np.flatnonzero(mask.any(axis=0))
    y1, y2, x1, x2 = int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])
    crop = mask[y1:y2 + 1, x1:x2 + 1]
    rows, cols = crop.shape
    text = np.full((rows, 2 * cols + 2), ord(","), dtype=np.uint8)  # "[d,d,...,d],"
    text[:, 0] = ord("[")
    text[:, 1:2 * cols:2] = crop.astype(np.uint8) + ord("0")
    text[:, 2 * cols] = ord("]")
    return "[" + text.tobytes()[:-1].decode("ascii") + "]", [x1, y1, x2, y2]


class CvatInteractor:
    """The function's logic: one :meth:`handle` per CVAT call.

    Args:
        predictor: the model (``clickmask.client.Client`` or any ``Predictor``).
        cache: the session cache (default: 64 sessions, 15 minutes idle).
    """

    def __init__(self, predictor, cache: SessionCache | None = None) -> None:
        self.sessions = InteractiveSessions(predictor, cache if cache is not None else SessionCache())
        #: Seconds the last request spent decoding the frame (0 when the session was cached).
        self.last_decode_s = 0.0

    def handle(self, body: Any) -> tuple[int, str]:
        """``(HTTP status, JSON text)`` for a request body (a dict, or JSON bytes/str)."""
        try:
            return 200, self._handle(body)
        except (AdapterError, ClickmaskError) as exc:
            status, message = error_status(exc)
            LOGGER.warning("interactor -> %d: %s", status, message)
            return status, json.dumps({"error": message})
        except Exception as exc:  # noqa: BLE001 - answer, log and keep serving
            LOGGER.exception("interactor failed")
            return 500, json.dumps({"error": f"{type(exc).__name__}: {exc}"})

    def _handle(self, body: Any) -> str:
        if isinstance(body, (bytes, bytearray, str)):
            try:
                body = json.loads(body)
            except ValueError as exc:
                raise AdapterError(f"the request body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise AdapterError("the request body must be a JSON object with image, pos_points and neg_points")
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise AdapterError("the request has no image (the frame as a base64 string)")
        if len(image) > MAX_IMAGE_B64:
            raise AdapterError(f"the frame is larger than {MAX_IMAGE_B64 >> 20} MiB of base64", status=413)
        pos = _points(body.get("pos_points"), "pos_points")
        neg = _points(body.get("neg_points"), "neg_points")
        box = None
        if body.get("obj_bbox"):
            corners = _points(body["obj_bbox"], "obj_bbox")
            if len(corners) != 2:
                raise AdapterError(f"obj_bbox must be two corners [[x1, y1], [x2, y2]], got {len(corners)} points")
            box = (corners[0][0], corners[0][1], corners[1][0], corners[1][1])
        threshold = body.get("threshold")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
                raise AdapterError(f"threshold must be a number between 0 and 1, got {threshold!r}")
            threshold = float(threshold)
        if not pos and box is None:
            raise AdapterError("no positive point: place at least one positive point on the object")

        self.last_decode_s = 0.0

        def load() -> np.ndarray:
            started = time.perf_counter()
            try:
                data = base64.b64decode(image, validate=False)
            except (binascii.Error, ValueError) as exc:
                raise AdapterError(f"the image is not valid base64: {exc}", status=422) from None
            frame = decode_image(data, "sent by CVAT")
            self.last_decode_s = time.perf_counter() - started
            return frame

        points = [(x, y, True) for x, y in pos] + [(x, y, False) for x, y in neg]
        key = "cvat\0" + frame_key(image, box)
        result = self.sessions.segment(key, load, points, box=box, threshold=threshold, ordered=False)
        rows, bounds = mask_json(result.mask)
        LOGGER.debug("cvat %s: %s, %d inference(s), bounds %s", key[5:17], result.action, result.inferences, bounds)
        return f'{{"mask": {rows}, "bounds": {json.dumps(bounds)}}}'

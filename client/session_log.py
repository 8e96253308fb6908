"""Session logs: the trace an interactive annotation leaves, as JSON lines.

One session is one JSON object on one line (schema ``clickmask.session/1``, documented in
``docs/quality.md``)::

    {"schema": "clickmask.session/1", "session_id": "...", "image_width": W, "image_height": H,
     "closed_at": 1764400000.0 | null, "meta": {...},
     "clicks": [{"x": .., "y": .., "positive": true, "timestamp": .., "latency_s": ..,
                 "area": .., "changed_pixels": .., "iou_with_previous": .., "mean_confidence": ..,
                 "uncertain_pixels": .., "components": .., "crop": [x0, y0, x1, y1],
                 "in_final_mask": true}, ...]}

Only the clicks still in effect are logged (undone clicks are gone). ``closed_at`` is when the
annotator accepted the mask (``time.time()``); ``meta`` is free-form (image id, annotator,
and for simulated sessions the ground-truth ``final_iou``). The per-click fields come from
:class:`~clickmask.client.session.ClickRecord`; ``uncertain_pixels``, ``components`` and
``in_final_mask`` are computed from the session's stored masks when the log is written, so
clicks pay nothing for them.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np

from .errors import InvalidInputError

__all__ = ["SCHEMA", "UNCERTAIN_BAND", "session_log", "write_sessions", "read_sessions", "check_session"]

SCHEMA = "clickmask.session/1"
UNCERTAIN_BAND = (0.25, 0.75)
"""A pixel is uncertain when the object probability lies strictly inside this band."""

CLICK_FIELDS: dict[str, tuple[type, ...]] = {
    "x": (int, float),
    "y": (int, float),
    "positive": (bool,),
    "timestamp": (int, float),
    "latency_s": (int, float),
    "area": (int,),
    "changed_pixels": (int,),
    "iou_with_previous": (int, float),
    "mean_confidence": (int, float),
    "uncertain_pixels": (int,),
    "components": (int,),
    "crop": (list,),
    "in_final_mask": (bool,),
}


def _components(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    count, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return int(count) - 1


def _pixel(value: float, extent: int) -> int:
    return min(max(int(value), 0), extent - 1)


def session_log(session: Any, *, session_id: str | None = None, meta: dict[str, Any] | None = None,
                closed_at: float | None = None) -> dict[str, Any]:
    """The log record of a :class:`~clickmask.client.session.Session` (or ``AsyncSession``).

    Args:
        session: the session, after its clicks.
        session_id: an id for the record (default: a random UUID).
        meta: free-form JSON-serialisable context (image id, annotator, ...).
        closed_at: ``time.time()`` when the annotator accepted the mask, if known.
    """
    if meta is not None and not isinstance(meta, dict):
        raise InvalidInputError(f"meta must be a dict, got {type(meta).__name__}")
    height, width = session.image.shape[:2]
    clicks = []
    lo, hi = UNCERTAIN_BAND
    final = session.mask.array if session.mask is not None else None
    for state in session._states[1:]:  # noqa: SLF001 - the log reads the undo stack it documents
        record = state.record
        if record is None:
            continue
        prob = state.mask.prob if state.mask is not None else None
        uncertain = int(np.count_nonzero((prob > lo) & (prob < hi))) if prob is not None else 0
        clicks.append({
            "x": float(record.click.x), "y": float(record.click.y), "positive": bool(record.click.positive),
            "timestamp": float(record.timestamp), "latency_s": float(record.latency_s),
            "area": int(record.area), "changed_pixels": int(record.changed_pixels),
            "iou_with_previous": float(record.iou_with_previous),
            "mean_confidence": float(record.mean_confidence),
            "uncertain_pixels": uncertain,
            "components": _components(state.mask.array) if state.mask is not None else 0,
            "crop": [int(v) for v in record.crop],
            "in_final_mask": bool(final is not None and final[_pixel(record.click.y, height), _pixel(record.click.x, width)]),
        })
    return {
        "schema": SCHEMA,
        "session_id": session_id or uuid.uuid4().hex,
        "image_width": int(width),
        "image_height": int(height),
        "closed_at": None if closed_at is None else float(closed_at),
        "meta": dict(meta or {}),
        "clicks": clicks,
    }


def check_session(record: Any, where: str = "session") -> dict[str, Any]:
    """Validate one log record; raises InvalidInputError naming the first problem."""
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if record.get("schema") != SCHEMA:
        raise InvalidInputError(f"{where}: schema is {record.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("image_width", "image_height"):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{where}: {key} must be a positive integer, got {value!r}")
    closed = record.get("closed_at")
    if closed is not None and (isinstance(closed, bool) or not isinstance(closed, (int, float))):
        raise InvalidInputError(f"{where}: closed_at must be a number or null, got {closed!r}")
    if not isinstance(record.get("meta", {}), dict):
        raise InvalidInputError(f"{where}: meta must be an object")
    clicks = record.get("clicks")
    if not isinstance(clicks, list):
        raise InvalidInputError(f"{where}: clicks must be a list")
    for i, click in enumerate(clicks):
        if not isinstance(click, dict):
            raise InvalidInputError(f"{where}: clicks[{i}] must be an object")
        for key, types in CLICK_FIELDS.items():
            value = click.get(key)
            ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                names = "/".join(t.__name__ for t in types)
                raise InvalidInputError(f"{where}: clicks[{i}].{key} must be a finite {names}, got {value!r}")
        if len(click["crop"]) != 4:
            raise InvalidInputError(f"{where}: clicks[{i}].crop must be [x0, y0, x1, y1]")
    return record


def write_sessions(path: str | os.PathLike[str], records: Iterable[dict[str, Any]], append: bool = False) -> int:
    """Write records as JSON lines (one session per line); returns how many were written."""
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(check_session(record), separators=(",", ":")) + "\n")
            count += 1
    return count


def read_sessions(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Read and validate a JSON-lines session log; blank lines are skipped."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{number}: not valid JSON ({exc.msg}); "
                                        "expected one session object per line") from None
            yield check_session(record, f"{path}:{number}")

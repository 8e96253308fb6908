"""The :class:`Mask` result type and its interchange formats (COCO RLE, polygons, PNG)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ._validate import describe
from .errors import InvalidInputError

__all__ = ["Mask", "rle_counts_to_string", "rle_string_to_counts"]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Mask:
    """A full-resolution binary mask, optionally with the probability it was cut from.

    Attributes:
        array: HxW bool (read-only copy of what was passed).
        prob: HxW float32 in [0, 1] or None (read-only).
    """

    array: np.ndarray
    prob: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        array = self.array
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise InvalidInputError(f"expected the mask as an HxW bool array, got {describe(array)}")
        object.__setattr__(self, "array", _read_only(array.astype(bool, copy=True)))
        if self.prob is not None:
            prob = self.prob
            if not isinstance(prob, np.ndarray) or prob.shape != array.shape or not np.issubdtype(
                prob.dtype, np.floating
            ):
                raise InvalidInputError(
                    f"expected prob as float32 of shape {array.shape} like the mask, got {describe(prob)}"
                )
            object.__setattr__(self, "prob", _read_only(prob.astype(np.float32, copy=True)))

    # --- measurements -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W)."""
        return self.array.shape  # type: ignore[return-value]

    @property
    def area(self) -> int:
        """Number of object pixels."""
        return int(np.count_nonzero(self.array))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the tightest box around the object (COCO order); zeros if empty."""
        rows = np.flatnonzero(self.array.any(axis=1))
        if rows.size == 0:
            return 0, 0, 0, 0
        cols = np.flatnonzero(self.array.any(axis=0))
        x, y = int(cols[0]), int(rows[0])
        return x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1

    # --- COCO RLE -----------------------------------------------------------------------

    def to_rle(self, compressed: bool = False) -> dict[str, Any]:
        """COCO run-length encoding: ``{"size": [h, w], "counts": ...}``.

        Runs go down the columns (Fortran order) and alternate, starting with zeros (a first
        count of 0 when the top-left pixel is set). ``counts`` is a list of ints, or with
        ``compressed=True`` the compact ASCII string pycocotools' ``encode`` produces
        (as ``str``; pycocotools returns the same characters as ``bytes``).
        """
        height, width = self.shape
        flat = self.array.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate(([0], change, [flat.size]))
        counts = np.diff(bounds).tolist()
        if flat.size and flat[0]:
            counts = [0] + counts
        if flat.size == 0:
            counts = []
        encoded: Any = rle_counts_to_string(counts) if compressed else [int(c) for c in counts]
        return {"size": [height, width], "counts": encoded}

    @classmethod
    def from_rle(cls, rle: dict[str, Any]) -> "Mask":
        """Decode a COCO RLE dict (``counts`` as a list, ``str`` or ``bytes``)."""
        try:
            height, width = (int(v) for v in rle["size"])
            counts = rle["counts"]
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(
                "expected a COCO RLE dict {'size': [h, w], 'counts': [...] or str}"
            ) from error
        if isinstance(counts, (str, bytes)):
            counts = rle_string_to_counts(counts)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or (counts.size and counts.min() < 0) or int(counts.sum()) != height * width:
            raise InvalidInputError(
                f"RLE counts sum to {int(counts.sum()) if counts.ndim == 1 else '?'}, "
                f"expected h*w = {height * width} non-negative runs"
            )
        values = np.arange(counts.size) % 2 == 1  # runs alternate 0, 1, 0, ...
        flat = np.repeat(values, counts)
        return cls(flat.reshape((height, width), order="F"))

    # --- polygons -----------------------------------------------------------------------

    def to_polygons(self, min_area: float = 0.0) -> list[list[int]]:
        """Outer contours as COCO polygons: ``[[x0, y0, x1, y1, ...], ...]``.

        Uses ``cv2.findContours`` (external contours, simple chain approximation); holes are
        not represented. Contours with fewer than 3 points or an area below ``min_area``
        (in pixels, by ``cv2.contourArea``) are dropped.
        """
        contours, _ = cv2.findContours(
            self.array.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        polygons = []
        for contour in contours:
            if len(contour) < 3 or cv2.contourArea(contour) < min_area:
                continue
            polygons.append(contour.reshape(-1).astype(int).tolist())
        return polygons

    # --- PNG ----------------------------------------------------------------------------

    def to_png(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """Encode as an 8-bit grayscale PNG (0 background, 255 object); write it if ``path``."""
        ok, buffer = cv2.imencode(".png", self.array.astype(np.uint8) * 255)
        if not ok:  # pragma: no cover - cv2 fails only on absurd sizes
            raise InvalidInputError(f"cv2 could not encode a {self.shape} mask as PNG")
        data = buffer.tobytes()
        if path is not None:
            with open(path, "wb") as handle:
                handle.write(data)
        return data

    @classmethod
    def from_png(cls, source: bytes | str | os.PathLike[str]) -> "Mask":
        """Read a mask PNG (bytes or a path); any non-zero pixel is object."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = np.frombuffer(bytes(source), dtype=np.uint8)
        else:
            with open(source, "rb") as handle:
                data = np.frombuffer(handle.read(), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if image is None:
            raise InvalidInputError("could not decode the PNG; pass PNG file bytes or a path to one")
        if image.ndim == 3:
            image = image[..., 0]
        return cls(image != 0)


def rle_counts_to_string(counts: list[int]) -> str:
    """pycocotools' compact RLE string (``rleToString``): LEB128-like, 5 bits per char.

    Each count from the fourth on is stored as the difference to the count two before; the
    value is emitted 5 bits at a time (low first) as ``chr(48 + bits)``, with bit 0x20 set
    while more chunks follow; the sign is carried by bit 0x10 of the last chunk.
    """
    chars = []
    for i, count in enumerate(counts):
        value = int(count)
        if i > 2:  # pycocotools uses i > 2, not i >= 2
            value -= int(counts[i - 2])
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            if more:
                chunk |= 0x20
            chars.append(chr(chunk + 48))
    return "".join(chars)


def rle_string_to_counts(text: str | bytes) -> list[int]:
    """Inverse of :func:`rle_counts_to_string` (pycocotools' ``rleFrString``)."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value = 0
        shift = 0
        more = True
        while more:
            if pos >= len(text):
                raise InvalidInputError("truncated compressed RLE string")
            chunk = ord(text[pos]) - 48
            if not 0 <= chunk < 64:
                raise InvalidInputError(f"invalid character {text[pos]!r} in compressed RLE string")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            pos += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts

"""The compact wire format of a click: what ``clickmask_compact`` takes and answers.

The raw contract sends three uint8 tensors a request (614,400 bytes at S=320) and gets one back
(102,400). The compact entry carries the same tensors losslessly, so the network sees exactly
what the raw path would have sent and the masks are bit-identical:

=============  =======================================================================
input (BYTES)  content
=============  =======================================================================
``crop_key``   the image crop's content key (:func:`crop_key`, 32 hex characters)
``crop``       the crop as PNG, or empty when the client expects the server to hold it
``clicks``     the two click-disk channels bit-packed and deflated (:func:`pack_clicks`)
``prev_mask``  the previous probability as PNG, or empty for all zeros
``flip``       empty, or ``b"ROWSxCOLS"``: also run the left-right mirror of the content
               region (rows x cols, top-left) and answer the rounded average, as
               :class:`~clickmask.client.session.Session` does with the raw path
``mask``       output: ``mask_prob`` as PNG
=============  =======================================================================

A crop the server does not hold (a restart, an eviction, another replica) is refused with
``NOT_FOUND`` and a message starting with :data:`MISS_PREFIX`; the client sends the request
again with the crop. Pure numpy + OpenCV + the standard library: the server imports it too.
"""
from __future__ import annotations

import hashlib
import re
import zlib

import cv2
import numpy as np

from .errors import InvalidInputError

COMPACT_MODEL = "clickmask_compact"
COMPACT_INPUTS = ("crop_key", "crop", "clicks", "prev_mask", "flip")
COMPACT_OUTPUT = "mask"
#: Start of the NOT_FOUND message of a crop the server does not hold.
MISS_PREFIX = "crop not cached"
#: PNG effort: zlib level 1 with the run-length strategy was both the smallest and the fastest of
#: levels 1-3 and the default strategy on real crops and answers (22 KB and 1.5 ms for an answer).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
_KEY = re.compile(r"^[0-9a-f]{32}$")
_FLIP = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")


class CompactFormatError(InvalidInputError):
    """A compact request that cannot be decoded (the server answers INVALID_ARGUMENT)."""


def crop_key(image: np.ndarray) -> str:
    """Content key of an image crop tensor (uint8 [3, S, S]): its shape and bytes hashed."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(repr(array.shape).encode() + array.tobytes(), digest_size=16)
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise CompactFormatError(f"crop_key must be 32 lowercase hex characters (clickmask.client.compact.crop_key), "
                                 f"got {key!r:.60}")
    return key


def encode_png(array: np.ndarray) -> bytes:
    """uint8 [C, H, W] (C = 1 or 3) or [H, W] as a PNG file, losslessly."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
    ok, data = cv2.imencode(".png", array, PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV refuses only unsupported types
        raise CompactFormatError(f"cannot PNG-encode an array of {array.dtype} {array.shape}")
    return data.tobytes()


def decode_png(data: bytes, channels: int, size: int, name: str) -> np.ndarray:
    """A PNG sent as ``name`` back to uint8 [channels, size, size]; CompactFormatError if it is not one."""
    buffer = np.frombuffer(data, np.uint8)
    flag = cv2.IMREAD_UNCHANGED
    array = cv2.imdecode(buffer, flag) if buffer.size else None
    expected = (size, size) if channels == 1 else (size, size, channels)
    if array is None or array.dtype != np.uint8 or array.shape != expected:
        got = "not a PNG file" if array is None else f"{array.dtype} {list(array.shape)}"
        raise CompactFormatError(f"input '{name}' must be a PNG of uint8 {list(expected)}, got {got}: "
                                 "encode it with clickmask.client.compact.encode_png")
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def pack_clicks(clicks: np.ndarray) -> bytes:
    """The 0/1 click disks (uint8 [2, S, S]) bit-packed and deflated: a few hundred bytes."""
    return zlib.compress(np.packbits(np.asarray(clicks, np.uint8), axis=None).tobytes(), 1)


def unpack_clicks(data: bytes, size: int) -> np.ndarray:
    """:func:`pack_clicks` undone: uint8 [2, S, S] of 0/1."""
    count = 2 * size * size
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, count // 8 + 1)  # bounded: a bomb cannot inflate further
    except zlib.error as exc:
        raise CompactFormatError(f"input 'clicks' is not deflated packed bits ({exc}): "
                                 "encode it with clickmask.client.compact.pack_clicks") from None
    if len(raw) != count // 8 or inflater.unconsumed_tail or not inflater.eof:
        raise CompactFormatError(f"input 'clicks' unpacks to {len(raw)}+ bytes, expected {count // 8} "
                                 f"(2 x {size} x {size} bits): encode it with clickmask.client.compact.pack_clicks")
    return np.unpackbits(np.frombuffer(raw, np.uint8))[:count].reshape(2, size, size)


def encode_flip(rows: int, cols: int) -> bytes:
    return f"{int(rows)}x{int(cols)}".encode()


def decode_flip(data: bytes, size: int) -> tuple[int, int] | None:
    """None (no flip) or the content region (rows, cols) to mirror."""
    if not data:
        return None
    match = _FLIP.match(data.decode("ascii", "replace"))
    if not match:
        raise CompactFormatError(f"input 'flip' must be empty or b'ROWSxCOLS', got {data[:40]!r}")
    rows, cols = int(match.group(1)), int(match.group(2))
    if not (1 <= rows <= size and 1 <= cols <= size):
        raise CompactFormatError(f"input 'flip' region {rows}x{cols} is outside the {size}x{size} input")
    return rows, cols


def mirror(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``array`` ([C, S, S] or [S, S]) with its content region (top-left ``rows x cols``, the
    rest is padding) flipped left-right; the padding stays where the network expects it."""
    out = array.copy()
    out[..., :rows, :cols] = array[..., :rows, cols - 1::-1]
    return out


def merge_flip(output: np.ndarray, mirrored_output: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The flip pass's answer: ``output`` and the mirror's answer flipped back, averaged with
    halves rounded up (uint8 [S, S] in, uint8 [S, S] out)."""
    back = mirror(mirrored_output, rows, cols)
    return ((output.astype(np.uint16) + back + 1) // 2).astype(np.uint8)

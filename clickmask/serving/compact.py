"""The compact entry's server logic, kept free of Triton so it is tested without a server.

``model_repository/clickmask_compact/1/model.py`` hands each ``execute`` call's requests to
:func:`run_compact`: every request is decoded into exactly the raw contract tensors the client
would have sent (:mod:`clickmask.client.compact`), the image crop taken from the request or from
the :class:`CropCache`, a flip request expanded into the request and its mirror; all of them go
to the network as one batch (``infer``: the raw ``clickmask`` model, called over BLS), and each
answer goes back as a PNG. One request's fault (a malformed input, a crop the cache does not
hold) is that request's error only.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from clickmask.client.compact import (COMPACT_INPUTS, MISS_PREFIX, CompactFormatError, check_key, crop_key,
                                      decode_flip, decode_png, encode_png, merge_flip, mirror, unpack_clicks)
from clickmask.client.contract import INPUT_NAMES
from clickmask.client.errors import InvalidInputError
from clickmask.errors import ModelFault, RequestError

#: Default byte budget of the crop cache (a crop is 307,200 bytes at S=320: about 1,700 crops).
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


class CropMiss(RequestError):
    """The request names a crop this server does not hold (NOT_FOUND; the client re-sends it)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{MISS_PREFIX}: {key}; send the request again with the crop's PNG in 'crop'")
        self.key = key


class CropCache:
    """Image crops by content key, least recently used out first, bounded in bytes.

    Thread-safe. Counts hits, misses, evictions and the bytes held, for the metrics."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("the crop cache's byte budget must be >= 0")
        self.max_bytes = int(max_bytes)
        self._items: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            array = self._items.get(key)
            if array is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return array

    def put(self, key: str, array: np.ndarray) -> None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            if array.nbytes > self.max_bytes:
                return
            array.setflags(write=False)
            self._items[key] = array
            self.bytes += array.nbytes
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
                self.evictions += 1


@dataclasses.dataclass
class Decoded:
    """One compact request as network inputs: one raw request, or two with the mirror."""

    inputs: list[dict[str, np.ndarray]]
    flip: tuple[int, int] | None
    received: int  # bytes of the request's inputs
    crop_sent: bool


def _field(request: Mapping[str, object], name: str) -> bytes:
    value = request.get(name)
    if value is None:
        raise CompactFormatError(f"input '{name}' is missing: the compact entry takes {', '.join(COMPACT_INPUTS)} "
                                 "(BYTES [1] each; see clickmask.client.compact)")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise CompactFormatError(f"input '{name}' must hold one BYTES element per request, got {value.size}")
        value = value.reshape(-1)[0]
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise CompactFormatError(f"input '{name}' must be BYTES, got {type(value).__name__}")
    return bytes(value)


def decode_request(request: Mapping[str, object], size: int, cache: CropCache) -> Decoded:
    """One compact request → the raw contract tensors (with a batch dim of 1) it stands for.

    Raises :class:`CompactFormatError` (a malformed input, a crop that does not match its key)
    or :class:`CropMiss` (no crop sent and none cached under the key)."""
    fields = {name: _field(request, name) for name in COMPACT_INPUTS}
    key = check_key(fields["crop_key"].decode("ascii", "replace"))
    if fields["crop"]:
        image = decode_png(fields["crop"], 3, size, "crop")
        if crop_key(image) != key:
            raise CompactFormatError(f"input 'crop' does not match crop_key {key}: the key is "
                                     "clickmask.client.compact.crop_key of the uint8 [3,S,S] crop")
        cache.put(key, image)
    else:
        image = cache.get(key)
        if image is None:
            raise CropMiss(key)
    clicks = unpack_clicks(fields["clicks"], size)
    prev = decode_png(fields["prev_mask"], 1, size, "prev_mask") if fields["prev_mask"] else \
        np.zeros((1, size, size), np.uint8)
    flip = decode_flip(fields["flip"], size)
    raw = {"image": image, "clicks": clicks, "prev_mask": prev}
    inputs = [raw]
    if flip is not None:
        inputs.append({name: mirror(array, *flip) for name, array in raw.items()})
    return Decoded(inputs, flip, sum(len(v) for v in fields.values()), bool(fields["crop"]))


InferFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclasses.dataclass
class Answer:
    """A compact request's answer: ``mask_prob`` [1, S, S] as PNG bytes, and its accounting."""

    png: bytes
    received: int
    crop_sent: bool
    images: int  # network inputs it took (2 with flip)


def run_compact(requests: Sequence[Mapping[str, object]], infer: InferFn, size: int, cache: CropCache
                ) -> list[Answer | RequestError | ModelFault]:
    """Decode every request, run all of their network inputs as one batch through ``infer``
    (uint8 contract tensors [N, C, S, S] → ``mask_prob`` [N, 1, S, S]) and answer each request."""
    results: list[Answer | RequestError | ModelFault | None] = [None] * len(requests)
    decoded: list[tuple[int, Decoded]] = []
    for index, request in enumerate(requests):
        try:
            decoded.append((index, decode_request(request, size, cache)))
        except RequestError as exc:
            results[index] = exc
        except (InvalidInputError, ValueError, cv2.error) as exc:  # a malformed input: the caller's to fix
            results[index] = RequestError(str(exc))
    if decoded:
        batch = [item for _, d in decoded for item in d.inputs]
        try:
            feeds = {name: np.stack([item[name] for item in batch]) for name in INPUT_NAMES}
            output = np.asarray(infer(feeds))
            if output.shape != (len(batch), 1, size, size) or output.dtype != np.uint8:
                raise ModelFault(f"the network answered {output.dtype} {list(output.shape)}, "
                                 f"expected uint8 {[len(batch), 1, size, size]}")
        except Exception as exc:  # noqa: BLE001 - one failure must not kill the model instance
            for index, _ in decoded:
                results[index] = exc if isinstance(exc, ModelFault) else ModelFault(f"inference failed: {exc}")
        else:
            offset = 0
            for index, d in decoded:
                mask = output[offset, 0]
                if d.flip is not None:
                    mask = merge_flip(mask, output[offset + 1, 0], *d.flip)
                offset += len(d.inputs)
                results[index] = Answer(encode_png(mask), d.received, d.crop_sent, len(d.inputs))
    return results  # type: ignore[return-value]

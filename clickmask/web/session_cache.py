"""A bounded, expiring, thread-safe cache of annotation sessions (or anything), keyed by string.

The demo keeps one ``Session`` per browser tab, the Label Studio adapter one per task and image,
the CVAT function one per frame hash. Memory stays bounded: at most ``max_entries`` live at once
(the least recently used is dropped first) and an entry unused for ``ttl_s`` seconds expires.
A dropped session loses nothing the platform cannot resend: the next call replays its clicks.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 64
DEFAULT_TTL_S = 15 * 60.0


class SessionCache(Generic[V]):
    """LRU + idle-timeout cache. ``clock`` is injectable for tests (default ``time.monotonic``)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.max_entries = int(max_entries)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0  # dropped for room
        self.expired = 0  # dropped for idleness

    def _purge(self, now: float) -> None:
        while self._items:
            key, (last, _) = next(iter(self._items.items()))
            if now - last <= self.ttl_s:
                break
            del self._items[key]
            self.expired += 1

    def get(self, key: str) -> V | None:
        """The live entry for ``key`` (refreshing its idle timer), or None."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            item = self._items.get(key)
            if item is None:
                return None
            self._items[key] = (now, item[1])
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: V) -> None:
        with self._lock:
            now = self._clock()
            self._purge(now)
            self._items[key] = (now, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
                self.evicted += 1

    def pop(self, key: str) -> V | None:
        with self._lock:
            item = self._items.pop(key, None)
            return None if item is None else item[1]

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._items)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

"""Same-host transport: a request's tensors through POSIX shared memory, not the gRPC message.

A client on the server's machine writes the contract tensors into a shared-memory region that
Triton has registered (its *system shared memory* API) and sends a request that only names
offsets in it; the server writes the answer into the same region. The 717 KB of a fast click at
S=320 then never pass through protobuf, gRPC and the loopback socket: the request is a few
hundred bytes (``benchmarks/results/serving-overhead*.md`` for what it saves).

Registering a region lets a client make the server map any shared-memory object of its user,
so the embedded server keeps that API behind its admin key (``clickmask serve`` prints it;
``CLICKMASK_ADMIN_KEY`` or the client's ``headers`` carry it). A client without the key, or a
server on another machine behind a loopback address (a container's forwarded port), falls back
to raw tensors (``wire="auto"``) or fails with a clear error (``wire="shm"``).

This module holds the regions and their layout, free of gRPC; the clients register them and
send the requests (:mod:`clickmask.client.grpc_client`).
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from collections.abc import Mapping
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from .contract import INPUT_CHANNELS

__all__ = ["ADMIN_KEY_ENV", "GRPC_ADMIN_KEY_HEADER", "Region", "RegionPool", "admin_headers", "is_missing_region"]

#: Environment variable with the server's admin key (the same one ``clickmask serve`` reads).
ADMIN_KEY_ENV = "CLICKMASK_ADMIN_KEY"
#: gRPC header that opens the server's admin APIs (shared memory among them).
GRPC_ADMIN_KEY_HEADER = "triton-grpc-protocol-clickmask-admin-key"
#: Bytes of one request's inputs and output per pixel of S x S (3 + 2 + 1 in, 1 out, uint8).
_IN_PLANES = sum(INPUT_CHANNELS.values())
_OUT_PLANES = 1
#: A pool never holds more idle regions than this (threads beyond it get fresh ones, then drop them).
_MAX_IDLE = 8


def admin_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The admin-key header from ``headers``, else from ``$CLICKMASK_ADMIN_KEY``; None if neither."""
    if headers and GRPC_ADMIN_KEY_HEADER in headers:
        return {GRPC_ADMIN_KEY_HEADER: headers[GRPC_ADMIN_KEY_HEADER]}
    key = os.environ.get(ADMIN_KEY_ENV, "").strip()
    return {GRPC_ADMIN_KEY_HEADER: key} if key else None


def is_missing_region(message: str) -> bool:
    """Whether a server error says it does not know a region (it restarted, or it was unregistered)."""
    text = message.lower()
    return "shared memory region" in text and ("unable to find" in text or "not found" in text
                                               or "no such" in text)


class Region:
    """One shared-memory buffer for ``capacity`` requests of size S: the inputs of each channel
    one after the other, then the outputs. Triton knows it as ``name`` (its ``key`` is the
    POSIX object name)."""

    def __init__(self, name: str, size: int, capacity: int) -> None:
        self.name = name
        self.size = size
        self.capacity = capacity
        plane = size * size
        self.nbytes = capacity * plane * (_IN_PLANES + _OUT_PLANES)
        self._memory = shared_memory.SharedMemory(name=name, create=True, size=self.nbytes)
        self.key = "/" + self._memory.name
        self._bytes: np.ndarray | None = np.ndarray((self.nbytes,), np.uint8, buffer=self._memory.buf)
        #: Whether the server has it registered (the client sets it; a server restart loses it).
        self.registered = False

    def offsets(self, batch: int) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
        """(input name -> (offset, bytes)), (output offset, bytes) of a batch of ``batch``."""
        if not 0 < batch <= self.capacity:
            raise ValueError(f"batch {batch} does not fit a region of {self.capacity}")
        plane = self.size * self.size
        inputs, offset = {}, 0
        for name, channels in INPUT_CHANNELS.items():
            inputs[name] = (offset, batch * channels * plane)
            offset += self.capacity * channels * plane
        return inputs, (offset, batch * _OUT_PLANES * plane)

    def write(self, batch: Mapping[str, np.ndarray]) -> int:
        """Copy the contract tensors (uint8 [N, C, S, S] each) in; return N."""
        count = int(batch["image"].shape[0])
        inputs, _ = self.offsets(count)
        for name, (offset, nbytes) in inputs.items():
            array = batch[name]
            if array.dtype != np.uint8 or array.nbytes != nbytes:
                raise ValueError(f"{name}: expected {nbytes} bytes of uint8, got {array.dtype} {array.shape}")
            self._bytes[offset:offset + nbytes] = array.reshape(-1)
        return count

    def read_output(self, batch: int) -> np.ndarray:
        """A copy of the answer: uint8 [batch, 1, S, S]."""
        _, (offset, nbytes) = self.offsets(batch)
        return self._bytes[offset:offset + nbytes].reshape(batch, _OUT_PLANES, self.size, self.size).copy()

    def destroy(self) -> None:
        """Unmap and unlink the object (the server may keep its own mapping until unregistered)."""
        if self._bytes is None:
            return
        self._bytes = None
        self._memory.close()
        try:
            self._memory.unlink()
        except FileNotFoundError:
            pass


class RegionPool:
    """The regions of one client: a call takes one for itself and gives it back, so threads
    sharing a client never write into the same buffer. Regions are made on demand (at least
    ``min_capacity`` requests each) and live until :meth:`close`."""

    def __init__(self, size: int, min_capacity: int = 2) -> None:
        self.size = size
        self.min_capacity = min_capacity
        self._prefix = f"clickmask_{os.getpid()}_{secrets.token_hex(4)}"
        self._counter = itertools.count()
        self._idle: list[Region] = []
        self._all: dict[str, Region] = {}
        self._lock = threading.Lock()
        self.closed = False

    def take(self, batch: int) -> Region:
        """A region that fits ``batch`` requests, registered or not (check ``registered``)."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the client is closed")
            for index, region in enumerate(self._idle):
                if region.capacity >= batch:
                    return self._idle.pop(index)
            capacity = max(self.min_capacity, 1 << (batch - 1).bit_length())
            region = Region(f"{self._prefix}_{next(self._counter)}", self.size, capacity)
            self._all[region.name] = region
            return region

    def give(self, region: Region) -> list[Region]:
        """Return a region after a call; returns the regions dropped (unregister them)."""
        with self._lock:
            if self.closed or len(self._idle) >= _MAX_IDLE:
                self._all.pop(region.name, None)
                region.destroy()
                return [region]
            self._idle.append(region)
            return []

    def forget_registrations(self) -> None:
        """Mark every region unregistered (the server lost them: a restart)."""
        with self._lock:
            for region in self._all.values():
                region.registered = False

    def close(self) -> list[Region]:
        """Destroy every region; returns those the server had registered (unregister them)."""
        with self._lock:
            self.closed = True
            regions = list(self._all.values())
            self._all.clear()
            self._idle.clear()
        registered = [region for region in regions if region.registered]
        for region in regions:
            region.destroy()
        return registered

    def __len__(self) -> int:
        return len(self._all)


def shm_request(module: Any, region: Region, info: Any, batch: Mapping[str, np.ndarray]) -> tuple[list, list]:
    """Write ``batch`` into ``region`` and build the InferInputs/RequestedOutputs (of ``module``:
    tritonclient.grpc or its aio twin) that name it."""
    count = region.write(batch)
    offsets, (out_offset, out_bytes) = region.offsets(count)
    inputs = []
    for name, (offset, nbytes) in offsets.items():
        tensor = module.InferInput(name, list(batch[name].shape), info.input_spec(name).datatype)
        tensor.set_shared_memory(region.name, nbytes, offset=offset)
        inputs.append(tensor)
    output = module.InferRequestedOutput(info.output_name)
    output.set_shared_memory(region.name, out_bytes, offset=out_offset)
    return inputs, [output]

"""Shared-memory transport (clickmask.client.shm): admin key, region layout, pool, request building.

No server: the regions are real POSIX shared memory, read back through a second attach.
"""

from __future__ import annotations

import os
import secrets
import sys
from multiprocessing import shared_memory

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from clickmask.client import shm
from clickmask.client._model_info import ModelInfo, TensorSpec
from clickmask.client.contract import INPUT_CHANNELS, INPUT_NAMES, OUTPUT_NAME
from clickmask.client.shm import (
    ADMIN_KEY_ENV,
    GRPC_ADMIN_KEY_HEADER,
    Region,
    RegionPool,
    admin_headers,
    is_missing_region,
    shm_request,
)

S = 8  # a small S keeps the regions tiny; the layout does not depend on it
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm is Linux's")


def dev_shm(name: str) -> str:
    return os.path.join("/dev/shm", name)


def make_batch(count: int, size: int = S, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 256, (count, channels, size, size), dtype=np.uint8)
            for name, channels in INPUT_CHANNELS.items()}


def read_back(name: str, offset: int, nbytes: int) -> bytes:
    """The bytes of the object ``name`` through an independent attach."""
    other = shared_memory.SharedMemory(name=name)
    try:
        return bytes(other.buf[offset:offset + nbytes])
    finally:
        other.close()


@pytest.fixture
def make_region():
    made: list[Region] = []

    def make(capacity: int = 2, size: int = S) -> Region:
        region = Region(f"clickmask_test_{secrets.token_hex(6)}", size, capacity)
        made.append(region)
        return region

    yield make
    for region in made:
        region.destroy()


@pytest.fixture
def pool():
    pools: list[RegionPool] = []

    def make(min_capacity: int = 2) -> RegionPool:
        p = RegionPool(S, min_capacity=min_capacity)
        pools.append(p)
        return p

    yield make
    for p in pools:
        p.close()


# --- admin_headers -----------------------------------------------------------------------------

def test_admin_headers_prefers_header_over_env(monkeypatch):
    monkeypatch.setenv(ADMIN_KEY_ENV, "from-env")
    headers = {GRPC_ADMIN_KEY_HEADER: "from-header", "other": "x"}
    assert admin_headers(headers) == {GRPC_ADMIN_KEY_HEADER: "from-header"}


def test_admin_headers_falls_back_to_env_stripped(monkeypatch):
    monkeypatch.setenv(ADMIN_KEY_ENV, "  secret \n")
    assert admin_headers({"other": "x"}) == {GRPC_ADMIN_KEY_HEADER: "secret"}
    assert admin_headers(None) == {GRPC_ADMIN_KEY_HEADER: "secret"}


def test_admin_headers_none_without_header_or_env(monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    assert admin_headers(None) is None
    assert admin_headers({}) is None
    assert admin_headers({"other": "x"}) is None


def test_admin_headers_blank_env_is_no_key(monkeypatch):
    monkeypatch.setenv(ADMIN_KEY_ENV, "   ")
    assert admin_headers(None) is None


# --- is_missing_region -------------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    "[StatusCode.INVALID_ARGUMENT] Unable to find shared memory region: 'clickmask_1_ab_0'",
    "Shared memory region 'x' not found",
    "no such shared memory region: x",
])
def test_is_missing_region_recognises_lost_region(message):
    assert is_missing_region(message)


@pytest.mark.parametrize("message", [
    "[StatusCode.UNAVAILABLE] failed to connect to all addresses",
    "Unable to find model 'clickmask'",
    "shared memory region 'x' already in use",
    "",
])
def test_is_missing_region_rejects_unrelated(message):
    assert not is_missing_region(message)


# --- Region ------------------------------------------------------------------------------------

def test_region_size_and_key(make_region):
    region = make_region(capacity=3)
    assert region.nbytes == 3 * S * S * (sum(INPUT_CHANNELS.values()) + 1)
    assert region.key == "/" + region.name
    assert region.registered is False


def test_region_offsets_are_disjoint_and_fit(make_region):
    region = make_region(capacity=4)
    for batch in (1, 2, 4):
        inputs, output = region.offsets(batch)
        assert list(inputs) == list(INPUT_NAMES)
        spans = sorted([*inputs.values(), output])
        for (offset, nbytes), (next_offset, _) in zip(spans, spans[1:]):
            assert offset + nbytes <= next_offset
        assert all(offset >= 0 and offset + nbytes <= region.nbytes for offset, nbytes in spans)
        for name, (_, nbytes) in inputs.items():
            assert nbytes == batch * INPUT_CHANNELS[name] * S * S
        assert output[1] == batch * S * S


def test_region_offsets_at_capacity_fill_the_region_exactly(make_region):
    region = make_region(capacity=2)
    inputs, (out_offset, out_bytes) = region.offsets(2)
    assert sum(nbytes for _, nbytes in inputs.values()) + out_bytes == region.nbytes
    assert out_offset + out_bytes == region.nbytes


@pytest.mark.parametrize("batch", [0, -1, 3])
def test_region_offsets_refuse_batch_outside_capacity(make_region, batch):
    region = make_region(capacity=2)
    with pytest.raises(ValueError, match="does not fit"):
        region.offsets(batch)


def test_region_write_puts_bytes_at_offsets(make_region):
    region = make_region(capacity=4)
    batch = make_batch(3)
    assert region.write(batch) == 3
    inputs, _ = region.offsets(3)
    for name, (offset, nbytes) in inputs.items():
        assert read_back(region.name, offset, nbytes) == batch[name].tobytes()


def test_region_write_at_full_size_320(make_region):
    region = make_region(capacity=1, size=320)
    batch = make_batch(1, size=320, seed=1)
    region.write(batch)
    inputs, _ = region.offsets(1)
    for name, (offset, nbytes) in inputs.items():
        assert nbytes == INPUT_CHANNELS[name] * 320 * 320
        assert read_back(region.name, offset, nbytes) == batch[name].tobytes()


def test_region_write_refuses_batch_over_capacity(make_region):
    region = make_region(capacity=2)
    with pytest.raises(ValueError, match="does not fit"):
        region.write(make_batch(3))


def test_region_write_refuses_wrong_dtype(make_region):
    region = make_region(capacity=2)
    batch = make_batch(1)
    batch["clicks"] = batch["clicks"].astype(np.float32)
    with pytest.raises(ValueError, match="clicks"):
        region.write(batch)


def test_region_write_refuses_wrong_size(make_region):
    region = make_region(capacity=2)
    batch = make_batch(1)
    batch["prev_mask"] = np.zeros((1, 1, S, S + 1), np.uint8)
    with pytest.raises(ValueError, match="prev_mask"):
        region.write(batch)


def test_region_read_output_returns_output_bytes(make_region):
    region = make_region(capacity=2)
    _, (offset, nbytes) = region.offsets(2)
    answer = np.arange(nbytes, dtype=np.uint8)
    other = shared_memory.SharedMemory(name=region.name)
    try:
        other.buf[offset:offset + nbytes] = answer.tobytes()
    finally:
        other.close()
    out = region.read_output(2)
    assert out.dtype == np.uint8 and out.shape == (2, 1, S, S)
    np.testing.assert_array_equal(out.reshape(-1), answer)


def test_region_read_output_is_a_copy(make_region):
    region = make_region(capacity=1)
    out = region.read_output(1)
    _, (offset, _) = region.offsets(1)
    region._memory.buf[offset] = 7
    assert out.reshape(-1)[0] == 0


def test_region_write_does_not_touch_output(make_region):
    region = make_region(capacity=2)
    region.write({name: np.full((2, c, S, S), 255, np.uint8) for name, c in INPUT_CHANNELS.items()})
    assert not region.read_output(2).any()


@linux_only
def test_region_destroy_unlinks_and_is_idempotent(make_region):
    region = make_region()
    assert os.path.exists(dev_shm(region.name))
    region.destroy()
    assert not os.path.exists(dev_shm(region.name))
    region.destroy()  # a second destroy is a no-op


def test_region_destroy_survives_object_already_unlinked(make_region):
    region = make_region()
    other = shared_memory.SharedMemory(name=region.name)
    other.close()
    other.unlink()
    region.destroy()  # FileNotFoundError is swallowed


# --- RegionPool --------------------------------------------------------------------------------

def test_pool_take_rounds_capacity_up(pool):
    p = pool(min_capacity=2)
    assert p.take(1).capacity == 2
    assert p.take(3).capacity == 4
    assert p.take(8).capacity == 8
    assert len(p) == 3


def test_pool_region_has_pool_size_and_fresh_registration(pool):
    region = pool().take(1)
    assert region.size == S and region.registered is False


def test_pool_reuses_given_back_region(pool):
    p = pool()
    region = p.take(2)
    assert p.give(region) == []
    assert p.take(1) is region
    assert len(p) == 1


def test_pool_skips_idle_region_too_small(pool):
    p = pool(min_capacity=1)
    small = p.take(1)
    p.give(small)
    big = p.take(3)
    assert big is not small and big.capacity >= 3
    assert p.take(1) is small


def test_pool_concurrent_takes_get_distinct_regions(pool):
    p = pool()
    a, b = p.take(1), p.take(1)
    assert a is not b and a.name != b.name


@linux_only
def test_pool_caps_idle_regions(pool):
    p = pool()
    regions = [p.take(1) for _ in range(shm._MAX_IDLE + 2)]
    dropped = []
    for region in regions:
        dropped += p.give(region)
    assert dropped == regions[shm._MAX_IDLE:]
    assert len(p._idle) == shm._MAX_IDLE
    assert len(p) == shm._MAX_IDLE
    for region in dropped:
        assert not os.path.exists(dev_shm(region.name))


def test_pool_forget_registrations_clears_flags(pool):
    p = pool()
    taken, idle = p.take(1), p.take(1)
    p.give(idle)
    taken.registered = idle.registered = True
    p.forget_registrations()
    assert taken.registered is False and idle.registered is False


@linux_only
def test_pool_close_destroys_every_region(pool):
    p = pool()
    taken, idle = p.take(1), p.take(4)
    p.give(idle)
    idle.registered = True
    assert p.close() == [idle]
    assert p.closed and len(p) == 0
    for region in (taken, idle):
        assert not os.path.exists(dev_shm(region.name))
    leftovers = [n for n in os.listdir("/dev/shm") if n.startswith(p._prefix)]
    assert leftovers == []


def test_pool_take_after_close_raises(pool):
    p = pool()
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.take(1)


@linux_only
def test_pool_give_after_close_destroys_region(pool):
    p = pool()
    region = p.take(1)
    p.close()
    assert p.give(region) == [region]
    assert not os.path.exists(dev_shm(region.name))


# --- shm_request -------------------------------------------------------------------------------

@pytest.fixture
def info() -> ModelInfo:
    inputs = tuple(TensorSpec(name, "UINT8", (c, S, S)) for name, c in INPUT_CHANNELS.items())
    return ModelInfo("clickmask", ("1",), S, 8, inputs, TensorSpec(OUTPUT_NAME, "UINT8", (1, S, S)))


def shm_params(tensor) -> tuple[str, int, int]:
    """(region, offset, byte size) named by a tensor's protobuf; tritonclient omits offset 0."""
    params = tensor._get_tensor().parameters
    offset = params["shared_memory_offset"].int64_param if "shared_memory_offset" in params else 0
    return (params["shared_memory_region"].string_param, offset,
            params["shared_memory_byte_size"].int64_param)


def test_shm_request_inputs_name_region_offsets_and_sizes(make_region, info):
    region = make_region(capacity=4)
    batch = make_batch(3)
    inputs, _ = shm_request(grpcclient, region, info, batch)
    offsets, _ = region.offsets(3)
    assert [t.name() for t in inputs] == list(INPUT_NAMES)
    for tensor in inputs:
        name = tensor.name()
        assert isinstance(tensor, grpcclient.InferInput)
        assert list(tensor.shape()) == [3, INPUT_CHANNELS[name], S, S]
        assert tensor.datatype() == "UINT8"
        assert shm_params(tensor) == (region.name, *offsets[name])
        assert not tensor._get_tensor().HasField("contents") and tensor._get_content() is None


def test_shm_request_output_names_region_output_span(make_region, info):
    region = make_region(capacity=2)
    _, outputs = shm_request(grpcclient, region, info, make_batch(2))
    _, (out_offset, out_bytes) = region.offsets(2)
    [output] = outputs
    assert isinstance(output, grpcclient.InferRequestedOutput)
    assert output.name() == OUTPUT_NAME
    assert shm_params(output) == (region.name, out_offset, out_bytes)
    assert out_bytes == 2 * S * S


def test_shm_request_writes_the_batch(make_region, info):
    region = make_region(capacity=2)
    batch = make_batch(2, seed=5)
    shm_request(grpcclient, region, info, batch)
    offsets, _ = region.offsets(2)
    for name, (offset, nbytes) in offsets.items():
        assert read_back(region.name, offset, nbytes) == batch[name].tobytes()


def test_shm_request_refuses_batch_over_capacity(make_region, info):
    region = make_region(capacity=1)
    with pytest.raises(ValueError, match="does not fit"):
        shm_request(grpcclient, region, info, make_batch(2))

"""The compact wire format and the compact entry's server logic, without a server."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from clickmask.client.compact import (CompactFormatError, crop_key, decode_flip, decode_png, encode_flip, encode_png,
                                      merge_flip, mirror, pack_clicks, unpack_clicks)
from clickmask.client.encoding import CropTransform, encode_inputs
from clickmask.client.clicks import Click
from clickmask.errors import ModelFault, RequestError
from clickmask.export.model_config import Contract, compact_config
from clickmask.serving.compact import Answer, CropCache, CropMiss, run_compact
from clickmask.serving.server import DEFAULT_MODEL_REPOSITORY

S = 64


def _inputs(seed=0, prev=True):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    prob = rng.random((40, 50)).astype(np.float32) if prev else None
    t = CropTransform(0, 0, 50, 40, size=S)
    return encode_inputs(image, [Click(10, 12, True), Click(30, 20, False)], prob, t), t


def _request(inputs, *, crop=True, flip=None, key=None):
    return {"crop_key": (key or crop_key(inputs["image"])).encode(),
            "crop": encode_png(inputs["image"]) if crop else b"",
            "clicks": pack_clicks(inputs["clicks"]),
            "prev_mask": encode_png(inputs["prev_mask"]) if inputs["prev_mask"].any() else b"",
            "flip": b"" if flip is None else encode_flip(*flip)}


def test_every_field_round_trips_bit_for_bit():
    inputs, _ = _inputs()
    assert np.array_equal(decode_png(encode_png(inputs["image"]), 3, S, "crop"), inputs["image"])
    assert np.array_equal(decode_png(encode_png(inputs["prev_mask"]), 1, S, "prev_mask"), inputs["prev_mask"])
    assert np.array_equal(unpack_clicks(pack_clicks(inputs["clicks"]), S), inputs["clicks"])
    assert len(pack_clicks(inputs["clicks"])) < 200  # two disks in 2 x 64 x 64
    assert decode_flip(encode_flip(40, 50), S) == (40, 50) and decode_flip(b"", S) is None
    assert crop_key(inputs["image"]) == crop_key(inputs["image"].copy()) != crop_key(inputs["image"][:, ::-1])


@pytest.mark.parametrize("data, message", [
    (b"not a png", "must be a PNG of uint8"),
    (encode_png(np.zeros((1, 32, 32), np.uint8)), r"got uint8 \[32, 32\]"),
])
def test_a_bad_png_is_refused_with_the_fix(data, message):
    with pytest.raises(CompactFormatError, match=message):
        decode_png(data, 1, S, "prev_mask")


def test_bad_clicks_and_flip_are_refused():
    with pytest.raises(CompactFormatError, match="not deflated packed bits"):
        unpack_clicks(b"garbage", S)
    with pytest.raises(CompactFormatError, match="expected 1024"):
        unpack_clicks(zlib.compress(b"\0" * 10), S)
    with pytest.raises(CompactFormatError, match="expected 1024"):  # a bomb stops at the bound
        unpack_clicks(zlib.compress(b"\0" * 10_000_000), S)
    with pytest.raises(CompactFormatError, match="ROWSxCOLS"):
        decode_flip(b"40,50", S)
    with pytest.raises(CompactFormatError, match="outside"):
        decode_flip(b"65x10", S)


def test_the_cache_is_bounded_in_bytes_and_evicts_the_least_recently_used():
    cache = CropCache(max_bytes=3 * 100)
    arrays = {k: np.full(100, i, np.uint8) for i, k in enumerate("abcd")}
    for k in "abc":
        cache.put(k, arrays[k])
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", arrays["d"])
    assert cache.get("b") is None and cache.get("a") is not None
    assert (cache.bytes, len(cache), cache.evictions, cache.hits, cache.misses) == (300, 3, 1, 2, 1)
    cache.put("huge", np.zeros(1000, np.uint8))  # larger than the budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3


def _network(feeds):
    """A stand-in network that is not mirror-symmetric: the answer depends on the column."""
    image = feeds["image"].astype(np.int32)
    col = np.arange(S, dtype=np.int32)[None, None, None, :]
    return ((image[:, :1] + feeds["clicks"][:, :1] * 7 + feeds["prev_mask"] // 3 + col) % 256).astype(np.uint8)


def test_run_compact_gives_exactly_the_raw_answers_and_the_flip_merge():
    inputs, t = _inputs()
    rows, cols = t.content_hw
    cache = CropCache()
    answers = run_compact([_request(inputs), _request(inputs, crop=False, flip=(rows, cols))], _network, S, cache)
    assert all(isinstance(a, Answer) for a in answers)
    raw = _network({k: v[None] for k, v in inputs.items()})[0, 0]
    assert np.array_equal(decode_png(answers[0].png, 1, S, "mask")[0], raw)
    mirrored = _network({k: mirror(v, rows, cols)[None] for k, v in inputs.items()})[0, 0]
    assert np.array_equal(decode_png(answers[1].png, 1, S, "mask")[0], merge_flip(raw, mirrored, rows, cols))
    assert answers[1].images == 2 and not answers[1].crop_sent and cache.hits == 1


def test_one_bad_request_fails_alone():
    inputs, _ = _inputs(prev=False)
    other, _ = _inputs(seed=1)
    good = _request(inputs)
    miss = _request(other, crop=False)
    wrong_key = _request(other, key=crop_key(inputs["image"]))
    malformed = dict(good, clicks=b"\x00garbage")
    missing = {k: v for k, v in good.items() if k != "flip"}
    answers = run_compact([good, miss, wrong_key, malformed, missing], _network, S, CropCache())
    assert isinstance(answers[0], Answer)
    assert isinstance(answers[1], CropMiss) and "crop not cached" in str(answers[1])
    assert isinstance(answers[2], RequestError) and "does not match crop_key" in str(answers[2])
    assert isinstance(answers[3], RequestError) and "clicks" in str(answers[3])
    assert isinstance(answers[4], RequestError) and "input 'flip' is missing" in str(answers[4])


def test_a_failing_network_is_a_model_fault_for_every_decoded_request():
    inputs, _ = _inputs()

    def broken(feeds):
        raise RuntimeError("boom")

    (answer,) = run_compact([_request(inputs)], broken, S, CropCache())
    assert isinstance(answer, ModelFault) and "boom" in str(answer)


def test_the_committed_compact_config_is_the_generator_s_and_parses():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    committed = (DEFAULT_MODEL_REPOSITORY / "clickmask_compact" / "config.pbtxt").read_text()
    assert committed == compact_config(Contract(320))
    config = text_format.Parse(committed, model_config_pb2.ModelConfig())
    assert [t.name for t in config.input] == ["crop_key", "crop", "clicks", "prev_mask", "flip"]
    assert {t.data_type for t in config.input} == {model_config_pb2.TYPE_STRING}
    assert config.instance_group[0].count == 1 and config.HasField("dynamic_batching")
    assert config.parameters["network"].string_value == "inline"

"""Golden tests of the model input encoding and its inverse (clickmask.client.encoding)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clickmask.client import Click, CropTransform, InvalidInputError
from clickmask.client.encoding import (
    DISK_RADIUS,
    decode_prob,
    encode_clicks,
    encode_image,
    encode_inputs,
    encode_prev_mask,
)

GOLDEN = Path(__file__).parent / "golden" / "client_encoding.npz"


def disk_pixels(cx: float, cy: float, size: int, radius: float = DISK_RADIUS) -> set[tuple[int, int]]:
    """(row, col) of every canvas pixel within ``radius`` of (cx, cy), by brute force."""
    return {
        (row, col)
        for row in range(size)
        for col in range(size)
        if (col - cx) ** 2 + (row - cy) ** 2 <= radius**2
    }


def nonzero_set(plane: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(*(idx.tolist() for idx in np.nonzero(plane))))


def test_positive_click_draws_a_radius_5_disk_in_channel_0():
    t = CropTransform.full(height=100, width=100, size=100)
    out = encode_clicks([Click(x=50, y=40)], t)
    assert out.shape == (2, 100, 100) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1}
    assert nonzero_set(out[0]) == disk_pixels(50, 40, 100)
    assert int(out[0].sum()) == 81  # lattice points in a radius-5 disk
    assert not out[1].any()


def test_negative_click_goes_to_channel_1():
    t = CropTransform.full(height=64, width=64, size=64)
    out = encode_clicks([Click(x=10, y=20, positive=False)], t)
    assert not out[0].any()
    assert nonzero_set(out[1]) == disk_pixels(10, 20, 64)


def test_click_is_scaled_to_network_coordinates_with_x_as_column():
    # 100 rows x 200 cols at S=100: scale 0.5, so (x=60, y=40) lands at column 30, row 20.
    t = CropTransform.full(height=100, width=200, size=100)
    assert t.scale == 0.5
    assert t.to_network(60, 40) == (30.0, 20.0)
    out = encode_clicks([Click(x=60, y=40)], t)
    assert nonzero_set(out[0]) == disk_pixels(30, 20, 100)


def test_fractional_network_centre_is_not_rounded():
    t = CropTransform.full(height=30, width=30, size=40)  # scale 4/3
    click = Click(x=7, y=11)
    cx, cy = t.to_network(click.x, click.y)
    out = encode_clicks([click], t)
    assert nonzero_set(out[0]) == disk_pixels(cx, cy, 40)


def test_disk_is_clipped_at_the_canvas_border():
    t = CropTransform.full(height=32, width=32, size=32)
    out = encode_clicks([Click(x=0, y=0), Click(x=31, y=31, positive=False)], t)
    assert nonzero_set(out[0]) == disk_pixels(0, 0, 32)
    assert nonzero_set(out[1]) == disk_pixels(31, 31, 32)


def test_clicks_are_mapped_relative_to_the_zoom_in_crop():
    t = CropTransform(x0=100, y0=50, x1=300, y1=150, size=100)  # 100x200 crop, scale 0.5
    out = encode_clicks([Click(x=150, y=100), Click(x=120, y=60, positive=False)], t)
    assert nonzero_set(out[0]) == disk_pixels(25, 25, 100)
    assert nonzero_set(out[1]) == disk_pixels(10, 5, 100)


def test_no_clicks_give_empty_maps():
    t = CropTransform.full(10, 10, 16)
    assert not encode_clicks([], t).any()


def test_many_clicks_match_the_brute_force_disks():
    rng = np.random.default_rng(0)
    t = CropTransform.full(height=90, width=120, size=48)
    clicks = [Click(x=float(rng.uniform(0, 119)), y=float(rng.uniform(0, 89)), positive=bool(i % 2)) for i in range(20)]
    out = encode_clicks(clicks, t)
    for channel, positive in ((0, True), (1, False)):
        expected = set()
        for c in clicks:
            if c.positive == positive:
                expected |= disk_pixels(*t.to_network(c.x, c.y), 48)
        assert nonzero_set(out[channel]) == expected


def test_wide_image_is_placed_top_left_and_zero_padded_below():
    image = np.full((50, 100, 3), 200, dtype=np.uint8)
    t = CropTransform.full(height=50, width=100, size=64)
    assert t.content_hw == (32, 64)
    out = encode_image(image, t)
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    assert (out[:, :32, :] == 200).all()
    assert not out[:, 32:, :].any()


def test_tall_image_is_zero_padded_on_the_right():
    image = np.full((100, 40, 3), 7, dtype=np.uint8)
    t = CropTransform.full(height=100, width=40, size=50)
    assert t.content_hw == (50, 20)
    out = encode_image(image, t)
    assert (out[:, :, :20] == 7).all() and not out[:, :, 20:].any()


def test_image_at_scale_one_is_the_channel_first_crop():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    t = CropTransform(x0=10, y0=5, x1=42, y1=37, size=32)  # 32x32 crop, scale 1
    out = encode_image(image, t)
    np.testing.assert_array_equal(out, image[5:37, 10:42].transpose(2, 0, 1))


def test_content_size_rounds_half_up_and_stays_within_the_canvas():
    t = CropTransform.full(height=3, width=7, size=10)
    assert t.content_hw == (4, 10)  # 3 * 10/7 = 4.29
    assert CropTransform.full(height=1, width=1000, size=10).content_hw == (1, 10)


def test_to_image_inverts_to_network():
    t = CropTransform(x0=17, y0=3, x1=217, y1=153, size=320)
    for x, y in ((17, 3), (100.5, 77.25), (216, 152)):
        xn, yn = t.to_network(x, y)
        assert t.to_image(xn, yn) == pytest.approx((x, y))


def test_prev_mask_is_zero_before_the_first_click():
    t = CropTransform.full(20, 30, 16)
    out = encode_prev_mask(None, t)
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8 and not out.any()


def test_prev_mask_is_probability_times_255_inside_the_content_only():
    prob = np.full((50, 100), 0.5, dtype=np.float32)
    prob[:, :50] = 1.0
    t = CropTransform.full(height=50, width=100, size=100)  # scale 1, content 50x100
    out = encode_prev_mask(prob, t)
    assert (out[0, :50, :50] == 255).all()
    assert (out[0, :50, 50:] == 128).all()  # rint(127.5)
    assert not out[0, 50:].any()


def test_decode_is_the_inverse_of_the_encoding_at_scale_one():
    rng = np.random.default_rng(2)
    prob = rng.random((40, 60), dtype=np.float32)
    t = CropTransform(x0=10, y0=4, x1=42, y1=36, size=32)
    back = decode_prob(encode_prev_mask(prob, t), t, (40, 60))
    assert back.dtype == np.float32 and back.shape == (40, 60)
    np.testing.assert_allclose(back[4:36, 10:42], prob[4:36, 10:42], atol=0.5 / 255 + 1e-6)
    assert not back[:4].any() and not back[36:].any() and not back[:, :10].any() and not back[:, 42:].any()


def test_decode_round_trip_of_a_smooth_map_through_a_downscale():
    yy, xx = np.mgrid[0:120, 0:200].astype(np.float32)
    prob = 0.5 + 0.5 * np.sin(xx / 40.0) * np.cos(yy / 30.0)
    t = CropTransform.full(height=120, width=200, size=100)
    back = decode_prob(encode_prev_mask(prob, t), t, (120, 200))
    np.testing.assert_allclose(back, prob, atol=0.03)


def test_decode_accepts_a_plain_sxs_map_and_fills_the_crop():
    t = CropTransform.full(height=10, width=20, size=8)
    out = decode_prob(np.full((8, 8), 255, dtype=np.uint8), t, (10, 20))
    assert (out == 1.0).all()


def test_encode_inputs_returns_the_three_contract_tensors():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    t = CropTransform.full(30, 40, 24)
    inputs = encode_inputs(image, [Click(x=3, y=4)], None, t)
    assert {k: (v.dtype, v.shape) for k, v in inputs.items()} == {
        "image": (np.uint8, (3, 24, 24)),
        "clicks": (np.uint8, (2, 24, 24)),
        "prev_mask": (np.uint8, (1, 24, 24)),
    }


def _golden_inputs() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:45, 0:70]
    image = np.stack([(xx * 3) % 256, (yy * 5) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    prob = ((np.sin(xx / 9.0) + 1) / 2 * (yy / 44.0)).astype(np.float32)
    clicks = [Click(x=20, y=10), Click(x=50.5, y=30.25, positive=False), Click(x=69, y=44)]
    t = CropTransform(x0=5, y0=2, x1=69, y1=40, size=32)
    out = encode_inputs(image, clicks, prob, t)
    out["decoded"] = decode_prob(out["prev_mask"], t, (45, 70))
    return out


def test_encoding_matches_the_committed_golden_file():
    """Any change to the encoding changes what deployed models see: update deliberately with
    CLICKMASK_REGEN_GOLDEN=1 (and retrain/re-evaluate)."""
    current = _golden_inputs()
    if os.environ.get("CLICKMASK_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        np.savez_compressed(GOLDEN, **current)
    golden = np.load(GOLDEN)
    assert set(golden.files) == set(current)
    for name in ("image", "clicks", "prev_mask"):
        np.testing.assert_array_equal(current[name], golden[name], err_msg=name)
    np.testing.assert_allclose(current["decoded"], golden["decoded"], atol=1e-6)


@pytest.mark.parametrize(
    "image, fragment",
    [
        (np.zeros((480, 640), dtype=np.float64), "got float64 of shape (480, 640)"),
        (np.zeros((4, 4, 4), dtype=np.uint8), "got uint8 of shape (4, 4, 4)"),
        ([[0, 0, 0]], "got list"),
    ],
)
def test_bad_image_is_rejected_with_a_message_that_says_what_was_expected(image, fragment):
    with pytest.raises(InvalidInputError, match="HxWx3 uint8 RGB") as info:
        encode_image(image, CropTransform.full(4, 4, 8))
    assert fragment in str(info.value)


def test_crop_box_outside_the_image_is_rejected():
    with pytest.raises(InvalidInputError, match="exceeds"):
        encode_image(np.zeros((10, 10, 3), np.uint8), CropTransform(0, 0, 11, 10, 8))


@pytest.mark.parametrize("box", [(5, 0, 5, 10), (0, 4, 10, 2), (-1, 0, 3, 3)])
def test_empty_or_negative_crop_box_is_rejected(box):
    with pytest.raises(InvalidInputError, match="crop box"):
        CropTransform(*box, size=8)


def test_prev_prob_outside_unit_interval_is_rejected():
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        encode_prev_mask(np.full((4, 4), 2.0, np.float32), CropTransform.full(4, 4, 4))


def test_decode_rejects_a_wrong_size_output():
    with pytest.raises(InvalidInputError, match=r"uint8 \[1,8,8\]"):
        decode_prob(np.zeros((1, 16, 16), np.uint8), CropTransform.full(4, 4, 8), (4, 4))


def test_encoding_does_not_mutate_its_inputs():
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    prob = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    image.setflags(write=False)
    prob.setflags(write=False)
    encode_inputs(image, [Click(x=1, y=1)], prob, CropTransform.full(5, 6, 12))

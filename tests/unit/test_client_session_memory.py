"""Bounded memory per session: the undo history keeps the network's S x S answers, not
full-resolution maps, and undo still restores exactly the previous mask and previous-mask input."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from clickmask.client import InvalidInputError, Session

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

S = 64


class Network:
    """A deterministic stand-in for the model: a disk around the last positive click."""

    size = S

    def __init__(self):
        self.calls = []

    def infer(self, inputs):
        self.calls.append({k: v.copy() for k, v in inputs.items()})
        pos = inputs["clicks"][0]
        out = np.zeros((1, S, S), np.uint8)
        ys, xs = np.nonzero(pos)
        if ys.size:
            yy, xx = np.mgrid[:S, :S]
            out[0][(yy - ys.mean()) ** 2 + (xx - xs.mean()) ** 2 < (S / 4) ** 2] = 230
        out[0] |= (inputs["prev_mask"][0] // 2)  # depends on the previous mask too
        return out


def _clicks(n, width, height):
    rng = np.random.default_rng(0)
    return [(float(rng.uniform(0, width - 1)), float(rng.uniform(0, height - 1)), bool(i % 3 != 2))
            for i in range(n)]


def test_a_click_costs_about_s_squared_bytes_of_history_not_the_image():
    height, width = 3000, 4000  # 12 MP: a full-resolution float32 + bool map is 60 MB
    image = np.zeros((height, width, 3), np.uint8)
    session = Session(Network(), image, zoom_in=False)
    clicks = _clicks(12, width, height)
    tracemalloc.start()
    try:
        session.click(*clicks[0][:2])  # the current mask is held at full resolution: once
        before, _ = tracemalloc.get_traced_memory()
        for x, y, positive in clicks[1:]:
            session.click(x=x, y=y, positive=positive)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_click = (after - before) / (len(clicks) - 1)
    assert per_click < 4 * S * S + 20_000, f"{per_click:.0f} bytes retained per click"
    assert len(session.history) == len(clicks)


def test_undo_restores_the_exact_mask_and_the_exact_next_input():
    image = np.full((300, 400, 3), 90, np.uint8)
    network = Network()
    session = Session(network, image)
    masks = [session.click(x=x, y=y, positive=p) for x, y, p in _clicks(5, 400, 300)]
    for k in range(4, 0, -1):
        restored = session.undo()
        np.testing.assert_array_equal(restored.array, masks[k - 1].array)
        np.testing.assert_array_equal(restored.prob, masks[k - 1].prob)
    x, y, p = _clicks(5, 400, 300)[1]
    session.click(x=x, y=y, positive=p)  # the second click again: byte-identical inputs
    for name in ("image", "clicks", "prev_mask"):
        np.testing.assert_array_equal(network.calls[-1][name], network.calls[1][name], err_msg=name)


def test_the_undo_history_is_capped_and_the_cap_is_checked():
    image = np.zeros((100, 100, 3), np.uint8)
    session = Session(Network(), image, max_undo=3)
    for x, y, p in _clicks(6, 100, 100):
        session.click(x=x, y=y, positive=p)
    assert len(session.clicks) == 6
    undone = [session.undo() for _ in range(5)]
    assert all(m is not None for m in undone)
    assert len(session.clicks) == 4  # 3 undo steps kept: undo stops at the oldest one kept
    session.reset()
    assert session.clicks == () and session.mask is None
    with pytest.raises(InvalidInputError, match="max_undo"):
        Session(Network(), image, max_undo=0)

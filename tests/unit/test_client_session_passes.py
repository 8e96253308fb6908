"""Session(flip=..., refine=...): the extra model calls of one click, against fakes of the network."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clickmask.client import Click, CropTransform, InvalidInputError, Session, zoom_in_box
from clickmask.client.session import REFINE_MIN_GAIN, AsyncSession

from .test_client_session import SIZE, AsyncFakeNetwork, FakeNetwork, make_image

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)


class LeftHeavyNetwork:
    """Not mirror-symmetric: probability falls from 1 at the left edge of the content to 0 at its
    right edge (the content width is read off the image's non-zero columns)."""

    size = SIZE

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def infer(self, inputs):
        self.calls.append({k: v.copy() for k, v in inputs.items()})
        cols = int(np.flatnonzero(inputs["image"].any(axis=(0, 1)))[-1]) + 1
        ramp = np.zeros(SIZE, np.float64)
        ramp[:cols] = np.linspace(255, 0, cols)
        return np.broadcast_to(np.round(ramp).astype(np.uint8), (1, SIZE, SIZE)).copy()


class FailingSecondCall(FakeNetwork):
    def infer(self, inputs):
        if len(self.calls) == 1:
            self.calls.append(inputs)
            raise ConnectionError("the server went away")
        return super().infer(inputs)


def _nonzero_image(height=240, width=320):
    return np.maximum(make_image(height, width), 1).astype(np.uint8)


def test_flip_sends_the_mirrored_content_and_keeps_the_padding_in_place():
    network = FakeNetwork()
    session = Session(network, make_image(240, 320), flip=True)
    session.click(x=100, y=50)
    first, mirrored = network.calls
    rows, cols = CropTransform.full(240, 320, SIZE).content_hw
    assert rows < SIZE  # the full view of a landscape image is padded below
    for name in ("image", "clicks", "prev_mask"):
        np.testing.assert_array_equal(mirrored[name][:, :rows, :cols], first[name][:, :rows, ::-1][:, :, -cols:])
        np.testing.assert_array_equal(mirrored[name][:, rows:, :], first[name][:, rows:, :])
    assert mirrored["clicks"][0].any() and not np.array_equal(mirrored["clicks"], first["clicks"])


def test_flip_averages_the_answer_with_the_mirrored_answer_flipped_back():
    network = LeftHeavyNetwork()
    plain = Session(LeftHeavyNetwork(), _nonzero_image()).click(x=100, y=50)
    flipped = Session(network, _nonzero_image(), flip=True).click(x=100, y=50)
    assert len(network.calls) == 2
    # the ramp and its mirror average to 0.5 everywhere: the flip-averaged answer is flat
    assert plain.prob.max() - plain.prob.min() > 0.9
    assert np.ptp(flipped.prob) < 2.0 / 255
    assert abs(float(flipped.prob.mean()) - 0.5) < 1.0 / 255


def test_flip_changes_nothing_for_a_mirror_symmetric_network():
    image = make_image(240, 320)
    plain, flipped = Session(FakeNetwork(), image), Session(FakeNetwork(), image, flip=True)
    for x, y, positive in ((100, 50, True), (140, 80, True), (120, 60, False)):
        a, b = plain.click(x, y, positive), flipped.click(x, y, positive)
        assert np.count_nonzero(a.array != b.array) <= 0.002 * a.array.size


def test_refine_runs_a_second_pass_on_the_box_of_the_first_answer():
    network = FakeNetwork()
    session = Session(network, make_image(480, 640), refine=True)
    mask = session.click(x=300, y=200)
    first, second = network.calls
    assert not first["prev_mask"].any()
    assert second["prev_mask"].any()  # the first pass's answer is the previous mask
    full = CropTransform.full(480, 640, SIZE)
    # the box is the zoom-in box of the first answer: 1.4 x its extent, at least 200 px
    (record,) = session.history
    x0, y0, x1, y1 = record.crop
    assert (x1 - x0) * REFINE_MIN_GAIN <= full.x1 - full.x0
    assert x0 <= 300 < x1 and y0 <= 200 < y1
    assert mask.array[200, 300] and not mask.array[:, :x0].any() and not mask.array[:, x1:].any()
    # the second click zooms in around the refined mask; its crop is tight already: one call
    session.click(x=310, y=205)
    assert len(network.calls) == 3
    x0, y0, x1, y1 = session.history[-1].crop
    assert (x1 - x0) < REFINE_MIN_GAIN * 200


def test_refine_box_is_the_zoom_in_box_of_the_first_pass():
    image = make_image(480, 640)
    first = Session(FakeNetwork(), image).click(x=300, y=200)  # the full-view pass alone
    box = zoom_in_box(first.array, [Click(x=300, y=200, positive=True)], 1.4, 200)
    network = FakeNetwork()
    session = Session(network, image, refine=True)
    session.click(x=300, y=200)
    assert session.history[0].crop == box
    rows, cols = CropTransform(*box, size=SIZE).content_hw
    assert network.calls[1]["image"][:, :rows, :cols].any()
    assert not network.calls[1]["image"][:, rows:, :].any() and not network.calls[1]["image"][:, :, cols:].any()


def test_refine_skips_the_second_pass_when_the_object_fills_the_view():
    class Everything(FakeNetwork):
        def infer(self, inputs):
            self.calls.append(inputs)
            return np.full((1, SIZE, SIZE), 255, np.uint8)

    network = Everything()
    Session(network, make_image(240, 320), refine=True).click(x=100, y=50)
    assert len(network.calls) == 1


def test_flip_and_refine_together_make_four_calls_on_the_first_click():
    network = FakeNetwork()
    session = Session(network, make_image(480, 640), flip=True, refine=True)
    session.click(x=300, y=200)
    assert len(network.calls) == 4
    session.click(x=310, y=205)
    assert len(network.calls) == 6  # zoomed in already: no second pass, two calls for the flip


def test_a_failed_second_call_leaves_the_session_unchanged():
    network = FailingSecondCall()
    session = Session(network, make_image(480, 640), refine=True)
    with pytest.raises(ConnectionError):
        session.click(x=300, y=200)
    assert session.clicks == () and session.mask is None and session.history == ()
    session.click(x=300, y=200)  # the next click works
    assert len(session.clicks) == 1


def test_async_session_makes_the_same_calls_and_mask():
    image = make_image(480, 640)
    sync_net, async_net = FakeNetwork(), AsyncFakeNetwork()
    expected = Session(sync_net, image, flip=True, refine=True).click(x=300, y=200)

    async def run():
        return await AsyncSession(async_net, image, flip=True, refine=True).click(x=300, y=200)

    got = asyncio.run(run())
    assert len(async_net.calls) == len(sync_net.calls) == 4
    np.testing.assert_array_equal(got.array, expected.array)


@pytest.mark.parametrize("option", ["refine"])
def test_options_must_be_bools(option):
    with pytest.raises(InvalidInputError, match=f"expected {option} as a bool"):
        Session(FakeNetwork(), make_image(), **{option: "yes"})


def test_flip_n_averages_only_the_first_n_clicks():
    network = FakeNetwork()
    session = Session(network, make_image(240, 320), flip=2)
    calls = []
    for x, y in ((100, 50), (110, 55), (120, 60), (130, 65)):
        before = len(network.calls)
        session.click(x, y)
        calls.append(len(network.calls) - before)
    assert calls == [2, 2, 1, 1]
    assert session.passes == {"flip": 2, "refine": False}
    session.undo()
    session.undo()
    session.undo()  # back to one click: the next one is the second again
    before = len(network.calls)
    session.click(111, 56)
    assert len(network.calls) - before == 2


@pytest.mark.parametrize("value, expected", [(0, False), (False, False), (True, True), (3, 3)])
def test_flip_values(value, expected):
    assert Session(FakeNetwork(), make_image(), flip=value).passes["flip"] == expected


@pytest.mark.parametrize("value", [-1, 1.5, "2"])
def test_bad_flip_values_are_refused(value):
    with pytest.raises(InvalidInputError, match="expected flip as a bool, a number of first clicks"):
        Session(FakeNetwork(), make_image(), flip=value)


def test_a_predictor_that_takes_batches_gets_the_flip_pair_in_one_call():
    class Batching(FakeNetwork):
        def __init__(self):
            super().__init__()
            self.batches: list[int] = []

        def infer_batch(self, requests):
            self.batches.append(len(requests))
            return np.stack([FakeNetwork.infer(self, r) for r in requests])

    network = Batching()
    image = make_image(240, 320)
    batched = Session(network, image, flip=True).click(x=100, y=50)
    assert network.batches == [2] and len(network.calls) == 2
    one_by_one = Session(FakeNetwork(), image, flip=True).click(x=100, y=50)
    np.testing.assert_array_equal(batched.prob, one_by_one.prob)
    Session(network, image).click(x=100, y=50)  # a single request goes through infer()
    assert network.batches == [2] and len(network.calls) == 3


def test_clickmask_passes_picks_the_default_passes(monkeypatch):
    from clickmask.client.session import PASSES_ENV, resolve_passes

    monkeypatch.delenv(PASSES_ENV, raising=False)  # the default since session 10: fast
    network = FakeNetwork()
    session = Session(network, make_image(480, 640))
    assert session.passes == {"flip": False, "refine": False}
    session.click(x=300, y=200)
    assert len(network.calls) == 1
    assert resolve_passes({}) == {"flip": False, "refine": False}
    monkeypatch.setenv(PASSES_ENV, "balanced")
    network = FakeNetwork()
    Session(network, make_image(480, 640)).click(x=300, y=200)
    assert len(network.calls) == 2  # the refine pass on the first click
    monkeypatch.setenv(PASSES_ENV, "accurate")
    assert Session(FakeNetwork(), make_image()).passes == {"flip": True, "refine": True}
    monkeypatch.setenv(PASSES_ENV, "fast")  # the speed switch
    network = FakeNetwork()
    session = Session(network, make_image(480, 640))
    assert session.passes == {"flip": False, "refine": False}
    session.click(x=300, y=200)
    assert len(network.calls) == 1
    # an explicit option wins over the environment
    assert Session(FakeNetwork(), make_image(), refine=True).passes == {"flip": False, "refine": True}
    monkeypatch.setenv(PASSES_ENV, "accurate")
    assert Session(FakeNetwork(), make_image(), flip=False).passes == {"flip": False, "refine": True}
    monkeypatch.setenv(PASSES_ENV, "fastest")
    with pytest.raises(InvalidInputError, match="CLICKMASK_PASSES='fastest' is not one of fast, balanced, accurate"):
        Session(FakeNetwork(), make_image())
    assert Session(FakeNetwork(), make_image(), flip=True, refine=False).passes["flip"] is True  # not consulted


class _OneAtATime:
    """The in-process predictor without ``infer_batch``: the flip pair runs as two calls."""

    def __init__(self, inner) -> None:
        self.inner, self.size = inner, inner.size

    def infer(self, inputs):
        return self.inner.infer(inputs)


def test_in_process_predictor_batches_the_flip_pair_with_the_same_answers(local_model):
    """LocalPredictor.infer_batch runs the flip pair as one ONNX Runtime batch; the masks are
    those of two single calls (ORT's CPU kernels do not depend on the batch size here)."""
    import cv2

    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (180, 260, 3), dtype=np.uint8), (0, 0), 3)
    image[50:130, 60:160] = (220, 40, 40)
    size = local_model.size
    requests = [{"image": rng.integers(0, 256, (3, size, size), dtype=np.uint8),
                 "clicks": np.zeros((2, size, size), np.uint8),
                 "prev_mask": np.zeros((1, size, size), np.uint8)} for _ in range(2)]
    requests[1]["clicks"][0, 100:110, 100:110] = 255
    batched = local_model.infer_batch(requests)
    assert batched.shape == (2, 1, size, size) and batched.dtype == np.uint8
    for request, answer in zip(requests, batched):
        assert np.abs(answer.astype(int) - local_model.infer(request)).max() <= 1
    with pytest.raises(ValueError, match="at least one request"):
        local_model.infer_batch([])

    clicks = [(100, 90, True), (200, 60, False), (70, 120, True)]
    masks = {}
    for name, predictor in (("batched", local_model), ("single", _OneAtATime(local_model))):
        session = Session(predictor, image, flip=True, refine=True)
        masks[name] = [session.click(x, y, positive=p).array for x, y, p in clicks]
    for a, b in zip(masks["batched"], masks["single"]):
        assert np.count_nonzero(a != b) <= 0.001 * a.size


class ConstantNetwork:
    """Answers every request with one uint8 level everywhere."""

    size = SIZE

    def __init__(self, level: int) -> None:
        self.level, self.calls = level, []

    def infer(self, inputs):
        self.calls.append(inputs)
        return np.full((1, SIZE, SIZE), self.level, np.uint8)


def test_answer_uncertainty_counts_the_middle_band_against_the_object():
    from clickmask.client.session import answer_uncertainty

    crisp = np.zeros((10, 10), np.uint8)
    crisp[:5] = 255
    assert answer_uncertainty(crisp) == 0.0
    soft = crisp.copy()
    soft[5] = 150  # a band of 10 uncertain pixels (they count as object too: p > 0.5)
    assert answer_uncertainty(soft) == pytest.approx(10 / 60)
    assert answer_uncertainty(np.zeros((4, 4), np.uint8)) == 0.0
    assert answer_uncertainty(np.full((4, 4), 100, np.uint8)) == 16.0  # nothing sure: all uncertain


@pytest.mark.parametrize("level, expected_calls", [(255, [1, 1, 1]), (0, [1, 1, 1]), (150, [1, 2, 2])])
def test_flip_auto_flips_only_after_an_uncertain_answer(level, expected_calls):
    network = ConstantNetwork(level)
    session = Session(network, make_image(240, 320), flip="auto")
    calls = []
    for x, y in ((100, 50), (110, 55), (120, 60)):
        before = len(network.calls)
        session.click(x, y)
        calls.append(len(network.calls) - before)
    assert calls == expected_calls  # the first click has no answer before it: never flipped
    assert session.passes["flip"] == "auto:0.1"


def test_flip_auto_threshold_is_part_of_the_option():
    network = ConstantNetwork(150)
    session = Session(network, make_image(240, 320), flip="auto:50")
    session.click(100, 50)
    session.click(110, 55)  # uncertainty 1.0 is under 50: no flip
    assert len(network.calls) == 2
    assert session.passes["flip"] == "auto:50"


@pytest.mark.parametrize("value", ["auto:", "auto:-1", "auto:x", "sometimes"])
def test_bad_flip_auto_values_are_refused(value):
    with pytest.raises(InvalidInputError, match="'auto' or 'auto:T'"):
        Session(FakeNetwork(), make_image(), flip=value)

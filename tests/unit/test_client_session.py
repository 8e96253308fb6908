"""Session click/undo/reset against an in-process fake of the network (no server)."""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import pytest

from clickmask.client import (
    AsyncSession,
    Click,
    CropTransform,
    InferenceError,
    InvalidInputError,
    Predictor,
    Session,
    decode_prob,
    encode_prev_mask,
    zoom_in_box,
)

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

SIZE = 64


class FakeNetwork:
    """Test double of the model: probability 1 within 12 network px of a positive click,
    0 within 12 px of a negative one (negative wins), 0.2 elsewhere."""

    size = SIZE

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.calls.append({k: v.copy() for k, v in inputs.items()})
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
        positive = cv2.dilate(inputs["clicks"][0], kernel).astype(bool)
        negative = cv2.dilate(inputs["clicks"][1], kernel).astype(bool)
        out = np.full((SIZE, SIZE), 51, np.uint8)
        out[positive] = 255
        out[negative] = 0
        return out[None]


class AsyncFakeNetwork(FakeNetwork):
    async def infer(self, inputs):  # type: ignore[override]
        await asyncio.sleep(0)
        return FakeNetwork.infer(self, inputs)


def make_image(height=240, width=320):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)


@pytest.fixture()
def network():
    return FakeNetwork()


@pytest.fixture()
def session(network):
    return Session(network, make_image())


def test_fake_network_satisfies_the_predictor_protocol(network):
    assert isinstance(network, Predictor)


def test_first_click_sees_the_full_image_with_an_empty_previous_mask(session, network):
    mask = session.click(x=100, y=50)
    assert mask.array.shape == (240, 320) and mask.array.dtype == bool
    assert mask.prob.dtype == np.float32
    (inputs,) = network.calls
    t = CropTransform.full(240, 320, SIZE)
    assert not inputs["prev_mask"].any()
    cx, cy = t.to_network(100, 50)
    assert inputs["clicks"][0, round(cy), round(cx)] == 1
    assert session.history[0].crop == (0, 0, 320, 240)
    assert mask.array[50, 100]


def test_mask_is_the_decoded_probability_thresholded_at_one_half(session, network):
    mask = session.click(x=100, y=50)
    t = CropTransform.full(240, 320, SIZE)
    prob = decode_prob(network.infer(network.calls[0]), t, (240, 320))
    np.testing.assert_array_equal(mask.prob, prob)
    np.testing.assert_array_equal(mask.array, prob > 0.5)


def test_second_click_zooms_in_around_the_current_mask(session, network):
    first = session.click(x=100, y=50)
    session.click(x=110, y=60, positive=False)
    expected = zoom_in_box(first.array, session.clicks)
    assert session.history[1].crop == expected != (0, 0, 320, 240)
    inputs = network.calls[1]
    t = CropTransform(*expected, size=SIZE)
    assert inputs["prev_mask"].any()
    np.testing.assert_array_equal(inputs["prev_mask"], encode_prev_mask(first.prob, t))
    cx, cy = t.to_network(110, 60)
    assert inputs["clicks"][1, round(cy), round(cx)] == 1


def test_zoom_in_can_be_switched_off(network):
    session = Session(network, make_image(), zoom_in=False)
    session.click(x=100, y=50)
    session.click(x=110, y=60)
    assert session.history[1].crop == (0, 0, 320, 240)


def test_zoom_crop_is_kept_while_clicks_stay_inside_it(session):
    session.click(x=100, y=50)
    session.click(x=105, y=52)
    session.click(x=103, y=49)
    assert session.history[2].crop == session.history[1].crop


@pytest.mark.parametrize(
    "x, y, fragment",
    [
        (320, 10, "x=320 is outside the image"),
        (-1, 10, "x=-1 is outside the image"),
        (10, 240.5, "y=240.5 is outside the image"),
        (float("nan"), 10, "outside the image"),
        ("10", 10, "expected x as a number"),
    ],
)
def test_click_outside_image_is_rejected_before_the_network_call(session, network, x, y, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        session.click(x=x, y=y)
    assert network.calls == []
    assert session.clicks == () and session.mask is None


def test_click_on_the_last_pixel_centre_is_accepted(session):
    session.click(x=319, y=239)
    assert session.clicks == (Click(x=319.0, y=239.0),)


def test_non_bool_positive_is_rejected(session, network):
    with pytest.raises(InvalidInputError, match="positive"):
        session.click(x=1, y=1, positive="no")
    assert network.calls == []


@pytest.mark.parametrize(
    "image, fragment",
    [
        (np.zeros((480, 640), np.float64), "got float64 of shape (480, 640)"),
        (np.zeros((10, 10, 4), np.uint8), "got uint8 of shape (10, 10, 4)"),
    ],
)
def test_bad_image_is_rejected_when_the_session_starts(network, image, fragment):
    with pytest.raises(InvalidInputError, match="HxWx3 uint8 RGB") as info:
        Session(network, image)
    assert fragment in str(info.value)
    assert network.calls == []


def test_session_keeps_its_own_copy_of_the_image(network):
    image = make_image()
    session = Session(network, image)
    image[:] = 0
    session.click(x=10, y=10)
    assert network.calls[0]["image"].any()


def test_undo_restores_the_exact_previous_state(session, network):
    session.click(x=100, y=50)
    second = session.click(x=200, y=150)
    session.click(x=120, y=60, positive=False)
    restored = session.undo()
    for mask in (restored, session.mask):  # decoded again from the kept network output: the same bits
        np.testing.assert_array_equal(mask.array, second.array)
        np.testing.assert_array_equal(mask.prob, second.prob)
    assert session.clicks == (Click(x=100.0, y=50.0), Click(x=200.0, y=150.0))
    assert len(session.history) == 2
    session.click(x=120, y=60, positive=False)  # the same click again sends the same inputs
    for name in ("image", "clicks", "prev_mask"):
        np.testing.assert_array_equal(network.calls[3][name], network.calls[2][name], err_msg=name)


def test_undo_of_the_first_click_returns_none_and_a_fresh_start(session, network):
    session.click(x=100, y=50)
    assert session.undo() is None
    assert session.mask is None and session.clicks == () and session.history == ()
    assert session.undo() is None  # nothing left: a no-op
    session.click(x=100, y=50)
    np.testing.assert_array_equal(network.calls[1]["prev_mask"], network.calls[0]["prev_mask"])


def test_reset_forgets_all_clicks(session, network):
    session.click(x=100, y=50)
    session.click(x=200, y=150)
    session.reset()
    assert session.mask is None and session.clicks == () and session.history == ()
    session.click(x=5, y=5)
    assert not network.calls[-1]["prev_mask"].any()
    assert session.history[0].crop == (0, 0, 320, 240)


def test_history_records_each_click(session):
    before = time.time()
    first = session.click(x=100, y=50)
    second = session.click(x=104, y=50, positive=False)
    r1, r2 = session.history
    assert r1.click == Click(x=100.0, y=50.0) and r2.click.positive is False
    assert before <= r1.timestamp <= r2.timestamp <= time.time()
    assert r1.latency_s >= 0 and r2.latency_s >= 0
    assert (r1.area, r2.area) == (first.area, second.area)
    assert r1.changed_pixels == first.area and r1.iou_with_previous == 0.0
    changed = int(np.count_nonzero(first.array != second.array))
    union = int(np.count_nonzero(first.array | second.array))
    assert r2.changed_pixels == changed
    assert r2.iou_with_previous == pytest.approx(1 - changed / union)
    assert 0.0 <= r1.mean_confidence <= 1.0


def test_failed_model_call_leaves_the_session_unchanged(session, network):
    session.click(x=100, y=50)

    def broken(inputs):
        raise InferenceError("boom")

    network.infer = broken
    with pytest.raises(InferenceError):
        session.click(x=10, y=10)
    assert len(session.clicks) == 1 and len(session.history) == 1


def test_wrong_output_from_the_predictor_is_an_inference_error(session, network):
    network.infer = lambda inputs: np.zeros((1, 32, 32), np.uint8)
    with pytest.raises(InferenceError, match=r"uint8 \[1,64,64\]"):
        session.click(x=10, y=10)
    assert session.clicks == ()


def test_returned_masks_are_read_only(session):
    mask = session.click(x=100, y=50)
    with pytest.raises(ValueError):
        mask.array[0, 0] = True


def test_async_session_clicks_undoes_and_resets():
    async def scenario():
        network = AsyncFakeNetwork()
        session = AsyncSession(network, make_image())
        first = await session.click(x=100, y=50)
        await session.click(x=200, y=150)
        restored = await session.undo()
        assert np.array_equal(restored.array, first.array) and np.array_equal(restored.prob, first.prob)
        with pytest.raises(InvalidInputError):
            await session.click(x=1000, y=0)
        await session.reset()
        return network, session

    network, session = asyncio.run(scenario())
    assert len(network.calls) == 2 and session.clicks == ()


def test_sync_and_async_sessions_send_identical_inputs():
    sync_net, async_net = FakeNetwork(), AsyncFakeNetwork()
    sync_session = Session(sync_net, make_image())
    clicks = [(100, 50, True), (200, 150, True), (120, 60, False)]
    for x, y, positive in clicks:
        sync_session.click(x=x, y=y, positive=positive)

    async def run():
        session = AsyncSession(async_net, make_image())
        for x, y, positive in clicks:
            await session.click(x=x, y=y, positive=positive)

    asyncio.run(run())
    for a, b in zip(sync_net.calls, async_net.calls):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])

"""Sessions seeded with an existing mask (``initial_mask``) against the in-process fake network."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clickmask.client import (
    AsyncSession,
    CropTransform,
    InvalidInputError,
    Mask,
    Session,
    encode_prev_mask,
    zoom_in_box,
)

from ..conftest import free_port
from .test_client_session import SIZE, AsyncFakeNetwork, FakeNetwork, make_image

pytestmark = pytest.mark.usefixtures("fast_passes")  # one model call a click (see conftest)

H, W = 240, 320


def seed_mask() -> np.ndarray:
    """A 60x80 rectangle: the object a previous tool found."""
    mask = np.zeros((H, W), bool)
    mask[80:140, 120:200] = True
    return mask


class CountingNetwork(FakeNetwork):
    """The fake network that also counts reads of ``size`` (a gRPC client fetches S over the network)."""

    def __init__(self) -> None:
        super().__init__()
        self.size_reads = 0

    @property
    def size(self) -> int:  # type: ignore[override]
        self.size_reads += 1
        return SIZE


@pytest.fixture()
def network():
    return FakeNetwork()


def test_the_first_click_sends_the_seed_as_previous_mask_inside_its_zoom_in(network):
    seed = seed_mask()
    session = Session(network, make_image(), initial_mask=seed)
    session.click(x=150, y=100, positive=False)
    crop = zoom_in_box(seed, session.clicks)
    assert crop is not None and crop != (0, 0, W, H)
    assert session.history[0].crop == crop
    t = CropTransform(*crop, size=SIZE)
    (inputs,) = network.calls
    np.testing.assert_array_equal(inputs["prev_mask"], encode_prev_mask(seed.astype(np.float32), t))
    assert inputs["prev_mask"].max() == 255
    cx, cy = t.to_network(150, 100)
    assert inputs["clicks"][1, round(cy), round(cx)] == 1


def test_before_any_click_the_seed_is_the_current_mask(network):
    seed = seed_mask()
    session = Session(network, make_image(), initial_mask=seed)
    assert session.seeded and session.initial_mask is session.mask
    np.testing.assert_array_equal(session.mask.array, seed)
    assert session.mask.prob.dtype == np.float32
    assert session.clicks == () and session.history == () and network.calls == []


def test_an_unseeded_session_reports_no_seed(network):
    session = Session(network, make_image())
    assert not session.seeded and session.initial_mask is None and session.mask is None


def test_change_is_measured_against_the_seed(network):
    seed = seed_mask()
    session = Session(network, make_image(), initial_mask=seed)
    mask = session.click(x=150, y=100)
    record = session.history[0]
    assert record.changed_pixels == int(np.count_nonzero(mask.array != seed))


def test_probability_seed_is_sent_as_given(network):
    prob = np.zeros((H, W), np.float32)
    prob[80:140, 120:200] = 0.8
    prob[100:110, 150:160] = 0.3  # below the threshold: not in .mask, but still sent
    session = Session(network, make_image(), initial_mask=prob, zoom_in=False)
    assert session.mask.area == 60 * 80 - 100
    session.click(x=10, y=10)
    t = CropTransform.full(H, W, SIZE)
    np.testing.assert_array_equal(network.calls[0]["prev_mask"], encode_prev_mask(prob, t))
    assert session.history[0].crop == (0, 0, W, H)


def test_a_mask_object_seeds_with_its_probability(network):
    prob = seed_mask().astype(np.float64) * 0.9
    session = Session(network, make_image(), initial_mask=Mask(prob > 0.5, prob.astype(np.float32)))
    session.click(x=10, y=10)
    assert network.calls[0]["prev_mask"].max() == round(0.9 * 255)
    bool_only = Session(FakeNetwork(), make_image(), initial_mask=Mask(seed_mask()))
    np.testing.assert_array_equal(bool_only.mask.array, seed_mask())


def test_undo_and_reset_go_back_to_the_seed(network):
    session = Session(network, make_image(), initial_mask=seed_mask())
    seed = session.mask
    session.click(x=150, y=100)
    session.click(x=20, y=20, positive=False)
    session.undo()
    assert session.undo() is seed and session.mask is seed and session.clicks == ()
    assert session.undo() is seed  # nothing left: a no-op that still reports the seed
    session.click(x=150, y=100)
    np.testing.assert_array_equal(network.calls[-1]["prev_mask"], network.calls[0]["prev_mask"])
    session.reset()
    assert session.mask is seed and session.history == ()
    session.click(x=150, y=100)
    for name in ("image", "clicks", "prev_mask"):
        np.testing.assert_array_equal(network.calls[-1][name], network.calls[0][name], err_msg=name)


def test_an_empty_seed_behaves_like_no_seed():
    seeded_net, plain_net = FakeNetwork(), FakeNetwork()
    seeded = Session(seeded_net, make_image(), initial_mask=np.zeros((H, W), bool))
    plain = Session(plain_net, make_image())
    for session in (seeded, plain):
        session.click(x=100, y=50)
        session.click(x=110, y=60, positive=False)
    assert seeded.history[0].crop == (0, 0, W, H) == plain.history[0].crop
    for a, b in zip(seeded_net.calls, plain_net.calls):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_seed_is_copied(network):
    seed = seed_mask().astype(np.float32)
    session = Session(network, make_image(), initial_mask=seed)
    seed[:] = 0
    assert session.mask.area == 60 * 80
    with pytest.raises(ValueError):
        session.mask.prob[0, 0] = 1.0


@pytest.mark.parametrize(
    "initial_mask, fragments",
    [
        (np.zeros((H, W), np.uint8), ["uint8 of shape (240, 320)", "mask > 0", "Mask.from_png"]),
        (np.zeros((H + 1, W), bool), ["shape (241, 320)", "image is 240x320", "INTER_NEAREST"]),
        (np.zeros((W, H), np.float32), ["shape (320, 240)", "image is 240x320"]),
        (np.zeros((H, W, 1), bool), ["HxW array", "bool of shape (240, 320, 1)", "mask[..., 0]"]),
        (np.full((H, W), 2.0), ["outside [0, 1]", "np.clip"]),
        (np.full((H, W), np.nan, np.float32), ["NaN"]),
        (np.zeros((H, W), np.int64), ["int64", "mask > 0"]),
        ([[0, 1]], ["got list", "np.asarray"]),
    ],
)
def test_a_bad_seed_is_refused_before_any_model_call(initial_mask, fragments):
    network = CountingNetwork()
    with pytest.raises(InvalidInputError) as info:
        Session(network, make_image(), initial_mask=initial_mask)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert network.size_reads == 0 and network.calls == []


def test_the_grpc_clients_refuse_a_bad_seed_before_connecting():
    """No server listens on the port: the seed check must come before the first network call."""
    from clickmask.client import AsyncClient, Client

    url = f"127.0.0.1:{free_port()}"
    with Client(url, timeout_s=0.5, retries=0) as client:
        with pytest.raises(InvalidInputError, match="image is 240x320"):
            client.session(make_image(), initial_mask=np.zeros((10, 10), bool))

    async def scenario():
        async with AsyncClient(url, timeout_s=0.5, retries=0) as client:
            with pytest.raises(InvalidInputError, match="mask > 0"):
                await client.session(make_image(), initial_mask=np.zeros((H, W), np.uint8))

    asyncio.run(scenario())


def test_async_seeded_session_sends_what_the_sync_one_sends():
    sync_net, async_net = FakeNetwork(), AsyncFakeNetwork()
    clicks = [(150, 100, False), (130, 90, True), (20, 20, False)]
    sync_session = Session(sync_net, make_image(), initial_mask=seed_mask())
    for x, y, positive in clicks:
        sync_session.click(x=x, y=y, positive=positive)

    async def run():
        session = AsyncSession(async_net, make_image(), initial_mask=seed_mask())
        for x, y, positive in clicks:
            await session.click(x=x, y=y, positive=positive)
        assert (await session.undo()) is not None
        await session.reset()
        np.testing.assert_array_equal(session.mask.array, seed_mask())

    asyncio.run(run())
    assert len(sync_net.calls) == len(async_net.calls) == 3
    for a, b in zip(sync_net.calls, async_net.calls):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_seeded_session_writes_a_valid_log(network):
    from clickmask.client.session_log import check_session

    session = Session(network, make_image(), initial_mask=seed_mask())
    session.click(x=150, y=100)
    record = session.to_log(session_id="seeded")
    check_session(record)
    assert len(record["clicks"]) == 1

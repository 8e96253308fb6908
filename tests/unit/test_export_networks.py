"""Network registry and the forward contract."""

import pytest
import torch

from clickmask.export.networks import NETWORKS, build_network


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network("efficientnet-lite0").eval()


def test_registry_lists_the_default_network_and_rejects_unknown_names():
    assert "efficientnet-lite0" in NETWORKS
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        build_network("no-such-net")


def test_forward_returns_full_size_logits_for_main_and_aux_heads(net):
    image, clicks, prev = torch.rand(2, 3, 128, 128), torch.zeros(2, 2, 128, 128), torch.zeros(2, 1, 128, 128)
    with torch.no_grad():
        out = net(image, clicks, prev)
    assert set(out) == {"instances", "instances_aux"}
    for value in out.values():
        assert value.shape == (2, 1, 128, 128) and value.dtype == torch.float32


def test_clicks_and_prev_mask_change_the_output(net):
    image = torch.rand(1, 3, 64, 64)
    clicks = torch.zeros(1, 2, 64, 64)
    prev = torch.zeros(1, 1, 64, 64)
    clicked = clicks.clone()
    clicked[0, 0, 28:36, 28:36] = 1
    with torch.no_grad():
        base = net(image, clicks, prev)["instances"]
        with_click = net(image, clicked, prev)["instances"]
        with_prev = net(image, clicks, prev + 1)["instances"]
    assert not torch.allclose(base, with_click)
    assert not torch.allclose(base, with_prev)


def test_default_network_is_small(net):
    assert sum(p.numel() for p in net.parameters()) < 6_000_000
    assert net.maps_transform.scale.scale.item() == pytest.approx(0.05)

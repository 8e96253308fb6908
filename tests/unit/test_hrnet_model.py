"""RITM HRNet-OCR networks: parameter names and shapes, the RITM details that matter, the registry."""

import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from clickmask.client import Click  # noqa: E402
from clickmask.client.encoding import DISK_RADIUS, CropTransform, encode_clicks  # noqa: E402
from clickmask.export.network_names import NETWORK_NAMES  # noqa: E402
from clickmask.export.networks import NETWORKS, build_network  # noqa: E402
from clickmask.export.ritm_model import RITM_DISK_RADIUS, infer_ritm_variant  # noqa: E402

GOLDEN = pathlib.Path(__file__).parent / "golden"
VARIANTS = ("ritm-hrnet18s", "ritm-hrnet18", "ritm-hrnet32")


def _golden(variant):
    return json.loads((GOLDEN / f"ritm_hrnet_keys_{variant.removeprefix('ritm-')}.json").read_text())


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_has_exactly_the_keys_and_shapes_derived_from_ritm(variant):
    golden = _golden(variant)
    state = build_network(variant).state_dict()
    got = [[k, list(v.shape)] for k, v in state.items()]
    expected = golden["keys"]
    missing = sorted({k for k, _ in expected} - set(state))
    unexpected = sorted(set(state) - {k for k, _ in expected})
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    assert got == expected  # same shapes, in RITM's registration order
    assert all(k.startswith(("feature_extractor.", "maps_transform.")) for k in state)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_and_variant_inference_agree_with_the_golden_list(variant):
    golden = _golden(variant)
    net = build_network(variant)
    assert sum(p.numel() for p in net.parameters()) == golden["num_parameters"]
    assert infer_ritm_variant(net.state_dict()) == (golden["width"], golden["ocr_width"], golden["small"])


def test_golden_lists_are_what_the_derivation_script_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ritm_derive_keys", GOLDEN / "ritm_derive_keys.py")
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    for variant, (width, ocr_width, small) in derive.VARIANTS.items():
        assert [[k, s] for k, s in derive.derive(width, ocr_width, small)] == _golden(variant)["keys"]


def test_cli_choices_are_the_registry_keys():
    assert NETWORK_NAMES == tuple(NETWORKS)


def test_output_is_two_logit_maps_at_input_size():
    torch.manual_seed(0)
    net = build_network("ritm-hrnet18s").eval()
    x = (torch.rand(2, 3, 64, 64), torch.zeros(2, 2, 64, 64), torch.rand(2, 1, 64, 64))
    with torch.no_grad():
        out = net(*x)
    assert set(out) == {"instances", "instances_aux"}
    assert out["instances"].shape == out["instances_aux"].shape == (2, 1, 64, 64)


def test_sizes_that_are_not_multiples_of_32_work_like_ritm():
    # RITM accepts any size (its predictor pads nothing); stride-2 convs round up and the
    # branches are resized to the finer one's size.
    torch.manual_seed(0)
    net = build_network("ritm-hrnet18s").eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 50, 70), torch.zeros(1, 2, 50, 70), torch.zeros(1, 1, 50, 70))
    assert out["instances"].shape == (1, 1, 50, 70)


def test_click_scale_acts_through_its_absolute_value_as_in_ritm():
    # RITM's ScaleLayer multiplies by |scale|; a checkpoint with a negative scale must behave so.
    torch.manual_seed(0)
    net = build_network("ritm-hrnet18s").eval()
    maps = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        pos = net.maps_transform(maps)
        net.maps_transform[3].scale.neg_()
        torch.testing.assert_close(net.maps_transform(maps), pos, rtol=0, atol=0)


def test_prev_mask_pos_neg_enter_maps_transform_in_ritms_channel_order():
    torch.manual_seed(0)
    net = build_network("ritm-hrnet18s").eval()
    seen = {}
    net.maps_transform.register_forward_pre_hook(lambda module, args: seen.update(maps=args[0]))
    prev = torch.full((1, 1, 32, 32), 0.25)
    clicks = torch.stack([torch.full((32, 32), 1.0), torch.full((32, 32), 0.5)])[None]
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 32), clicks, prev)
    assert seen["maps"][0, :, 0, 0].tolist() == [0.25, 1.0, 0.5]


def _ritm_disks(points_rc, size, radius):
    """RITM's DistMaps with use_disks=True: (row - y)^2 + (col - x)^2 <= radius^2, per channel."""
    rows, cols = np.mgrid[:size, :size]
    out = np.zeros((size, size), bool)
    for y, x in points_rc:
        out |= (rows - y) ** 2 + (cols - x) ** 2 <= radius ** 2
    return out


def test_client_disks_are_ritms_disks_of_radius_5():
    assert DISK_RADIUS == RITM_DISK_RADIUS == 5
    size = 64
    clicks = [Click(x=10, y=20), Click(x=0, y=63), Click(x=40, y=41, positive=False)]
    enc = encode_clicks(clicks, CropTransform.full(size, size, size))
    pos = _ritm_disks([(20, 10), (63, 0)], size, 5)
    neg = _ritm_disks([(41, 40)], size, 5)
    np.testing.assert_array_equal(enc[0].astype(bool), pos)
    np.testing.assert_array_equal(enc[1].astype(bool), neg)


# File sizes of the official checkpoints as RITM's README lists them (MiB, rounded by GitHub):
# coco_lvis_h18s_itermask.pth 16.5, coco_lvis_h18_itermask.pth 38.8, coco_lvis_h32_itermask.pth 119.
PUBLISHED_FILE_MIB = {"ritm-hrnet18s": 16.5, "ritm-hrnet18": 38.8, "ritm-hrnet32": 119.0}


@pytest.mark.parametrize("variant", VARIANTS)
def test_tensor_bytes_fit_the_published_checkpoint_file_size(variant):
    # A plausibility check independent of RITM's code: float32 tensors plus under 1 MiB of
    # pickle overhead (names, config) make up each published file; another width, OCR width or
    # block count would be megabytes off.
    state = build_network(variant).state_dict()
    mib = sum(t.numel() * t.element_size() for t in state.values()) / 2 ** 20
    published = PUBLISHED_FILE_MIB[variant]
    assert published - 1.0 < mib <= published + 0.05

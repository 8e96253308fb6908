"""EfficientNet-Lite0 encoder: ImageNet weights load strictly and match the reference package."""

import pytest
import torch

from clickmask.export.efficientnet_lite import (
    FEATURE_CHANNELS,
    EfficientNetLite0,
    imagenet_weights_path,
    load_imagenet_weights,
)


def test_imagenet_weights_load_strictly_with_and_without_head():
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    with_head = EfficientNetLite0(include_head=True)
    assert set(with_head.state_dict()) == set(state)
    load_imagenet_weights(with_head)
    without_head = EfficientNetLite0()
    load_imagenet_weights(without_head)
    assert not any(k.startswith(("_conv_head", "_bn1.", "_fc")) for k in without_head.state_dict())
    torch.testing.assert_close(without_head._blocks[7]._depthwise_conv.weight, state["_blocks.7._depthwise_conv.weight"])


def test_classifier_output_equals_reference_package():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_pkg.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True))
    ours = EfficientNetLite0(include_head=True)
    load_imagenet_weights(ours)
    reference.eval()
    ours.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)  # the reference pads statically for 224
    with torch.no_grad():
        torch.testing.assert_close(ours.classify(x), reference(x), rtol=1e-5, atol=1e-5)


def test_features_have_strides_2_to_32_and_stem_extra_is_added():
    net = EfficientNetLite0().eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = net(x)
        shifted = net(x, stem_extra=torch.ones(1, 32, 32, 48))
    assert [f.shape[1] for f in features] == list(FEATURE_CHANNELS)
    assert [tuple(f.shape[-2:]) for f in features] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    assert not torch.allclose(features[-1], shifted[-1])

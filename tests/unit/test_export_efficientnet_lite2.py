"""EfficientNet-Lite2 as a network option: its ImageNet weights, the contract, ONNX and training."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest
import torch

from clickmask.datasets import default_root, read_image
from clickmask.export.checkpoint import load_checkpoint
from clickmask.export.efficientnet_lite import (
    B0_STAGES,
    LITE0_STAGES,
    EfficientNetLite,
    imagenet_weights_path,
    load_imagenet_weights,
)
from clickmask.export.networks import IMAGENET_MEAN, IMAGENET_STD, build_network
from clickmask.export.onnx_export import export_onnx
from clickmask.export.train import train

from .synthetic import write_disc_dataset

LITE2 = "efficientnet-lite2"
SORREL = 339  # ImageNet class of a chestnut horse


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return torch.load(imagenet_weights_path(LITE2), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite:
    net = EfficientNetLite(LITE2, include_head=True)
    load_imagenet_weights(net)
    return net.eval()


def test_lite2_layout_scales_b0_with_fixed_stem_head_and_end_stages():
    net = EfficientNetLite(LITE2)
    assert net.feature_channels == (16, 24, 48, 120, 352)
    assert [s.repeats for s in net.variant.stages] == [1, 3, 3, 4, 4, 5, 1] and len(net._blocks) == 21
    assert LITE0_STAGES == B0_STAGES


def test_every_weight_of_the_file_loads_into_the_same_name_and_shape(weights, classifier):
    ours = classifier.state_dict()
    assert set(ours) == set(weights)
    for key, tensor in weights.items():
        assert torch.equal(ours[key], tensor), key
    headless = EfficientNetLite(LITE2)
    load_imagenet_weights(headless)
    assert not any(k.startswith(("_conv_head", "_bn1.", "_fc")) for k in headless.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_imagenet_weights(EfficientNetLite("efficientnet-lite0"), imagenet_weights_path(LITE2))


def test_classifier_output_equals_reference_package(weights, classifier):
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_pkg.EfficientNet.from_name(LITE2, image_size=256)  # its static SAME padding for 256
    reference.load_state_dict(weights)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(classifier.classify(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_imagenet_sanity_horses_are_classified_as_sorrel(classifier):
    folder = pathlib.Path(default_root()) / "WeizmannHorse" / "images"
    paths = sorted(folder.glob("*"))[:4]
    if not paths:
        pytest.skip(f"no WeizmannHorse images under {folder}")
    batch = np.stack([cv2.resize(read_image(p), (256, 256), interpolation=cv2.INTER_AREA) for p in paths])
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top1 = classifier.classify(x).argmax(1).tolist()
    assert top1.count(SORREL) >= 3, top1  # random weights: ~0 of 4


def test_lite2_network_keeps_the_call_contract_and_exports_with_parity(tmp_path):
    torch.manual_seed(0)
    net = build_network(LITE2).eval()
    image, clicks, prev = torch.rand(1, 3, 64, 64), torch.zeros(1, 2, 64, 64), torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        out = net(image, clicks, prev)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"instances": (1, 1, 64, 64), "instances_aux": (1, 1, 64, 64)}
    assert 4_000_000 < sum(p.numel() for p in net.parameters()) < 5_000_000
    report = export_onnx(net, tmp_path / "lite2.onnx", size=64, batch_sizes=(1, 2))
    assert report.passed and report.max_abs_diff_levels <= 2


def test_one_training_step_on_lite2_writes_a_lite2_checkpoint(tmp_path):
    root = write_disc_dataset(tmp_path / "data", count=4, height=64, width=64, seed=0)
    result = train(dict(output=str(tmp_path / "run"), data_root=str(root), train_sets=("Synthetic",),
                        network=LITE2, val_fraction=0.25, crop_size=64, input_size=64, batch_size=2, iters=1,
                        warmup_iters=1, val_every=1, val_samples=1, val_max_clicks=1, threads=1,
                        max_extra_rounds=0), progress=False)
    assert result.steps == 1
    net, config = load_checkpoint(tmp_path / "run" / "best.pt", network=LITE2)
    assert config["network"] == LITE2 and net.backbone.feature_channels[-1] == 352

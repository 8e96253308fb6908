"""Official RITM checkpoint files: strict loading, variant inference, refusals, export."""

import pytest

torch = pytest.importorskip("torch")

from clickmask.export.checkpoint import CheckpointError, load_checkpoint, load_ritm_checkpoint  # noqa: E402
from clickmask.export.networks import build_network  # noqa: E402
from clickmask.export.ritm_model import RITM_VARIANTS  # noqa: E402

VARIANTS = tuple(RITM_VARIANTS)


def ritm_config(width, ocr_width, small, **overrides):
    """A config as RITM's ``@serialize`` records it for models/iter_mask/hrnet*_cocolvis_itermask_3p.py."""
    specified = {"width": width, "ocr_width": ocr_width, "small": small, "with_aux_output": True,
                 "use_leaky_relu": True, "use_rgb_conv": False, "use_disks": True, "norm_radius": 5,
                 "with_prev_mask": True}
    specified.update(overrides)
    defaults = {"backbone_lr_mult": 0.1, "cpu_dist_maps": False, "clicks_groups": None,
                "binary_prev_mask": False, "conv_extend": False,
                "norm_mean_std": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}
    params = {k: {"type": "builtin", "value": v, "specified": True} for k, v in specified.items()}
    params.update({k: {"type": "builtin", "value": v, "specified": False} for k, v in defaults.items()
                   if k not in specified})
    params["norm_layer"] = {"type": "class", "value": "torch.nn.modules.batchnorm.BatchNorm2d", "specified": False}
    return {"class": "isegm.model.is_hrnet_model.HRNetModel", "params": params}


def trained_like(variant, seed=0):
    """A network whose every tensor (BN statistics included) differs from a fresh build."""
    torch.manual_seed(seed)
    net = build_network(variant)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(1234)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return net.eval()


def save_official(path, net, config):
    torch.save({"state_dict": net.state_dict(), "config": config}, path)
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_file_loads_strictly_with_every_tensor_restored(tmp_path, variant):
    v = RITM_VARIANTS[variant]
    net = trained_like(variant)
    path = save_official(tmp_path / f"{variant}.pth", net, ritm_config(v.width, v.ocr_width, v.small))
    loaded, config = load_checkpoint(path)
    assert config["network"] == variant and config["source"] == "ritm" and config["input_size"] == 320
    assert config["ritm_config"]["class"].endswith("HRNetModel")
    assert not loaded.training
    expected, got = net.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_loaded_official_model_computes_what_the_saved_one_did(tmp_path):
    net = trained_like("ritm-hrnet18s")
    path = save_official(tmp_path / "h18s.pth", net, ritm_config(18, 48, True))
    loaded, _ = load_ritm_checkpoint(path, network="ritm-hrnet18s")
    x = (torch.rand(2, 3, 64, 64), (torch.rand(2, 2, 64, 64) > 0.97).float(), torch.rand(2, 1, 64, 64))
    with torch.no_grad():
        a, b = net(*x), loaded(*x)
    for key in ("instances", "instances_aux"):
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_variant_is_inferred_from_the_weights_when_the_config_says_nothing(tmp_path):
    path = save_official(tmp_path / "bare.pth", trained_like("ritm-hrnet18"), {})
    _, config = load_checkpoint(path)
    assert config["network"] == "ritm-hrnet18"


def test_the_expected_network_is_enforced(tmp_path):
    path = save_official(tmp_path / "h18s.pth", trained_like("ritm-hrnet18s"), ritm_config(18, 48, True))
    with pytest.raises(CheckpointError, match="are ritm-hrnet18s, not ritm-hrnet18"):
        load_checkpoint(path, network="ritm-hrnet18")
    with pytest.raises(CheckpointError, match="not a RITM network"):
        load_ritm_checkpoint(path, network="efficientnet-lite0")


def test_config_that_contradicts_the_weights_is_rejected(tmp_path):
    path = save_official(tmp_path / "x.pth", trained_like("ritm-hrnet18s"), ritm_config(32, 48, True))
    with pytest.raises(CheckpointError, match="config says width=32 but the weights have width=18"):
        load_checkpoint(path)


@pytest.mark.parametrize("overrides, reason", [
    ({"with_prev_mask": False}, "without prev_mask"),
    ({"use_disks": False, "norm_radius": 260}, "distance maps"),
    ({"norm_radius": 3}, "radius 3"),
    ({"use_rgb_conv": True}, "rgb_conv"),
    ({"binary_prev_mask": True}, "binary_prev_mask"),
])
def test_models_with_other_click_inputs_are_refused_with_the_reason(tmp_path, overrides, reason):
    path = save_official(tmp_path / "x.pth", trained_like("ritm-hrnet18s"), ritm_config(18, 48, True, **overrides))
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(path)


def test_relu_maps_transform_is_built_when_the_config_says_so(tmp_path):
    path = save_official(tmp_path / "x.pth", trained_like("ritm-hrnet18s"),
                         ritm_config(18, 48, True, use_leaky_relu=False))
    net, config = load_checkpoint(path)
    assert isinstance(net.maps_transform[1], torch.nn.ReLU) and config["network_kwargs"] == {"leaky_relu": False}


def test_missing_or_extra_tensors_fail_strict_loading(tmp_path):
    state = trained_like("ritm-hrnet18s").state_dict()
    missing = dict(state)
    del missing["feature_extractor.cls_head.bias"]
    torch.save({"state_dict": missing, "config": ritm_config(18, 48, True)}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="(?s)does not load strictly.*cls_head.bias"):
        load_checkpoint(tmp_path / "missing.pth")
    extra = dict(state, **{"feature_extractor.rgb_extra.weight": torch.zeros(1)})
    torch.save({"state_dict": extra, "config": ritm_config(18, 48, True)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="(?s)does not load strictly.*rgb_extra"):
        load_checkpoint(tmp_path / "extra.pth")


def test_unpublished_hrnet_shapes_are_named_in_the_error(tmp_path):
    state = build_network("ritm-hrnet18s").state_dict()
    state["feature_extractor.transition1.0.0.weight"] = torch.zeros(48, 256, 3, 3)
    torch.save({"state_dict": state, "config": {}}, tmp_path / "w48.pth")
    with pytest.raises(CheckpointError, match="width 48, ocr_width 48, small=True is not a registered"):
        load_checkpoint(tmp_path / "w48.pth")


@pytest.mark.slow
def test_export_onnx_of_an_official_checkpoint_keeps_the_contract(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import argparse

    import numpy as np
    import onnxruntime as ort

    from clickmask.export.cli import add_export_parser

    ckpt = save_official(tmp_path / "h18s.pth", trained_like("ritm-hrnet18s"), ritm_config(18, 48, True))
    out = tmp_path / "1" / "model.onnx"
    parser = argparse.ArgumentParser(prog="clickmask")
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "onnx", "--network", "ritm-hrnet18s", "--checkpoint", str(ckpt),
                              "--size", "64", "--output", str(out)])
    assert args.func(args) == 0
    assert "ONNX parity PASS" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape[1:]) for i in session.get_inputs()] == [
        ("image", "tensor(uint8)", [3, 64, 64]), ("clicks", "tensor(uint8)", [2, 64, 64]),
        ("prev_mask", "tensor(uint8)", [1, 64, 64])]
    (output,) = session.get_outputs()
    assert (output.name, output.type, output.shape[1:]) == ("mask_prob", "tensor(uint8)", [1, 64, 64])
    # The graph is static apart from the batch axis: no Shape arithmetic for TensorRT to resolve.
    import onnx

    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type == "Shape"]
    feeds = {"image": np.zeros((3, 3, 64, 64), np.uint8), "clicks": np.zeros((3, 2, 64, 64), np.uint8),
             "prev_mask": np.zeros((3, 1, 64, 64), np.uint8)}
    assert session.run(None, feeds)[0].shape == (3, 1, 64, 64)

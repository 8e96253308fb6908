"""Checkpoint round trip."""

import pytest
import torch

from clickmask.export.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from clickmask.export.networks import build_network


@pytest.mark.parametrize("half", [False, True])
def test_round_trip_restores_weights_and_config(tmp_path, half):
    torch.manual_seed(1)
    net = build_network("efficientnet-lite0", pretrained_encoder=False).eval()
    path = save_checkpoint(tmp_path / "ckpt" / "best.pt", net, {"network": "efficientnet-lite0", "noc90": 3.5},
                           half=half, step=7)
    loaded, config = load_checkpoint(path)
    assert config["network"] == "efficientnet-lite0" and config["input_size"] == 320 and config["noc90"] == 3.5
    assert read_checkpoint(path)["step"] == 7
    x = (torch.rand(1, 3, 64, 64), torch.zeros(1, 2, 64, 64), torch.zeros(1, 1, 64, 64))
    with torch.no_grad():
        a, b = net(*x)["instances"], loaded(*x)["instances"]
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(a, b, rtol=0, atol=0 if not half else 5e-2)


def test_unknown_network_and_foreign_files_are_rejected(tmp_path):
    net = build_network("efficientnet-lite0", pretrained_encoder=False)
    path = save_checkpoint(tmp_path / "x.pt", net, {"network": "efficientnet-lite0"})
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["config"]["network"] = "mystery"
    torch.save(ckpt, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="mystery"):
        load_checkpoint(tmp_path / "y.pt")
    torch.save({"weights": {}}, tmp_path / "z.pt")
    with pytest.raises(CheckpointError, match="not a clickmask checkpoint"):
        load_checkpoint(tmp_path / "z.pt")
    with pytest.raises(CheckpointError, match="config must name"):
        save_checkpoint(tmp_path / "w.pt", net, {})


def test_average_is_the_weighted_mean_of_every_float_tensor(tmp_path):
    from clickmask.cli import main
    from clickmask.export.checkpoint import average_checkpoints

    torch.manual_seed(2)
    nets = [build_network("efficientnet-lite0", pretrained_encoder=False) for _ in range(2)]
    with torch.no_grad():
        nets[1].decoder.lateral4[1].running_mean.fill_(4.0)  # BN statistics are averaged too
    paths = [save_checkpoint(tmp_path / f"{i}.pt", n, {"network": "efficientnet-lite0", "step": i})
             for i, n in enumerate(nets)]
    out = average_checkpoints(paths, tmp_path / "soup.pt", [1, 3], half=False)
    soup = read_checkpoint(out)
    a, b = (n.state_dict() for n in nets)
    for key, value in soup["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * a[key] + 0.75 * b[key])
        else:
            assert torch.equal(value, a[key])
    assert soup["config"]["average_weights"] == [0.25, 0.75] and soup["config"]["step"] is None
    assert soup["config"]["averaged_from"] == [str(p) for p in paths]
    load_checkpoint(out)  # a network like any other

    assert main(["average", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "half.pt")]) == 0
    assert read_checkpoint(tmp_path / "half.pt")["state_dict"]["head.weight"].dtype == torch.float16


def test_average_refuses_what_cannot_be_averaged(tmp_path, capsys):
    from clickmask.cli import main
    from clickmask.export.checkpoint import average_checkpoints

    net = build_network("efficientnet-lite0", pretrained_encoder=False)
    one = save_checkpoint(tmp_path / "one.pt", net, {"network": "efficientnet-lite0"})
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([one], tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="2 weights for 3"):
        average_checkpoints([one, one, one], tmp_path / "x.pt", [1, 2])
    with pytest.raises(CheckpointError, match=">= 0 with a positive sum"):
        average_checkpoints([one, one], tmp_path / "x.pt", [0, 0])
    ckpt = torch.load(one, weights_only=True)
    del ckpt["state_dict"]["head.bias"]
    torch.save(ckpt, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match="different tensors"):
        average_checkpoints([one, tmp_path / "short.pt"], tmp_path / "x.pt")
    assert main(["average", str(one), "-o", str(tmp_path / "x.pt")]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err

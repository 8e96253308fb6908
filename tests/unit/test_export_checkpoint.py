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

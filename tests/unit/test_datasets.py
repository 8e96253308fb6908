"""The one dataset reader: conventions of ../shared/datasets/README.md and clear errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from clickmask.datasets import (DatasetError, list_objects, load_object, parse_key, read_object_list,
                                write_object_list)


def _write(root, name, masks, image_hw=None):
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir(parents=True)
    for sid, mask in masks.items():
        hw = image_hw or mask.shape
        cv2.imwrite(str(root / name / "images" / f"{sid}.jpg"), np.full((*hw, 3), 120, np.uint8))
        cv2.imwrite(str(root / name / "masks" / f"{sid}.png"), mask)
    return root / name


def test_binary_masks_ignore_128_and_count_every_other_value_as_object(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[2:8, 2:8] = 255
    mask[8:10, 2:8] = 128
    folder = _write(tmp_path, "GrabCut", {"a": mask})
    (obj,) = list_objects(folder)
    image, gt, ignore = load_object(obj)
    assert image.shape == (20, 30, 3) and gt.sum() == 36 and ignore.sum() == 12 and not (gt & ignore).any()


def test_instance_sets_give_one_object_per_instance_over_the_fraction(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    mask[:30, :30] = 1
    mask[50:52, 50:52] = 2  # 0.04%: too small
    mask[60:90, 60:90] = 3
    _write(tmp_path, "CCP", {"0001": mask})
    objects = list_objects(tmp_path, "CCP")
    assert [o.instance_id for o in objects] == [1, 3] and [o.key for o in objects] == ["CCP/0001#1", "CCP/0001#3"]
    _, gt, ignore = load_object(objects[1])
    assert gt.sum() == 900 and not ignore.any()


def test_msrc_255_is_ignored_not_an_object(tmp_path):
    mask = np.zeros((50, 50), np.uint8)
    mask[:20, :20] = 1
    mask[30:, 30:] = 255
    _write(tmp_path, "MSRC", {"1_1_s": mask})
    (obj,) = list_objects(tmp_path, "MSRC")
    _, gt, ignore = load_object(obj)
    assert obj.instance_id == 1 and gt.sum() == 400 and ignore.sum() == 400


def test_an_instance_map_read_as_binary_names_the_fix(tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[:5, :5], mask[10:, 10:] = 1, 2
    folder = _write(tmp_path, "mystery", {"x": mask})
    with pytest.raises(DatasetError, match="--convention instances"):
        list_objects(folder)
    assert len(list_objects(folder, convention="instances")) == 2


def test_unknown_convention_missing_mask_image_and_size_mismatch_are_clear(tmp_path):
    folder = _write(tmp_path, "COCO_MVal", {"a": np.zeros((10, 10), np.uint8)})
    with pytest.raises(DatasetError, match="unknown mask convention 'polygons'"):
        list_objects(folder, convention="polygons")
    (folder / "images" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="no image for the mask"):
        list_objects(folder)
    other = _write(tmp_path, "WeizmannHorse", {"h": np.zeros((10, 10), np.uint8)}, image_hw=(12, 10))
    (obj,) = list_objects(other)
    with pytest.raises(DatasetError, match="differ in size"):
        load_object(obj)
    (other / "masks" / "h.png").unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        load_object(obj)
    with pytest.raises(DatasetError, match="images/<id>"):
        list_objects(tmp_path / "nowhere")


def test_training_refuses_the_evaluation_sets(tmp_path):
    _write(tmp_path, "Berkeley", {"1": np.zeros((5, 5), np.uint8)})
    with pytest.raises(DatasetError, match="evaluation-only"):
        list_objects(tmp_path, "Berkeley", training=True)


def test_object_lists_round_trip_and_name_bad_keys(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[:20, :20] = 1
    _write(tmp_path, "CCP", {"0002": mask})
    objects = list_objects(tmp_path, "CCP")
    path = tmp_path / "list.txt"
    write_object_list(objects, path, ["a header"])
    assert read_object_list(path, tmp_path) == objects
    with pytest.raises(DatasetError, match="name the instance"):
        parse_key("CCP/0002", tmp_path)
    with pytest.raises(DatasetError, match="no image/mask pair"):
        parse_key("CCP/9999#1", tmp_path)

"""Shard packing, reading, staging and the resident object table (synthetic dataset folders)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from clickmask.benchmarks.gpu_train import stage, write_synthetic_datasets
from clickmask.export.gpu_train import ResidentData, draw_index
from clickmask.export.shards import (
    LABEL_IGNORE,
    ShardError,
    list_groups,
    list_shards,
    pack_shards,
    read_shard,
    shard_keys,
)

from clickmask.datasets import list_objects, load_object


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    sets = write_synthetic_datasets(root / "shared", images=10, side=160, seed=1)
    duts = root / "data" / "DUTS-TR"
    (duts / "images").mkdir(parents=True)
    (duts / "masks").mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(6):
        cv2.imwrite(str(duts / "images" / f"d{i}.jpg"), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
        mask = np.zeros((90, 120), np.uint8)
        cv2.circle(mask, (60, 45), 20 + i, 255, -1)
        cv2.imwrite(str(duts / "masks" / f"d{i}.png"), mask)
    exclude = root / "val.txt"
    held_out = list_objects(root / "shared", "CCP")[0]
    exclude.write_text(f"# held out\nCOCO_MVal/coco_mval2_000002\n{held_out.key}\nNOT_HERE/x\n")
    return root, sets, duts, exclude, held_out


def test_pack_leaves_out_every_image_of_the_exclusion_lists(datasets, tmp_path):
    root, sets, duts, exclude, held_out = datasets
    result = pack_shards(tmp_path, root / "shared", sets, extra=[duts, root / "missing"], exclude=[exclude],
                         max_side=96, max_bytes=60_000)
    keys = shard_keys(tmp_path)
    groups = list_groups(exclude)
    assert "COCO_MVal/000002" in groups and held_out.group in groups
    assert not any(k.startswith(("COCO_MVal/coco_mval2_", f"CCP/{held_out.sample_id}#")) for k in keys)
    all_objects = sum(len(list_objects(root / "shared", s)) for s in sets) + 6
    held = 1 + len([o for o in list_objects(root / "shared", "CCP") if o.group == held_out.group])
    assert len(keys) == len(set(keys)) == all_objects - held == result.summary["objects_packed"]
    assert result.summary["missing_extra"] == [str(root / "missing")]
    assert len(result.shards) >= 2 and all(p.stat().st_size <= 60_000 for p in list_shards(tmp_path))
    # the multi-object sets first, the extra folder's images last
    sets_of = [k.split("/")[0] for k in keys]
    assert sets_of.index("DUTS-TR") == len(sets_of) - 6


def test_label_maps_hold_each_object_and_the_ignore_band(datasets, tmp_path):
    root, sets, duts, _, _ = datasets
    pack_shards(tmp_path, root / "shared", sets, extra=[duts], exclude=[], max_side=96)
    by_key = {o.key: o for s in sets for o in list_objects(root / "shared", s)}
    checked = 0
    for im in read_shard(list_shards(tmp_path)[0]):
        assert max(im.image.shape[:2]) <= 96 and im.image.shape[:2] == im.labels.shape
        for label, key in im.objects:
            if key not in by_key:
                continue
            _, gt, ignore = load_object(by_key[key])
            h, w = im.labels.shape
            small = cv2.resize(gt.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR) >= 128
            ours = im.labels == label
            assert (ours & small).sum() / max(1, (ours | small).sum()) > 0.9
            if ignore.any():
                assert (im.labels == LABEL_IGNORE).any()
            checked += 1
    assert checked >= 10


def test_pack_refuses_a_folder_that_already_holds_shards(datasets, tmp_path):
    root = datasets[0]
    pack_shards(tmp_path, root / "shared", ["COCO_MVal"], extra=[], exclude=[], max_side=64)
    with pytest.raises(ShardError, match="already holds shards"):
        pack_shards(tmp_path, root / "shared", ["COCO_MVal"], extra=[], exclude=[])


def test_stage_copies_checks_and_drops_a_damaged_shard(datasets, tmp_path):
    root, sets, _, _, _ = datasets
    incoming = tmp_path / "incoming"
    pack_shards(incoming, root / "shared", sets, extra=[], exclude=[], max_side=64, max_bytes=40_000)
    first = stage(incoming, tmp_path / "stage")
    assert first["objects"] == len(shard_keys(incoming)) and len(first["copied"]) == len(list_shards(incoming)) >= 2
    damaged = tmp_path / "stage" / first["shards"][0]["file"]
    damaged.write_bytes(b"not a shard")
    again = stage(None, tmp_path / "stage")
    assert len(again["shards"]) == len(first["shards"]) - 1 and again["problems"]
    assert not damaged.exists()


def test_resident_boxes_and_set_weights(datasets, tmp_path):
    root, sets, duts, _, _ = datasets
    pack_shards(tmp_path, root / "shared", sets, extra=[duts], exclude=[], max_side=96)
    images = [im for p in list_shards(tmp_path) for im in read_shard(p)]
    data = ResidentData.build(images, "cpu", set_weights="DUTS-TR=0.5")
    flat = [(im, label) for im in images for label, _ in im.objects]
    assert data.num_objects == len(flat)
    for j in range(0, len(flat), 5):
        im, label = flat[j]
        ys, xs = np.nonzero(im.labels == label)
        assert data.obj_box[j].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    duts_share = float(data.obj_prob[[d == "DUTS-TR" for d in data.datasets]].sum())
    assert abs(duts_share - 0.5) < 1e-5
    draws = draw_index(data.obj_prob, 20000, torch.Generator().manual_seed(0))
    drawn = np.mean([data.datasets[i] == "DUTS-TR" for i in draws.tolist()])
    assert abs(drawn - 0.5) < 0.02


def test_cli_data_pack_shards_and_info(tmp_path, capsys):
    """``clickmask data pack-shards`` / ``shards-info``: the CLI names of this module's pack and info."""
    from clickmask.cli import main
    from tests.unit.synthetic import write_disc_dataset

    root = write_disc_dataset(tmp_path / "data", count=3, height=48, width=64, seed=3)
    out = tmp_path / "shards"
    assert main(["data", "pack-shards", "--out", str(out), "--data-root", str(root), "--sets", "Synthetic",
                 "--extra", "--exclude"]) == 0
    assert main(["data", "shards-info", str(out)]) == 0
    assert "3 objects" in capsys.readouterr().out
    assert main(["data", "shards-info", str(tmp_path / "none")]) == 2
    assert "pack them with 'clickmask data pack-shards" in capsys.readouterr().err

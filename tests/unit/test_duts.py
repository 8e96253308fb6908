"""``clickmask data duts``: DUTS-TR from a git repository into the dataset layout, and val-v2."""
from __future__ import annotations

import json
import pathlib
import subprocess

import cv2
import numpy as np
import pytest

from clickmask.cli import main
from clickmask.datasets import CONVERTED_ENV, DatasetError, list_objects, parse_key, read_mask
from clickmask.duts import MANIFEST, ConversionError, convert_duts
from clickmask.export.data import discover_objects
from clickmask.export.train import load_split
from clickmask.export.train_config import TrainConfig
from clickmask.export.val_list import LISTS, V2_PLAN, build_list

H, W = 40, 60


def _git(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


def _soft_mask() -> np.ndarray:
    """An object with an anti-aliased edge: 127 and below is background, 128 and above object."""
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 10:40] = 255
    mask[10:30, 40] = 128  # on the threshold: object
    mask[10:30, 41] = 127  # just under: background
    mask[9, 10:40] = 200
    return mask


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    tiny = np.zeros((H, W), np.uint8)
    tiny[0, :3] = 255
    return {
        "ILSVRC2012_test_00000004": (image, _soft_mask()),
        "sun_aaa": (image[:, ::-1], _soft_mask()[:, ::-1]),
        "bad_size": (image, _soft_mask()[:30]),  # mask 30 rows, image 40
        "empty": (image, np.full((H, W), 100, np.uint8)),  # grey but under 128 everywhere
        "tiny": (image, tiny),
        "whole": (image, np.full((H, W), 255, np.uint8)),
    }


def _make_repo(root: pathlib.Path, with_masks: bool = True) -> pathlib.Path:
    """A work tree in the DUTS-TR layout, committed; returns its git directory."""
    (root / "DUTS-TR-Image").mkdir(parents=True)
    (root / "DUTS-TR-Mask").mkdir()
    for stem, (image, mask) in _pairs().items():
        cv2.imwrite(str(root / "DUTS-TR-Image" / f"{stem}.jpg"), image)
        if with_masks:
            cv2.imwrite(str(root / "DUTS-TR-Mask" / f"{stem}.png"), mask)
    cv2.imwrite(str(root / "DUTS-TR-Image" / "orphan.jpg"), _pairs()["sun_aaa"][0])  # no mask
    (root / "readme.md").write_text("DUTS-TR\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "data")
    return root / ".git"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> pathlib.Path:
    return _make_repo(tmp_path_factory.mktemp("duts-src") / "DUTS-TR")


@pytest.fixture(scope="module")
def converted(repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "DUTS-TR"
    return out, convert_duts(repo, out, progress=False)


def test_conversion_thresholds_at_128_and_keeps_the_stems_and_jpeg_bytes(repo, converted):
    out, report = converted
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == ["ILSVRC2012_test_00000004", "sun_aaa"]
    mask = read_mask(out / "masks" / "ILSVRC2012_test_00000004.png")
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 255}
    np.testing.assert_array_equal(mask > 0, _soft_mask() >= 128)
    assert mask[20, 40] == 255 and mask[20, 41] == 0 and mask[9, 20] == 255
    committed = (repo.parent / "DUTS-TR-Image" / "sun_aaa.jpg").read_bytes()
    assert (out / "images" / "sun_aaa.jpg").read_bytes() == committed  # no second JPEG loss
    objects = list_objects(out.parent, "DUTS-TR", training=True)
    assert [o.key for o in objects] == ["DUTS-TR/ILSVRC2012_test_00000004", "DUTS-TR/sun_aaa"]
    assert report.converted == 2 and report.pairs == 6 and report.unpaired == 1


def test_bad_pairs_are_skipped_and_counted_by_reason(converted):
    out, report = converted
    assert {reason: stems for reason, stems in report.dropped.items() if stems} == {
        "size_mismatch": ["bad_size"], "empty": ["empty"], "too_small": ["tiny"], "nearly_whole": ["whole"]}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["dropped_counts"]["size_mismatch"] == 1 and manifest["kept"] == 2
    assert "no license" in manifest["terms"]
    assert not (out / "images" / "bad_size.jpg").exists() and not list(out.rglob(".*.part"))


def test_a_second_run_converts_nothing_and_a_deleted_pair_comes_back(repo, tmp_path):
    out = tmp_path / "DUTS-TR"
    convert_duts(repo, out, progress=False)
    again = convert_duts(repo, out, progress=False)
    assert (again.converted, again.already) == (0, 2)
    assert sum(len(s) for s in again.dropped.values()) == 4  # from the manifest, not decoded again
    (out / "masks" / "sun_aaa.png").unlink()
    resumed = convert_duts(repo, out, progress=False)
    assert (resumed.converted, resumed.already) == (1, 1)
    assert read_mask(out / "masks" / "sun_aaa.png").max() == 255


def test_an_output_inside_a_git_work_tree_is_refused(repo):
    with pytest.raises(ConversionError, match="inside the git work tree"):
        convert_duts(repo, repo.parent / "converted" / "DUTS-TR", progress=False)
    assert not (repo.parent / "converted").exists()


def test_a_folder_that_is_not_a_git_directory_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ConversionError, match="not a git directory"):
        convert_duts(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(ConversionError, match="fetch the repository first"):
        convert_duts(tmp_path / "missing", tmp_path / "out", progress=False)


def test_a_repository_without_the_mask_folder_is_refused(tmp_path):
    git_dir = _make_repo(tmp_path / "src", with_masks=False)
    with pytest.raises(ConversionError, match="no DUTS-TR-Mask/ files"):
        convert_duts(git_dir, tmp_path / "out", progress=False)


def test_cli_converts_and_reports_errors_with_exit_code_2(repo, tmp_path, capsys):
    assert main(["data", "duts", str(repo), "--out", str(tmp_path / "DUTS-TR"), "--no-progress"]) == 0
    assert "2 in" in capsys.readouterr().out
    assert main(["data", "duts", str(repo), "--out", str(repo.parent / "x"), "--no-progress"]) == 2
    assert "inside the git work tree" in capsys.readouterr().err


# ------------------------------------------------------------------------------ val-v2
def test_a_converted_set_is_found_by_name_from_another_data_root(converted, tmp_path, monkeypatch):
    out, _ = converted
    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "nothing-converted"))
    with pytest.raises(DatasetError, match="clickmask data duts"):
        parse_key("DUTS-TR/sun_aaa", tmp_path)
    monkeypatch.setenv(CONVERTED_ENV, str(out.parent))
    assert parse_key("DUTS-TR/sun_aaa", tmp_path).mask_path == str(out / "masks" / "sun_aaa.png")


def test_committed_val_v2_is_val_v1_unchanged_plus_100_duts_objects():
    def keys(path):
        return [k for k in path.read_text().splitlines() if k and not k.startswith("#")]

    v1, v2 = keys(LISTS["v1"]), keys(LISTS["v2"])
    assert v2[:len(v1)] == v1 and len(v1) == 205
    added = v2[len(v1):]
    assert len(added) == V2_PLAN["DUTS-TR"][1] == 100 and len(set(added)) == 100
    assert all(k.startswith("DUTS-TR/") and "#" not in k for k in added)


def test_training_never_sees_a_listed_duts_image(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    base = tmp_path / "converted" / "DUTS-TR"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    for i in range(40):
        cv2.imwrite(str(base / "images" / f"s{i:02d}.jpg"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        cv2.imwrite(str(base / "masks" / f"s{i:02d}.png"), (_soft_mask() >= 128).astype(np.uint8) * 255)
    monkeypatch.setenv(CONVERTED_ENV, str(base.parent))
    shared = tmp_path / "shared"  # a data root without DUTS-TR: it is found in the converted folder
    shared.mkdir()
    listed = build_list(shared, {"DUTS-TR": (0.1, 3)})
    assert len(listed) == 3 and listed == build_list(shared, {"DUTS-TR": (0.1, 3)})  # seeded, stable
    val_list = tmp_path / "val.txt"
    val_list.write_text("\n".join(["# a list", *(o.key for o in listed)]) + "\n")
    cfg = TrainConfig(data_root=str(shared), train_sets=("DUTS-TR",), val_fraction=0.0, val_list=str(val_list))
    train_objs, val_objs = load_split(cfg)
    assert [o.key for o in val_objs] == [o.key for o in listed]
    assert len(train_objs) == 37 and not {o.group for o in train_objs} & {o.group for o in listed}
    assert len(discover_objects(shared, "DUTS-TR")) == 40

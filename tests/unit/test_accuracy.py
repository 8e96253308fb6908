"""NoC bookkeeping and the eval summary's contract keys, on synthetic results (no model)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from clickmask.benchmarks.accuracy import SampleResult, list_samples, summarize
from clickmask.client.errors import InvalidInputError


def _result(ious):
    return SampleResult("s", tuple(ious), tuple(0.01 for _ in ious), (), max_clicks=len(ious))


def test_noc_is_the_first_click_reaching_the_threshold_else_max_clicks():
    r = _result([0.5, 0.86, 0.91, 0.96])
    assert (r.noc(0.85), r.noc(0.90), r.noc(0.95)) == (2, 3, 4)
    assert _result([0.5, 0.6, 0.7, 0.8]).noc(0.85) == 4


def test_summary_has_the_contract_keys_and_counts_failures():
    summary = summarize([_result([0.5, 0.95, 0.95]), _result([0.2, 0.3, 0.4])], "toy", 3)
    assert summary["noc90"] == pytest.approx((2 + 3) / 2)
    assert summary["failures90"] == 1
    assert summary["miou_curve"] == pytest.approx([0.35, 0.625, 0.675])
    assert summary["seconds_per_click"] == pytest.approx(0.01)
    assert {"dataset", "num_samples", "max_clicks", "noc85", "noc95"} <= set(summary)


def test_dataset_folder_without_masks_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InvalidInputError, match="images/<id>"):
        list_samples(tmp_path)


def test_berkeley_style_instance_ids_find_their_shared_image(tmp_path):
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "42.jpg"), np.zeros((4, 4, 3), np.uint8))
    for sid in ("42a", "42b"):
        cv2.imwrite(str(tmp_path / "masks" / f"{sid}.png"), np.zeros((4, 4), np.uint8))
    samples = list_samples(tmp_path)
    assert [pathlib.Path(s.image_path).name for s in samples] == ["42.jpg", "42.jpg"]


def test_accuracy_table_puts_our_row_beside_the_published_ones(tmp_path):
    import json

    from clickmask.benchmarks.accuracy_table import main

    paths = []
    for name, noc in (("GrabCut", 3.5), ("Berkeley", 5.25)):
        summary = summarize([_result([0.5, 0.95, 0.95])], name, 3)
        summary["noc90"] = noc
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(summary))
    assert main([str(p) for p in paths] + ["--out", str(tmp_path / "summary")]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "**3.50**" in text and "**5.25**" in text and "1.68" in text and "2.60" in text
    assert (tmp_path / "summary.png").stat().st_size > 1000


def test_accuracy_table_also_puts_a_second_setting_beside_ours(tmp_path, capsys):
    import json

    import pytest

    from clickmask.benchmarks.accuracy_table import main

    def write(tag, nocs):
        paths = []
        for name, noc in zip(("GrabCut", "Berkeley"), nocs):
            summary = summarize([_result([0.5, 0.95, 0.95])], name, 3)
            summary["noc90"] = noc
            paths.append(tmp_path / f"{tag}-{name}.json")
            paths[-1].write_text(json.dumps(summary))
        return [str(p) for p in paths]

    accurate, fast = write("a", (3.25, 6.0)), write("f", (3.75, 6.5))
    assert main([*accurate, "--model-name", "accurate", "--also", "fast", *fast, "--out", str(tmp_path / "s")]) == 0
    rows = {line.split(" | ")[0]: line for line in (tmp_path / "s.md").read_text().splitlines()}
    assert "**3.25**" in rows["| accurate"] and "**6.50**" in rows["| fast"]
    assert (tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(SystemExit):  # datasets in another order
        main([*accurate, "--also", "fast", fast[1], fast[0], "--out", str(tmp_path / "t")])
    assert "expected ['GrabCut', 'Berkeley']" in capsys.readouterr().err

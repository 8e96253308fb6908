"""The capacity curve: profiles matched to presets, a table and a plot."""
from __future__ import annotations

import json

import pytest

from clickmask.benchmarks import capacity_curve


def test_curve_matches_profiles_to_presets_and_plots(tmp_path, capsys):
    compare = tmp_path / "compare.json"
    compare.write_text(json.dumps({"capacity_users": {"session9": 8, "default": 48, "balanced": 32, "other": 4}}))
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps({"presets": {"old": {"noc90": 6.8, "noc90_whole_objects": 4.0},
                                               "fast": {"noc90": 5.9, "noc90_whole_objects": 3.6},
                                               "balanced": {"noc90": 5.8, "noc90_whole_objects": 3.5}}}))
    out = tmp_path / "curve.png"
    assert capacity_curve.main([str(compare), str(presets), "--match", "session9=old", "default=fast",
                                "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| default | 48 | 5.90 | 3.60 |" in text and "| session9 | 8 | 6.80 | 4.00 |" in text
    assert "other" not in text  # no preset: left out
    assert out.stat().st_size > 10_000


def test_curve_without_any_match_says_how_to_match(tmp_path):
    compare = tmp_path / "compare.json"
    compare.write_text(json.dumps({"capacity_users": {"default": 48}}))
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps({"presets": {"fast": {"noc90": 5.9, "noc90_whole_objects": 3.6}}}))
    with pytest.raises(SystemExit, match="--match PROFILE=PRESET"):
        capacity_curve.main([str(compare), str(presets), "--out", str(tmp_path / "x.png")])

"""The training-curve plot reads a run's metrics.jsonl (resumed runs repeat steps) and select scores."""
from __future__ import annotations

import json

import pytest

from clickmask.benchmarks.train_curves import main, read_metrics


def test_curves_of_a_resumed_run_and_select_scores(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": 10, "loss_ema": 0.5}, {"step": 20, "loss_ema": 0.4}, {"step": 20, "loss_ema": 0.45},
               {"step": 20, "val": {"noc90": 7.5}}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    loss, val = read_metrics(run)
    assert loss == [(10, 0.5), (20, 0.45)] and val == [(20, 7.5)]
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps([{"checkpoint": "a/v3.pt", "size": 320, "noc90": [3, 5]}]))
    assert main([str(run), "--select", str(scores), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 5000
    assert "step 20, loss EMA 0.4500; 1 validations" in capsys.readouterr().out


def test_a_folder_without_metrics_says_what_it_expects(tmp_path):
    with pytest.raises(FileNotFoundError, match="clickmask train --output"):
        read_metrics(tmp_path)

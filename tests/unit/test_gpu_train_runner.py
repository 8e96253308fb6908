"""The on-device runner's dry run, launched exactly as docs/gpu-train.md launches it on the device
(the package copied into its installed layout, ``python -P -m``), then resumed from its state."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def _layout(dest: pathlib.Path) -> pathlib.Path:
    """What the documented device command does: clickmask/ plus client, export, benchmarks under it."""
    package = dest / "clickmask"
    shutil.copytree(REPO / "clickmask", package, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("client", "export", "benchmarks"):
        shutil.copytree(REPO / folder, package / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))
    return dest


def _run(src: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-P", "-m", "clickmask.benchmarks.gpu_train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_dry_run_writes_the_results_and_resumes_from_them(tmp_path):
    src = _layout(tmp_path / "src")
    first = _run(src, "--dry-run", "--out", str(tmp_path / "one"), "--legacy-seconds", "2", "--max-steps", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    files = list((tmp_path / "one").iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files)
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["resident"]["steps"] == 3 and report["legacy"]["timed_steps"] >= 1
    assert set(report["resident"]["phases_ms_per_step"]) == {"sample", "clicks", "forward_backward", "optimizer"}
    assert "| click rounds (no grad) |" in (tmp_path / "one" / "report.md").read_text()
    assert "result_files_problem" not in report

    second = _run(src, "--dry-run", "--out", str(tmp_path / "two"), "--legacy-seconds", "0", "--max-steps", "2",
                  "--resume", str(tmp_path / "one"))
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = json.loads((tmp_path / "two" / "report.json").read_text())
    assert resumed["resumed"]["step"] == 3 and resumed["resident"]["last_step"] == 5
    meta = json.loads((tmp_path / "two" / "state-meta.json").read_text())
    assert meta["step"] == 5


def test_stage_without_shards_is_an_error_for_train(tmp_path):
    src = _layout(tmp_path / "src")
    result = _run(src, "--train", "--device", "cpu", "--stage-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "no shards staged" in result.stderr


def test_clickmask_bench_gpu_train_forwards_every_option(tmp_path, capsys):
    """``clickmask bench gpu-train ...`` is the runner: its options and its errors, unchanged."""
    from clickmask.cli import main

    assert main(["bench", "gpu-train", "--stage", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) != 0
    assert "no such folder" in capsys.readouterr().err

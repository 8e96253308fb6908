"""The pieces of the prepared GPU run and its packing that need no GPU and no subprocess."""

import subprocess
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from clickmask.benchmarks import gpu_pack, gpu_run
from clickmask.export.data import discover_objects, split_objects


def test_compare_outputs_counts_levels_and_threshold_flips():
    ref = np.array([[[0, 127, 128, 255]]], np.uint8)
    same = gpu_run.compare_outputs([ref], [ref.copy()])
    assert same["max_abs_diff_levels"] == 0 and same["flipped_pixels"] == 0 and same["inputs_with_flips"] == 0
    cand = np.array([[[3, 128, 128, 250]]], np.uint8)  # 127 -> 128 crosses 0.5 (object is > 127.5)
    diff = gpu_run.compare_outputs([ref, ref], [cand, ref])
    assert diff["max_abs_diff_levels"] == 5 and diff["flipped_pixels"] == 1 and diff["pixels"] == 8
    assert diff["flip_fraction"] == pytest.approx(1 / 8) and diff["inputs_with_flips"] == 1
    assert diff["mean_abs_diff_levels"] == pytest.approx((3 + 1 + 0 + 5) / 8)


def test_percentile_matches_numpy_and_best_under_target_respects_p95():
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 50, 95, 100):
        assert gpu_run.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    rows = [{"network": "n", "precision": "fp16", "batch": 1, "p95_ms": 2.0, "clicks_per_s": 600.0},
            {"network": "n", "precision": "fp16", "batch": 16, "p95_ms": 20.0, "clicks_per_s": 1000.0},
            {"network": "n", "precision": "fp16", "batch": 64, "p95_ms": 45.0, "clicks_per_s": 1800.0},
            {"network": "n", "precision": "fp32", "batch": 1, "p95_ms": 31.0, "clicks_per_s": 40.0}]
    best = gpu_run.best_under_target(rows, 30.0)
    assert best[("n", "fp16")]["batch"] == 16 and best[("n", "fp32")] is None


def test_interleave_takes_every_set_in_turn():
    objs = [SimpleNamespace(dataset=d, key=f"{d}{i}") for d, i in
            [("A", 0), ("A", 1), ("A", 2), ("B", 0), ("C", 0), ("C", 1)]]
    assert [o.key for o in gpu_run.interleave(objs)] == ["A0", "B0", "C0", "A1", "C1", "A2"]


def test_markdown_lists_every_step_and_the_error_of_a_failed_one():
    results = {"dry_run": False, "started": "now", "command": "x", "steps": {
        "environment": {"status": "ok", "seconds": 3.0, "result": {"python": "3.12.3", "gpu": "H200"}},
        "numerics": {"status": "failed", "seconds": 1.0, "error": "RuntimeError: CUDA is not available here",
                     "result": {}},
        "speed": {"status": "ok", "seconds": 9.0, "result": {
            "size": 320, "device": "cuda", "timer": "cuda events", "target_p95_ms": 30.0,
            "rows": [{"network": "n", "precision": "fp16", "batch": 4, "status": "ok", "median_ms": 1.5,
                      "p95_ms": 1.7, "clicks_per_s": 2600.0},
                     {"network": "n", "precision": "fp32", "batch": 64, "status": "failed", "reason": "OOM"}],
            "clicks_per_s_at_target": [{"network": "n", "precision": "fp16", "batch": 4, "clicks_per_s": 2600.0}]}}}}
    text = gpu_run.markdown(results)
    assert "| numerics | failed | 1.0 | RuntimeError: CUDA is not available here |" in text
    assert "| train | not run | - | |" in text
    assert "| n | fp16 | 4 | 1.50 | 1.70 | 2600 |" in text and "OOM" in text and "H200" in text


def _write_set(root, name, count, seed):
    rng = np.random.default_rng(seed)
    (root / name / "images").mkdir(parents=True)
    (root / name / "masks").mkdir(parents=True)
    for i in range(count):
        image = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)  # noise: every file about the same size
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 12:40] = 255
        cv2.imwrite(str(root / name / "images" / f"{name.lower()}{i:02d}.png"), image)
        cv2.imwrite(str(root / name / "masks" / f"{name.lower()}{i:02d}.png"), mask)


def test_training_subset_fits_the_budget_shares_it_and_never_takes_held_out_images(tmp_path):
    _write_set(tmp_path, "SetA", 30, 0)
    _write_set(tmp_path, "SetB", 30, 1)
    val_groups = {"SetA/seta03", "SetB/setb07"}
    per_image = sum(p.stat().st_size for p in (tmp_path / "SetA").rglob("seta00.png"))
    budget = int(per_image * 12.5)
    chosen = gpu_pack.plan_training_subset(tmp_path, ["SetA", "SetB"], val_groups, budget)
    total = sum(size for name in chosen for _, _, size in chosen[name])
    assert total <= budget and total > budget - 2 * per_image
    assert abs(len(chosen["SetA"]) - len(chosen["SetB"])) <= 1  # water-filled by bytes
    for name in ("SetA", "SetB"):
        _, held_out = split_objects(discover_objects(tmp_path, name), 0.05, 0)
        taken = {group for group, _, _ in chosen[name]}
        assert not taken & {o.group for o in held_out} and not taken & val_groups


def test_pack_refuses_evaluation_sets_and_counts_only_what_travels(tmp_path):
    with pytest.raises(gpu_pack.PackError, match="evaluation-only"):
        gpu_pack.pack(tmp_path / "b", train_sets=("COCO_MVal", "GrabCut"))
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/ignored/\n")
    (repo / "tracked.txt").write_bytes(b"x" * 1000)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.txt", ".gitignore"], check=True)
    (repo / "untracked.txt").write_bytes(b"y" * 500)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"z" * 100000)
    assert gpu_pack.travelling_tree_bytes(repo) == 1000 + 500 + len("/ignored/\n")


def test_the_default_steps_fit_four_minutes_and_the_burst_runs_only_when_named():
    assert gpu_run.DEFAULT_STEPS == ("environment", "numerics", "speed", "serving")
    assert gpu_run.FULL_PLAN.total_seconds() <= 240
    assert gpu_run.FULL_PLAN.total_seconds(gpu_run.STEPS) == gpu_run.FULL_PLAN.total_seconds() + 115 + 300
    assert "resident" in gpu_run.STEPS and "resident" not in gpu_run.DEFAULT_STEPS  # named, like the burst
    assert max(gpu_run.FULL_PLAN.serving_buckets) == 256 and 1 in gpu_run._ALL_BATCHES
    for plan in (gpu_run.FULL_PLAN, gpu_run.DRY_PLAN):
        for _, variant, _ in plan.speed_rows:
            gpu_run.parse_variant(variant)  # every planned variant is one the speed step can build
        assert all(load[2] <= max(plan.serving_buckets) for load in plan.serving_loads)


@pytest.mark.parametrize(("variant", "expected"), [
    ("fp16", dict(precision="fp16", autocast=False, channels_last=False, compile=False, cuda_graphs=False)),
    ("fp16-cl-compiled-graph", dict(precision="fp16", autocast=False, channels_last=True, compile=True,
                                    cuda_graphs=True)),
    ("fp16-autocast", dict(precision="fp16", autocast=True, channels_last=False, compile=False, cuda_graphs=False)),
])
def test_speed_variants_name_their_parts(variant, expected):
    assert gpu_run.parse_variant(variant) == expected


@pytest.mark.parametrize("variant", ["int8", "fp16-fast", "fp32-autocast", "fp16-cl-cl", "fp16-autocast-graph"])
def test_unknown_speed_variants_are_refused(variant):
    with pytest.raises(ValueError, match="unknown speed variant"):
        gpu_run.parse_variant(variant)


def test_network_ratio_pairs_rows_of_the_same_variant_and_batch():
    rows = [{"network": "lite", "weights": "checkpoint", "precision": "fp16-cl", "batch": 64, "clicks_per_s": 9000.0},
            {"network": "ritm-hrnet18s", "weights": "random", "precision": "fp16-cl", "batch": 64, "clicks_per_s": 3000.0},
            {"network": "lite", "weights": "checkpoint", "precision": "fp16-cl", "batch": 128, "clicks_per_s": 9.0}]
    assert gpu_run.network_ratio(rows) == [{"network": "lite", "versus": "ritm-hrnet18s", "precision": "fp16-cl",
                                            "batch": 64, "speedup": 3.0}]


def test_autocast_cost_reports_first_call_steady_state_and_threads():
    import torch

    class Slow:
        def __init__(self):
            self.calls = 0

        def infer(self, x):
            self.calls += 1
            time.sleep(0.05 if self.calls == 1 else 0.001)  # a first call that pays for set-up

    before = torch.backends.cudnn.benchmark
    report = gpu_run.autocast_cost({"a": (Slow(), True), "b": (Slow(), False)}, [{}], calls=3, workers=2)
    assert torch.backends.cudnn.benchmark == before
    assert report["variants"]["b"]["cudnn_benchmark"] is False
    for v in report["variants"].values():
        assert v["first_ms"] >= 50 > 10 > v["steady_median_ms"] and v["threaded_p95_ms"] >= v["threaded_median_ms"]


def test_markdown_reports_the_served_path_against_its_target():
    load = {"producers": 96, "instances": 2, "max_batch": 128, "queue_delay_us": 1000, "status": "ok",
            "inferences_per_s": 11000.0, "clicks_per_s": 4741.0, "request_ms": {"p50": 9.0, "p95": 21.5},
            "click_ms": {"p95": 40.0}, "mean_batch": 60.2, "meets_target": True}
    skipped = {"producers": 1, "instances": 1, "max_batch": 128, "queue_delay_us": 1000, "status": "skipped",
               "reason": "needs 10 s; 3 s of the box left"}
    results = {"steps": {"serving": {"status": "ok", "seconds": 80.0, "result": {
        "options": {"precision": "fp16", "cuda_graphs": True, "buckets": [2, 4]}, "startup_s": 41.0,
        "parity_vs_fp32": {"inputs": 8, "max_abs_diff_levels": 3, "flip_fraction": 1e-4},
        "refine_share": 0.16, "loads": [load, skipped]}}}}
    text = gpu_run.markdown(results)
    assert "## serving" in text and "start-up (compile, cuDNN search, capture) 41.0 s" in text
    assert "| 96 | 2 | 128 | 1000 | 11000 | 4741 | 9.00 | 21.50 | 40.00 | 60.2 | met |" in text
    assert "| 1 | 1 | 128 | 1000 | skipped |" in text and "needs 10 s" in text

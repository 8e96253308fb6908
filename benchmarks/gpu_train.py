"""The on-device runner of the resident training path (:mod:`clickmask.export.gpu_train`).

One device call each (``docs/gpu-train.md`` has the sequence and the byte budgets)::

    --stage DIR      copy the shards (``shard-*.npz``) and split state files (``state-*``) that
                     arrived in DIR into the persistent stage folder; report what is staged
    --train          load every staged shard into GPU memory, profile the DataLoader path for a
                     few seconds (``--legacy-seconds``), train the resident path for the rest of
                     ``--seconds``, and write under --out: the split state, a float16
                     checkpoint, ``report.json`` and ``report.md`` (7 files, each < 16 MiB)
    --resume DIR     (with --train) continue from split state files instead of --init-from
    --dry-run        the same on the CPU: synthetic datasets packed into a shard, staged, and
                     trained for a few steps at tiny sizes

Run from the repository root with the package in its installed layout, e.g.::

    S=tmp/cm-src; rm -rf $S; mkdir -p $S/clickmask; cp -r clickmask/. $S/clickmask/
    cp -r client export benchmarks $S/clickmask/
    PYTHONPATH=$S python3 -P -m clickmask.benchmarks.gpu_train --train --out "$OUT"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any

DEFAULT_STAGE = pathlib.Path("tmp/clickmask-stage")  # ignored by git: kept between warm device calls
DEFAULT_INIT = pathlib.Path("export/checkpoints/clickmask-lite0.pt")
RESULT_LIMIT_BYTES = 16 * 2**20
MAX_RESULT_FILES = 8
REPORT_JSON, REPORT_MD, CHECKPOINT_FP16, STAGE_JSON = "report.json", "report.md", "checkpoint-fp16.pt", "stage.json"
SAVE_RESERVE_S = 25.0
PHASE_NAMES = {"batch_wait": "batch wait (DataLoader)", "h2d": "host to device", "sample": "sample on GPU "
               "(draw, augment, initial clicks)", "clicks": "click rounds (no grad)",
               "forward_backward": "forward + backward", "optimizer": "optimiser"}


# ------------------------------------------------------------------------------ staging
def stage(incoming: pathlib.Path | None, stage_dir: pathlib.Path) -> dict[str, Any]:
    """Copy shards and state files from ``incoming`` into ``stage_dir`` (a shard already staged
    under the same name is replaced); check every staged shard; return what is there."""
    from clickmask.export.gpu_train import STATE_META
    from clickmask.export.shards import (
        SHARD_GLOB,
        ShardError,
        list_shards,
        read_shard_meta,
    )

    started = time.perf_counter()
    stage_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    if incoming is not None:
        if not incoming.is_dir():
            raise FileNotFoundError(f"--stage {incoming}: no such folder (carry it with the call)")
        for path in sorted(incoming.glob(SHARD_GLOB)):
            shutil.copyfile(path, stage_dir / (path.name + ".part"))
            (stage_dir / (path.name + ".part")).replace(stage_dir / path.name)
            copied.append(path.name)
        states = sorted(incoming.glob("state-*"))
        if states:
            if not (incoming / STATE_META).is_file():
                raise FileNotFoundError(f"{incoming} holds state parts but no {STATE_META}")
            target = stage_dir / "state"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for path in states:
                shutil.copyfile(path, target / path.name)
                copied.append(f"state/{path.name}")
    shards, problems = [], []
    for path in list_shards(stage_dir):
        try:
            meta = read_shard_meta(path)
        except (ShardError, ValueError, OSError) as exc:
            problems.append(f"{path.name}: {exc}")
            path.unlink()
            continue
        shards.append({"file": path.name, "bytes": path.stat().st_size, "images": len(meta["images"]),
                       "objects": sum(len(im["objects"]) for im in meta["images"])})
    usage = shutil.disk_usage(stage_dir)
    return {"stage_dir": str(stage_dir), "copied": copied, "shards": shards, "problems": problems,
            "images": sum(s["images"] for s in shards), "objects": sum(s["objects"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards), "state": (stage_dir / "state" / STATE_META).is_file(),
            "disk_free_gib": round(usage.free / 2**30, 1), "seconds": round(time.perf_counter() - started, 2)}


# ------------------------------------------------------------------------------ the old path, timed
def materialise(shard_paths: list[pathlib.Path], folder: pathlib.Path, max_images: int) -> list:
    """The shards' images written back as files (the JPEG and PNG bytes as they are) and their
    objects as ObjectRefs, so the DataLoader path of ``clickmask train`` can read them."""
    import numpy as np
    from clickmask.export.shards import LABEL_IGNORE

    from clickmask.datasets import ObjectRef

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    objects = []
    n = 0
    for path in shard_paths:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            jpeg, jo, png, po = data["jpeg"], data["jpeg_offsets"], data["png"], data["png_offsets"]
        for i, entry in enumerate(meta["images"]):
            if n >= max_images:
                return objects
            image_path, mask_path = folder / "images" / f"{n}.jpg", folder / "masks" / f"{n}.png"
            image_path.write_bytes(jpeg[jo[i]:jo[i + 1]].tobytes())
            mask_path.write_bytes(png[po[i]:po[i + 1]].tobytes())
            objects += [ObjectRef(entry["dataset"], str(n), str(image_path), str(mask_path), int(label), LABEL_IGNORE)
                        for label, _ in entry["objects"]]
            n += 1
    return objects


def legacy_profile(objects: list, cfg, device, seconds: float, net) -> dict[str, Any]:
    """Phase timing of the ``clickmask train`` step as it runs today (DataLoader workers draw the
    batches; click rounds one sample at a time with a CPU clicker), synchronising after each
    phase. ``net`` is trained for the steps (a copy is not worth the memory here)."""
    import torch
    from clickmask.export.losses import RITMLoss
    from clickmask.export.train import (
        _images,
        _labels,
        _param_groups,
        batch_stream,
        iterative_clicks,
    )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    criterion = RITMLoss(cfg.nfl_alpha, cfg.nfl_gamma, cfg.aux_weight)
    optimizer = torch.optim.Adam(_param_groups(net, cfg), lr=cfg.lr * 0.1)
    totals = {k: 0.0 for k in ("batch_wait", "h2d", "clicks", "forward_backward", "optimizer")}
    net.train()
    batches = batch_stream(objects, cfg, None, 0)
    steps, timed = 0, 0
    started = time.perf_counter()
    first_batch_s = None
    try:
        while steps < 2 or time.perf_counter() - started < seconds:  # one timed step at least
            t = [time.perf_counter()]
            rng, batch = next(batches)
            t.append(time.perf_counter())
            image, labels = _images(batch.samples).to(device), _labels(batch.samples).to(device)
            sync()
            t.append(time.perf_counter())
            rounds = int(rng.integers(0, cfg.max_extra_rounds + 1))
            maps, prev = iterative_clicks(net, image, batch, rounds, device, cfg.prev_mask_drop, rng)
            sync()
            t.append(time.perf_counter())
            losses = criterion(net(image, maps, prev), labels)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            sync()
            t.append(time.perf_counter())
            optimizer.step()
            sync()
            t.append(time.perf_counter())
            steps += 1
            if steps == 1:
                first_batch_s = t[1] - started
                continue  # the first step waits for the workers to start
            timed += 1
            for name, a, b in zip(totals, t, t[1:]):
                totals[name] += b - a
    finally:
        batches.close()
    elapsed = time.perf_counter() - started
    per_step = {k: round(1000 * v / timed, 2) for k, v in totals.items()} if timed else {}
    step_s = sum(totals.values()) / timed if timed else None
    return {"steps": steps, "timed_steps": timed, "batch_size": cfg.batch_size, "crop_size": cfg.crop_size,
            "workers": cfg.workers, "seconds": round(elapsed, 2), "first_batch_s": round(first_batch_s or 0, 2),
            "phases_ms_per_step": per_step,
            "samples_per_s_timed": round(cfg.batch_size / step_s, 1) if step_s else None,
            "samples_per_s_wall": round(steps * cfg.batch_size / elapsed, 1) if elapsed else None,
            "objects": len(objects), "note": "synchronised after every phase (adds a little time)"}


def legacy_child(plan: TrainPlan, stage_dir: pathlib.Path, init_from: pathlib.Path, out_json: pathlib.Path) -> None:
    """The old path's profile in its own process: its DataLoader forks from an interpreter that
    has not run OpenCV threads (forking after the shard decoding's threads can deadlock a worker)."""
    from clickmask.export.checkpoint import load_checkpoint
    from clickmask.export.shards import list_shards, read_shard_meta
    from clickmask.export.train import resolve_device

    device = resolve_device(plan.device)
    shard_paths = list_shards(stage_dir)
    staged_sets = {im["dataset"] for p in shard_paths for im in read_shard_meta(p)["images"]}
    net, init_config = load_checkpoint(init_from, map_location=device)
    workers = plan.legacy_workers if plan.legacy_workers >= 0 else max(0, min(12, (os.cpu_count() or 4) - 4))
    cfg = _train_config(plan, init_config, staged_sets).replace(batch_size=plan.legacy_batch_size, workers=workers,
                                                                iters=10**9)
    with tempfile.TemporaryDirectory(prefix="legacy-") as tmp:
        objects = materialise(shard_paths, pathlib.Path(tmp), plan.legacy_max_images)
        result = legacy_profile(objects, cfg, device, plan.legacy_seconds, net)
    out_json.write_text(json.dumps(result) + "\n")


def run_legacy(plan: TrainPlan, stage_dir: pathlib.Path, init_from: pathlib.Path) -> dict[str, Any]:
    """:func:`legacy_child` in a fresh interpreter, killed if it overruns its time by a minute."""
    with tempfile.TemporaryDirectory(prefix="legacy-result-") as tmp:
        out_json = pathlib.Path(tmp) / "legacy.json"
        flags = [f"--{f.name.replace('_', '-')}={getattr(plan, f.name)}" for f in dataclasses.fields(TrainPlan)
                 if f.name.startswith("legacy_") or f.name in ("device", "batch_size", "crop_size", "input_size",
                                                                  "set_weights", "seed")]
        command = [sys.executable, *(["-P"] if sys.flags.safe_path else []), "-m", "clickmask.benchmarks.gpu_train",
                   "--legacy-child", str(out_json), "--stage-dir", str(stage_dir), "--init-from", str(init_from), *flags]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=plan.legacy_seconds + 60,
                                  check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"the old path's profile overran {plan.legacy_seconds + 60:.0f} s and was stopped"}
        if done.returncode != 0 or not out_json.is_file():
            return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
        return json.loads(out_json.read_text())


# ------------------------------------------------------------------------------ training call
@dataclasses.dataclass
class TrainPlan:
    device: str = "cuda"
    seconds: float = 420.0  # the whole call, loading and saving included
    batch_size: int = 64
    crop_size: int = 320
    input_size: int = 320
    lr: float = 3e-4
    warmup_iters: int = 100
    iters: int = 6000  # the cosine schedule spans runs: resumed runs continue it
    set_weights: str = "DUTS-TR=0.3"
    seed: int = 0
    compile: bool = True
    compile_edt: bool = True
    amp: str = "bf16"
    legacy_seconds: float = 45.0
    legacy_batch_size: int = 16
    legacy_workers: int = -1  # -1: cpu count - 4, at most 12 (the last GPU run's 12)
    legacy_max_images: int = 3000
    max_steps: int | None = None
    warmup_steps: int = 3  # timed apart (compilation, autotuning)
    log_every: int = 50
    moments: str = "fp32"


DRY_RUN = {"device": "cpu", "seconds": 90.0, "batch_size": 3, "crop_size": 64, "input_size": 64, "warmup_iters": 2,
           "iters": 40, "compile": False, "compile_edt": False, "amp": "off", "legacy_seconds": 6.0,
           "legacy_batch_size": 2, "legacy_workers": 0, "legacy_max_images": 40, "max_steps": 4, "warmup_steps": 1,
           "log_every": 2}


def _environment(device) -> dict[str, Any]:
    import numpy as np
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "cpus": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _train_config(plan: TrainPlan, init_config: dict[str, Any], staged_sets: set[str]):
    """The recipe recorded in the initial checkpoint, with the plan's sizes and schedule."""
    from clickmask.export.train_config import TrainConfig

    recipe_keys = ("scale_min", "scale_max", "color_jitter", "flip", "max_pos_clicks", "max_neg_clicks",
                   "max_extra_rounds", "prev_mask_drop", "nfl_alpha", "nfl_gamma", "aux_weight", "backbone_lr_mult",
                   "part_sets")
    recorded = dict(init_config.get("train") or {})
    overrides = {k: recorded[k] for k in recipe_keys if k in recorded}
    named = [p for p in plan.set_weights.split(",") if p.strip() and p.partition("=")[0].strip() in staged_sets]
    part_sets = [s for s in str(overrides.get("part_sets", "")).split(",") if s.strip() in staged_sets]
    overrides.update(part_sets=",".join(part_sets), set_weights=",".join(named), batch_size=plan.batch_size,
                     crop_size=plan.crop_size, input_size=plan.input_size, lr=plan.lr, warmup_iters=plan.warmup_iters,
                     iters=plan.iters, seed=plan.seed, network=init_config.get("network", "efficientnet-lite0"),
                     train_sets=tuple(sorted(staged_sets)), device=plan.device, val_every=0)
    return TrainConfig().replace(**overrides)


def _utilisation_sampler(device):
    if device.type != "cuda":
        return None
    from clickmask.benchmarks.gpu_run import UtilisationSampler

    sampler = UtilisationSampler()
    sampler.start()
    return sampler


def _sync_check(trainer) -> dict[str, Any]:
    """One step under ``torch.cuda.set_sync_debug_mode('warn')``: the host syncs it makes."""
    import torch

    if trainer.device.type != "cuda":
        return {"checked": False, "reason": "not on CUDA"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    messages = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"checked": True, "syncs": len(messages), "first": messages[:5]}


def run_train(plan: TrainPlan, stage_dir: pathlib.Path, out: pathlib.Path, init_from: pathlib.Path,
              resume: pathlib.Path | None, log=print) -> dict[str, Any]:
    """The training call: load the staged shards, profile the old path, train, save, report."""
    import torch
    from clickmask.export.checkpoint import load_checkpoint, save_checkpoint
    from clickmask.export.gpu_train import (
        GpuOptions,
        ResidentData,
        ResidentTrainer,
        load_split_state,
        save_split_state,
        train_for,
    )
    from clickmask.export.shards import list_shards, read_shard
    from clickmask.export.train import part_set_names, resolve_device

    started = time.perf_counter()
    deadline = started + plan.seconds
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(plan.device)
    report: dict[str, Any] = {"plan": dataclasses.asdict(plan), "environment": _environment(device), "timeline": {}}

    def mark(name: str) -> None:
        report["timeline"][name] = round(time.perf_counter() - started, 2)

    shard_paths = list_shards(stage_dir)
    if not shard_paths:
        raise FileNotFoundError(f"no shards staged in {stage_dir}: run --stage first")
    if plan.legacy_seconds > 0:  # first, while this process has started no OpenCV threads
        report["legacy"] = run_legacy(plan, stage_dir, init_from)
        mark("legacy_profiled")
        log(f"old path: {report['legacy'].get('phases_ms_per_step', report['legacy'])}")
    images = [im for path in shard_paths for im in read_shard(path, threads=max(2, os.cpu_count() or 2))]
    mark("decoded")
    _, init_config = load_checkpoint(init_from, map_location="cpu")
    staged_sets = {im.dataset for im in images}
    cfg = _train_config(plan, init_config, staged_sets)
    data = ResidentData.build(images, device, cfg.set_weights, part_set_names(cfg))
    del images
    report["data"] = {"shards": [p.name for p in shard_paths], **data.summary()}
    mark("resident")
    log(f"resident: {data.summary()['objects']} objects, {data.nbytes() / 2**30:.2f} GiB on {device}")

    def make_trainer(options: GpuOptions) -> ResidentTrainer:
        net, _ = load_checkpoint(init_from, map_location=device)  # a resume loads over it
        trainer = ResidentTrainer(net, cfg, options, data, device)
        if resume is not None:
            trainer.step = int(load_split_state(resume, trainer.net, trainer.optimizer)["step"])
        return trainer

    options = GpuOptions(amp=plan.amp, compile=plan.compile and device.type == "cuda",
                         compile_edt=plan.compile_edt and device.type == "cuda", log_every=plan.log_every)
    trainer = make_trainer(options)
    if resume is not None:
        report["resumed"] = {"from": str(resume), "step": trainer.step}
        log(f"resumed at step {trainer.step}")
    if options.compile or options.compile_edt:  # a step that fails to compile must not cost the run
        try:
            trainer.train_step()  # a real step (compiles train and eval graphs when it has rounds)
            trainer.click_rounds(trainer.sample(trainer.step) | {"rounds": 1})
        except Exception as exc:  # noqa: BLE001 - any compiler failure: say it, train eager
            report["compile_fallback"] = f"{type(exc).__name__}: {str(exc)[:800]}"
            log(f"compilation failed, training eager: {report['compile_fallback']}")
            options = dataclasses.replace(options, compile=False, compile_edt=False)
            trainer = make_trainer(options)
        mark("compile_probe")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = _utilisation_sampler(device)
    try:
        budget = max(1.0, deadline - time.perf_counter() - SAVE_RESERVE_S)
        report["resident"] = train_for(trainer, budget, plan.max_steps, plan.warmup_steps, log=log)
        mark("trained")
        since = report["timeline"]["trained"] - report["timeline"]["resident"]
        report["resident"]["samples_per_s_from_resident"] = round(
            (trainer.step - report.get("resumed", {}).get("step", 0)) * cfg.batch_size / since, 1)
        report["sync_check"] = _sync_check(trainer)
    finally:
        if sampler is not None:
            sampler.stop.set()
    if sampler is not None:
        report["resident"]["gpu_utilisation_mean"] = (round(sum(sampler.samples) / len(sampler.samples), 1)
                                                      if sampler.samples else None)
        report["resident"]["gpu_utilisation_samples"] = len(sampler.samples)
        report["resident"]["gpu_utilisation_error"] = sampler.error
        report["resident"]["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)

    model_config = {"network": cfg.network, "input_size": cfg.input_size, "network_kwargs": {}, "train": cfg.to_dict(),
                    "step": trainer.step, "gpu_options": options.to_dict()}
    moments = torch.bfloat16 if plan.moments == "bf16" else torch.float32
    files = save_split_state(out, trainer.net, trainer.optimizer, trainer.step, model_config, moments_dtype=moments)
    files.append(save_checkpoint(out / CHECKPOINT_FP16, getattr(trainer.net, "_orig_mod", trainer.net),
                                 model_config, half=True))
    mark("saved")
    report["files"] = {p.name: p.stat().st_size for p in files}
    report["total_seconds"] = round(time.perf_counter() - started, 2)
    check_results(out, report)
    write_report(out, report)
    return report


def check_results(out: pathlib.Path, report: dict[str, Any]) -> None:
    files = [p for p in out.iterdir() if p.is_file()]
    too_big = [p.name for p in files if p.stat().st_size > RESULT_LIMIT_BYTES]
    if too_big or len(files) + 2 > MAX_RESULT_FILES:  # + report.json, report.md
        report["result_files_problem"] = {"too_big": too_big, "files": len(files) + 2}


# ------------------------------------------------------------------------------ report
def _table(rows: list[tuple[str, Any, Any]]) -> list[str]:
    lines = ["| phase | old path (DataLoader), ms/step | resident path, ms/step |", "|---|---|---|"]
    lines += [f"| {PHASE_NAMES.get(name, name)} | {a if a is not None else '-'} | {b if b is not None else '-'} |"
              for name, a, b in rows]
    return lines


def markdown(report: dict[str, Any]) -> str:
    legacy, resident = report.get("legacy") or {}, report.get("resident") or {}
    lp, rp = legacy.get("phases_ms_per_step", {}), resident.get("phases_ms_per_step", {})
    names = [n for n in PHASE_NAMES if n in lp or n in rp]
    rows = [(n, lp.get(n), rp.get(n)) for n in names]
    rows.append(("total", round(sum(lp.values()), 2) if lp else None, round(sum(rp.values()), 2) if rp else None))
    env, data = report.get("environment", {}), report.get("data", {})
    sync = report.get("sync_check", {}).get("syncs", "n/a")
    summary = (f"torch {env.get('torch')}, Python {env.get('python')}, {env.get('cpus')} CPUs. "
               f"Resident: {data.get('objects')} objects in {data.get('images')} images "
               f"({(data.get('bytes') or 0) / 2**30:.2f} GiB), by set {data.get('objects_by_set')}.")
    speeds = (f"Old path: batch {legacy.get('batch_size')}, {legacy.get('workers')} workers, "
              f"{legacy.get('timed_steps')} timed steps, {legacy.get('samples_per_s_timed')} samples/s"
              f"{' (' + legacy['error'] + ')' if 'error' in legacy else ''}. Resident path: batch "
              f"{resident.get('batch_size')}, {resident.get('steps')} steps in {resident.get('seconds')} s "
              f"(warm-up {resident.get('warmup_seconds')} s): **{resident.get('samples_per_s_wall')} samples/s by the "
              f"wall clock** ({resident.get('samples_per_s_from_resident')} from the data being resident, probe "
              f"step included), {resident.get('samples_per_s_steady')} after warm-up; GPU utilisation "
              f"{resident.get('gpu_utilisation_mean')}%, peak memory {resident.get('peak_memory_gib')} GiB; "
              f"host syncs in a step: {sync}.")
    tail = (f"Timeline (s from the start): {report.get('timeline')}. Steps {resident.get('first_step')} to "
            f"{resident.get('last_step')}; loss {[r['loss'] for r in resident.get('loss_curve', [])][-5:]}.")
    lines = [f"# Resident training run ({env.get('gpu', env.get('device'))})", "", summary, "", speeds, "",
             *_table(rows), "", tail]
    return "\n".join(lines) + "\n"


def write_report(out: pathlib.Path, report: dict[str, Any]) -> None:
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / REPORT_MD).write_text(markdown(report))


# ------------------------------------------------------------------------------ dry run
def write_synthetic_datasets(root: pathlib.Path, images: int = 12, side: int = 120, seed: int = 0) -> list[str]:
    """Small dataset folders in the shared conventions: ``COCO_MVal`` (binary, 128 ignored) and
    ``CCP`` (instance ids), ellipses on smoothed noise. Returns the set names."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    for name in ("COCO_MVal", "CCP"):
        (root / name / "images").mkdir(parents=True, exist_ok=True)
        (root / name / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(images):
            h, w = int(side * rng.uniform(0.6, 1.0)), side
            image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
            mask = np.zeros((h, w), np.uint8)
            for k in range(1 if name == "COCO_MVal" else 3):
                value = 255 if name == "COCO_MVal" else k + 1
                cv2.ellipse(mask, (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))),
                            (int(rng.integers(8, w // 4)), int(rng.integers(8, h // 4))), 0, 0, 360, value, -1)
            if name == "COCO_MVal":
                mask[cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0] = 128
            sample_id = f"{name.lower()}{i}_{i:06d}"
            cv2.imwrite(str(root / name / "images" / f"{sample_id}.jpg"), image)
            cv2.imwrite(str(root / name / "masks" / f"{sample_id}.png"), mask)
    return ["COCO_MVal", "CCP"]


def dry_run(out: pathlib.Path, stage_dir: pathlib.Path | None, resume: pathlib.Path | None, log=print,
            init_from: pathlib.Path = DEFAULT_INIT, **plan_changes: Any) -> dict[str, Any]:
    """Pack synthetic datasets, stage the shard, train on the CPU at tiny sizes (a --resume
    continues from split state files)."""
    from clickmask.export.shards import pack_shards

    with tempfile.TemporaryDirectory(prefix="gpu-train-dry-") as tmp:
        tmp_path = pathlib.Path(tmp)
        sets = write_synthetic_datasets(tmp_path / "datasets")
        packed = pack_shards(tmp_path / "incoming", tmp_path / "datasets", sets, extra=[], exclude=[],
                             max_side=96, max_bytes=2**20)
        staged = stage(tmp_path / "incoming", stage_dir or tmp_path / "stage")
        plan = TrainPlan(**{**DRY_RUN, **plan_changes})
        report = run_train(plan, pathlib.Path(staged["stage_dir"]), out, init_from, resume, log=log)
    report["dry_run"] = {"packed": packed.to_dict(), "staged": staged}
    write_report(out, report)
    return report


# ------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.gpu_train", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stage", nargs="?", const="", metavar="DIR",
                      help="copy shard-*.npz and state-* from DIR into the stage folder (no DIR: report only)")
    mode.add_argument("--train", action="store_true", help="train on every staged shard")
    mode.add_argument("--dry-run", action="store_true", help="the whole path on the CPU with synthetic data")
    mode.add_argument("--legacy-child", type=pathlib.Path, metavar="JSON", help=argparse.SUPPRESS)
    p.add_argument("--stage-dir", type=pathlib.Path, default=DEFAULT_STAGE, help="persistent stage folder "
                   "(default: %(default)s, ignored by git, kept between warm calls)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path(os.environ.get("OUT", "out")) / "gpu-train",
                   help="results folder (default: $OUT/gpu-train)")
    p.add_argument("--resume", type=pathlib.Path, default=None, help="split state folder to continue from "
                   "(e.g. tmp/clickmask-stage/state)")
    p.add_argument("--init-from", type=pathlib.Path, default=DEFAULT_INIT, help="initial checkpoint (network, "
                   "recipe; its weights unless --resume) (default: %(default)s)")
    defaults = TrainPlan()
    for f in dataclasses.fields(TrainPlan):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {value})")
        else:
            kind = int if f.name == "max_steps" else type(value)
            p.add_argument(flag, type=kind, default=None, help=f"(default: {value})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainPlan) if getattr(args, f.name) is not None}
    log = lambda text: print(text, flush=True)
    try:
        if args.stage is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            result = stage(pathlib.Path(args.stage) if args.stage else None, args.stage_dir)
            (args.out / STAGE_JSON).write_text(json.dumps(result, indent=1) + "\n")
            print(f"staged {len(result['shards'])} shards in {result['stage_dir']}: {result['objects']} objects, "
                  f"{result['images']} images, {result['bytes'] / 2**20:.1f} MiB, state: {result['state']}; "
                  f"copied {result['copied']} in {result['seconds']} s; problems: {result['problems'] or 'none'}")
        elif args.legacy_child:
            legacy_child(TrainPlan(**changes), args.stage_dir, args.init_from, args.legacy_child)
        elif args.dry_run:
            report = dry_run(args.out, None, args.resume, log=log, init_from=args.init_from, **changes)
            print(markdown(report))
        else:
            report = run_train(TrainPlan(**changes), args.stage_dir, args.out, args.init_from, args.resume, log=log)
            print(markdown(report))
    except (FileNotFoundError, ValueError) as exc:
        print(f"gpu_train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

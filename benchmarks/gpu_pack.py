"""``clickmask bench gpu-pack``: bundle what the GPU run needs into one folder that travels.

The device tool carries the working tree plus the ignored paths named in ``carry``, 64 MiB in
all, and ``../shared`` does not travel. The bundle therefore holds, in a folder of the
checkout that git ignores (``gpu-bundle/`` by default):

- ``src/clickmask/``: the package sources in the installed layout (``clickmask``,
  ``clickmask.client``, ``clickmask.export``, ``clickmask.benchmarks``), so the device runs
  them with ``PYTHONPATH=src`` and nothing installed;
- ``checkpoint.pt``: the checkpoint to measure and train from;
- ``datasets/<SET>/images|masks``: every object of the validation list, and a training subset
  of the training sets, images the held-out split never holds, filled by bytes per set up to
  the budget (never GrabCut or Berkeley);
- ``val-list.txt``, ``manifest.json`` (sources, sizes, counts) and ``run.sh`` (the one line
  the device runs).

The budget is what the 64 MiB leave after the working tree (measured now) and a reserve.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

DEFAULT_OUT = pathlib.Path("gpu-bundle")
DEVICE_LIMIT_BYTES = 64 * 2**20
DEFAULT_RESERVE_MIB = 4.0
DEFAULT_TRAIN_SETS = ("COCO_MVal", "COCO128seg", "WeizmannHorse", "CCP", "MSRC")
# installed package -> folder of the checkout
PACKAGE_DIRS = {"clickmask": "clickmask", "clickmask/client": "client", "clickmask/export": "export",
                "clickmask/benchmarks": "benchmarks"}
SOURCE_SUFFIXES = (".py", ".json", ".txt", ".md")
SKIP_DIRS = {"__pycache__", "checkpoints", "results", "static", "templates_cache"}
RUN_SH = """#!/usr/bin/env bash
# The GPU run from this bundle; on the device tool: bash {name}/run.sh   (carry: ["{name}"])
# Results: $OUT/gpu (results.json, results.md, run.log; burst.pt, burst-metrics.jsonl with --steps ... train).
# The measurements take at most 240 s; the training burst is a separate call: bash {name}/run.sh --steps train
set -u
here="$(cd "$(dirname "$0")" && pwd)"
out="${{OUT:-$here/out}}/gpu"
mkdir -p "$out"
cd "$here"
export PYTHONPATH="$here/src" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec python3 -P -m clickmask.benchmarks.gpu_run --bundle "$here" --out "$out" "$@"
"""


class PackError(RuntimeError):
    """The bundle cannot be made as asked; the message says what to change."""


def _git(repo: pathlib.Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def travelling_tree_bytes(repo: pathlib.Path, exclude: pathlib.Path | None = None) -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    listing = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    total = 0
    exclude = exclude.resolve() if exclude is not None else None
    for name in filter(None, listing.split("\0")):
        path = repo / name
        if exclude is not None and exclude in path.resolve().parents:
            continue
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def copy_sources(repo: pathlib.Path, dest: pathlib.Path) -> int:
    """The package sources in the installed layout under ``dest``; returns the bytes copied."""
    total = 0
    for package, folder in PACKAGE_DIRS.items():
        source = repo / folder
        if not (source / "__init__.py").is_file():
            raise PackError(f"{source} is not the package folder of {package.replace('/', '.')}; run from the "
                            "repository root or pass --repo")
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if not path.is_file() or path.suffix not in SOURCE_SUFFIXES or SKIP_DIRS & set(rel.parts[:-1]):
                continue
            if package == "clickmask" and rel.parts[0] in {"client", "export", "benchmarks"}:
                continue
            target = dest / package / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            total += path.stat().st_size
    return total


def _rank(key: str, seed: int) -> str:
    return hashlib.sha256(f"gpu-pack:{seed}:{key}".encode()).hexdigest()


def _image_files(obj) -> list[pathlib.Path]:
    return [pathlib.Path(obj.image_path), pathlib.Path(obj.mask_path)]


def plan_training_subset(data_root: pathlib.Path, sets: list[str], val_groups: set[str], budget: int,
                         seed: int = 0) -> dict[str, list]:
    """Images of each training set, water-filled by bytes: the set with the fewest bytes so far takes its
    next image (in a seeded order) while it fits. Images of the held-out split are never taken."""
    from clickmask.export.data import discover_objects, split_objects
    from clickmask.export.val_list import DEFAULT_PLAN

    queues: dict[str, list[tuple[str, list[pathlib.Path], int]]] = {}
    for name in sets:
        objects = discover_objects(data_root, name)
        fraction = DEFAULT_PLAN.get(name, (0.05, 0))[0]
        train, _held_out = split_objects(objects, fraction, seed)
        groups: dict[str, list[pathlib.Path]] = {}
        for obj in train:
            if obj.group in val_groups:
                continue
            groups.setdefault(obj.group, [])
            for path in _image_files(obj):
                if path not in groups[obj.group]:
                    groups[obj.group].append(path)
        ordered = sorted(groups.items(), key=lambda kv: _rank(kv[0], seed))
        queues[name] = [(g, files, sum(f.stat().st_size for f in files)) for g, files in ordered]
    chosen: dict[str, list] = {name: [] for name in sets}
    used = {name: 0 for name in sets}
    total = 0
    while True:
        for name in sets:  # an image that does not fit now never will: let smaller ones fill in
            while queues[name] and total + queues[name][0][2] > budget:
                queues[name].pop(0)
        open_sets = [n for n in sets if queues[n]]
        if not open_sets:
            break
        name = min(open_sets, key=lambda n: (used[n], n))
        group, files, size = queues[name].pop(0)
        chosen[name].append((group, files, size))
        used[name] += size
        total += size
    return chosen


def _copy_into(files: list[pathlib.Path], data_root: pathlib.Path, datasets_out: pathlib.Path) -> int:
    total = 0
    for path in files:
        rel = path.resolve().relative_to(data_root.resolve())
        target = datasets_out / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        total += path.stat().st_size
    return total


def _dir_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pack(out: pathlib.Path = DEFAULT_OUT, repo: pathlib.Path = pathlib.Path("."),
         checkpoint: pathlib.Path | None = None, data_root: pathlib.Path = pathlib.Path("../shared/datasets"),
         val_list: pathlib.Path | None = None, train_sets: tuple[str, ...] = DEFAULT_TRAIN_SETS,
         max_mib: float | None = None, train_mib: float | None = None, reserve_mib: float = DEFAULT_RESERVE_MIB,
         seed: int = 0) -> dict[str, Any]:
    """Make the bundle; returns its manifest. ``out`` is emptied first."""
    from clickmask.datasets import EVALUATION_ONLY_SETS, read_object_list, write_object_list

    repo = repo.resolve()
    checkpoint = checkpoint or repo / "export" / "checkpoints" / "clickmask-lite0.pt"
    val_list = val_list or repo / "export" / "validation" / "val-v1.txt"
    forbidden = sorted(set(train_sets) & EVALUATION_ONLY_SETS)
    if forbidden:
        raise PackError(f"{forbidden} are evaluation-only sets: they never go into a training bundle")
    for path, what in ((checkpoint, "checkpoint"), (val_list, "validation list")):
        if not pathlib.Path(path).is_file():
            raise PackError(f"{what} {path} not found")
    if not data_root.is_dir():
        raise PackError(f"dataset root {data_root} not found; pass --data-root (the datasets are in ../shared/datasets)")
    val_objects = read_object_list(val_list, data_root)
    listed_forbidden = sorted({o.dataset for o in val_objects} & EVALUATION_ONLY_SETS)
    if listed_forbidden:
        raise PackError(f"the validation list {val_list} names {listed_forbidden}: test sets never travel")

    out = pathlib.Path(out)
    if out.exists():
        if not (out / "manifest.json").is_file() and any(out.iterdir()):
            raise PackError(f"{out} exists and is not a bundle (no manifest.json): choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tree = travelling_tree_bytes(repo, exclude=out)
    limit = DEVICE_LIMIT_BYTES - tree - int(reserve_mib * 2**20)
    if max_mib is not None:
        limit = min(limit, int(max_mib * 2**20))
    if limit <= 0:
        raise PackError(f"the working tree already sends {tree / 2**20:.1f} MiB of the 64 MiB: nothing is left "
                        "for a bundle; remove large untracked files from the tree")

    source_bytes = copy_sources(repo, out / "src")
    shutil.copyfile(checkpoint, out / "checkpoint.pt")
    datasets_out = out / "datasets"
    val_bytes = 0
    for obj in val_objects:
        val_bytes += _copy_into(_image_files(obj), data_root, datasets_out)
    write_object_list(val_objects, out / "val-list.txt",
                      [f"the objects of {pathlib.Path(val_list).name}, copied into this bundle by clickmask bench gpu-pack"])
    (out / "run.sh").write_text(RUN_SH.format(name=out.name))
    os.chmod(out / "run.sh", 0o755)
    fixed = _dir_bytes(out) + 8192  # + the manifest
    left = limit - fixed
    if train_mib is not None:
        left = min(left, int(train_mib * 2**20))
    if left <= 0:
        raise PackError(f"code, checkpoint and validation objects take {fixed / 2**20:.1f} MiB of a "
                        f"{limit / 2**20:.1f} MiB budget: nothing is left for training images")
    chosen = plan_training_subset(data_root, list(train_sets), {o.group for o in val_objects}, left, seed)
    train_info = []
    for name in train_sets:
        copied = 0
        for _group, files, _size in chosen[name]:
            copied += _copy_into(files, data_root, datasets_out)
        train_info.append({"name": name, "images": len(chosen[name]), "bytes": copied})
    from clickmask.export.data import discover_objects

    val_groups = {o.group for o in val_objects}
    for info in train_info:
        if info["images"]:
            info["objects"] = sum(o.group not in val_groups for o in discover_objects(datasets_out, info["name"]))
    train_info = [i for i in train_info if i["images"]]
    if not train_info:
        raise PackError("no training image fits the budget; raise --max-mib or --train-mib")
    commit = _git(repo, "rev-parse", "HEAD").strip()
    dirty = [line[3:] for line in _git(repo, "status", "--porcelain", "--untracked-files=no").splitlines()]
    manifest = {
        "schema": "clickmask.gpu_bundle/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"commit": commit, "modified_files": dirty, "repo": str(repo)},
        "checkpoint": {"path": "checkpoint.pt", "from": str(checkpoint), "bytes": checkpoint.stat().st_size,
                       "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()},
        "data_root": "datasets", "val_list": "val-list.txt",
        "val_objects": len(val_objects), "val_bytes": val_bytes,
        "train_sets": train_info, "source_bytes": source_bytes,
        "tree_bytes": tree, "limit_bytes": limit,
        "run": f"bash {out.name}/run.sh",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["total_bytes"] = _dir_bytes(out)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if manifest["total_bytes"] > limit:
        raise PackError(f"the bundle came to {manifest['total_bytes']} bytes, over its {limit}-byte budget")
    return manifest


def summary(manifest: dict[str, Any], out: pathlib.Path) -> str:
    mib = 2**20
    sets = ", ".join(f"{s['name']} {s['images']} images / {s.get('objects', '?')} objects "
                     f"({s['bytes'] / mib:.1f} MiB)" for s in manifest["train_sets"])
    return (f"{out}: {manifest['total_bytes'] / mib:.1f} MiB (budget {manifest['limit_bytes'] / mib:.1f} MiB; the "
            f"working tree sends {manifest['tree_bytes'] / mib:.1f} MiB beside it, 64 MiB in all)\n"
            f"  code {manifest['source_bytes'] / mib:.1f} MiB, checkpoint {manifest['checkpoint']['bytes'] / mib:.1f} MiB "
            f"({pathlib.Path(manifest['checkpoint']['from']).name}), validation list {manifest['val_objects']} objects "
            f"({manifest['val_bytes'] / mib:.1f} MiB)\n"
            f"  training subset: {sets}\n"
            f"  device tool: run(command=\"bash {out.name}/run.sh\", carry=[\"{out.name}\"], timeout_s=300)\n"
            f"  training burst (optional, after it): run(command=\"bash {out.name}/run.sh --steps train\", "
            f"carry=[\"{out.name}\"], timeout_s=180)")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                        help="bundle folder, inside the checkout and ignored by git (default: %(default)s)")
    parser.add_argument("--repo", type=pathlib.Path, default=pathlib.Path("."), help="checkout root (default: .)")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None,
                        help="checkpoint to bundle (default: export/checkpoints/clickmask-lite0.pt)")
    parser.add_argument("--data-root", type=pathlib.Path, default=pathlib.Path("../shared/datasets"),
                        help="dataset root (default: %(default)s)")
    parser.add_argument("--val-list", type=pathlib.Path, default=None,
                        help="validation list whose objects are bundled (default: export/validation/val-v1.txt)")
    parser.add_argument("--train-sets", nargs="+", default=list(DEFAULT_TRAIN_SETS),
                        help="training sets to subset (default: %(default)s; never GrabCut or Berkeley)")
    parser.add_argument("--max-mib", type=float, default=None,
                        help="cap on the bundle (default: 64 MiB less the working tree and --reserve-mib)")
    parser.add_argument("--train-mib", type=float, default=None, help="cap on the training images")
    parser.add_argument("--reserve-mib", type=float, default=DEFAULT_RESERVE_MIB,
                        help="room kept free of the 64 MiB for files others add to the tree (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="order in which training images are taken")
    parser.set_defaults(func=_cmd)
    return parser


def _cmd(args) -> int:
    try:
        manifest = pack(args.out, args.repo, args.checkpoint, args.data_root, args.val_list, tuple(args.train_sets),
                        args.max_mib, args.train_mib, args.reserve_mib, args.seed)
    except PackError as exc:
        print(f"clickmask bench gpu-pack: error: {exc}", file=sys.stderr)
        return 2
    print(summary(manifest, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickmask.benchmarks.gpu_pack",
                                     description=__doc__.split("\n\n")[0])
    args = add_arguments(parser).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

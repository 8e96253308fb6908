"""The committed validation list: held-out training-set objects, capped per set.

Checkpoints, inference options and hyper-parameters are chosen on this list (never on GrabCut
or Berkeley), through the same protocol runner as ``clickmask eval``. It is drawn from the
seeded held-out split of every training set (:func:`clickmask.export.data.split_objects`), so
the sets earlier models trained on keep exactly the objects those models never saw; sets never
trained on before (CCP, MSRC) may hold out a larger share. Within a set, objects are taken
round-robin over images in a seeded order, so one photo with many garments cannot fill a cap.

    python -m clickmask.export.val_list --output export/validation/val-v1.txt

Versions: ``v1`` (205 objects of the five shared training sets) stays the default, so that every
earlier figure stays comparable. ``v2`` is v1's objects, read back from the committed file
unchanged, plus a held-out sample of DUTS-TR (converted into ``../data/DUTS-TR`` by
``clickmask data duts``): 100 images of the seeded 5% split of its images, ranked by the seeded
hash of the stem. Training with ``--val-list`` never trains on a listed image, and with the
default ``val_fraction`` (0.05) and seed its split holds the rest of that 5% out too::

    python -m clickmask.export.val_list --version v2 --output export/validation/val-v2.txt
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib

from clickmask.datasets import ObjectRef, read_object_list, write_object_list

from .data import discover_objects, split_objects

# set: (fraction of its images held out, cap on listed objects)
DEFAULT_PLAN = {
    "COCO_MVal": (0.05, 80),
    "COCO128seg": (0.05, 40),
    "WeizmannHorse": (0.05, 40),
    "CCP": (0.08, 80),
    "MSRC": (0.08, 60),
}
# v2 adds these sets to v1's objects
V2_PLAN = {
    "DUTS-TR": (0.05, 100),
}
VALIDATION_DIR = pathlib.Path(__file__).parent / "validation"
LISTS = {"v1": VALIDATION_DIR / "val-v1.txt", "v2": VALIDATION_DIR / "val-v2.txt"}
DEFAULT_LIST = LISTS["v1"]  # the default: the campaign's figures are on it


def _rank(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def build_list(data_root: str | pathlib.Path, plan: dict[str, tuple[float, int]] | None = None,
               seed: int = 0, min_object_fraction: float = 0.01) -> list[ObjectRef]:
    chosen: list[ObjectRef] = []
    for name, (fraction, cap) in (plan or DEFAULT_PLAN).items():
        _, held_out = split_objects(discover_objects(data_root, name, min_object_fraction), fraction, seed)
        by_image: dict[str, list[ObjectRef]] = {}
        for obj in held_out:
            by_image.setdefault(obj.group, []).append(obj)
        queues = [sorted(v, key=lambda o: _rank(o.key, seed)) for _, v in
                  sorted(by_image.items(), key=lambda kv: _rank(kv[0], seed))]
        picked: list[ObjectRef] = []
        while len(picked) < cap and any(queues):
            for queue in queues:
                if queue and len(picked) < cap:
                    picked.append(queue.pop(0))
        chosen += sorted(picked, key=lambda o: o.key)
    return chosen


def build_version(version: str, data_root: str | pathlib.Path, seed: int = 0) -> tuple[list[ObjectRef], list[str]]:
    """The objects of list ``version`` and the header lines that say how they were drawn."""
    if version == "v1":
        return build_list(data_root, seed=seed), [f"plan: {_describe(DEFAULT_PLAN)}"]
    if version == "v2":
        base = read_object_list(LISTS["v1"], data_root)  # v1 exactly as committed
        return base + build_list(data_root, V2_PLAN, seed=seed), [
            f"plan: the {len(base)} objects of val-v1.txt, then {_describe(V2_PLAN)}"]
    raise ValueError(f"unknown validation list version {version!r}; choose one of {sorted(LISTS)}")


def _describe(plan: dict[str, tuple[float, int]]) -> str:
    return ", ".join(f"{k} {f:.0%} of images, cap {c}" for k, (f, c) in plan.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickmask.export.val_list", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/datasets",
                        help="datasets folder; DUTS-TR is found in ../data ($CLICKMASK_CONVERTED_DATA)")
    parser.add_argument("--version", choices=sorted(LISTS), default="v1")
    parser.add_argument("--output", type=pathlib.Path, default=None, help="default: export/validation/val-VERSION.txt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.output = args.output or LISTS[args.version]
    objects, plan = build_version(args.version, args.data_root, args.seed)
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.dataset] = counts.get(obj.dataset, 0) + 1
    version_flag = "" if args.version == "v1" else f" --version {args.version}"
    header = ["clickmask validation list: held-out training-set objects (never trained on, never GrabCut/Berkeley)",
              f"made by: python -m clickmask.export.val_list{version_flag} --seed {args.seed}",
              *plan,
              "objects: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {len(objects)} in all"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_object_list(objects, args.output, header)
    print(f"wrote {len(objects)} objects to {args.output}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

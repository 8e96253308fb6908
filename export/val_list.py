"""The committed validation list: held-out training-set objects, capped per set.

Checkpoints, inference options and hyper-parameters are chosen on this list (never on GrabCut
or Berkeley), through the same protocol runner as ``clickmask eval``. It is drawn from the
seeded held-out split of every training set (:func:`clickmask.export.data.split_objects`), so
the sets earlier models trained on keep exactly the objects those models never saw; sets never
trained on before (CCP, MSRC) may hold out a larger share. Within a set, objects are taken
round-robin over images in a seeded order, so one photo with many garments cannot fill a cap.

    python -m clickmask.export.val_list --output export/validation/val-v1.txt
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib

from clickmask.datasets import ObjectRef, write_object_list

from .data import discover_objects, split_objects

# set: (fraction of its images held out, cap on listed objects)
DEFAULT_PLAN = {
    "COCO_MVal": (0.05, 80),
    "COCO128seg": (0.05, 40),
    "WeizmannHorse": (0.05, 40),
    "CCP": (0.08, 80),
    "MSRC": (0.08, 60),
}
DEFAULT_LIST = pathlib.Path(__file__).parent / "validation" / "val-v1.txt"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickmask.export.val_list", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_LIST)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    objects = build_list(args.data_root, seed=args.seed)
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.dataset] = counts.get(obj.dataset, 0) + 1
    plan = ", ".join(f"{k} {f:.0%} of images, cap {c}" for k, (f, c) in DEFAULT_PLAN.items())
    header = ["clickmask validation list: held-out training-set objects (never trained on, never GrabCut/Berkeley)",
              f"made by: python -m clickmask.export.val_list --seed {args.seed}",
              f"plan: {plan}",
              "objects: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; {len(objects)} in all"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_object_list(objects, args.output, header)
    print(f"wrote {len(objects)} objects to {args.output}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training objects packed into shards that travel to a GPU machine one device call at a time.

A shard is one ``shard-NNN.npz`` (``numpy.savez``, no pickle) of at most ``max_bytes``:

``meta``
    the UTF-8 JSON of :class:`ShardMeta` (format, packing options, and per image its dataset,
    id, stored height and width and its objects as ``[label, key]`` pairs);
``jpeg``, ``jpeg_offsets``
    the images, RGB, re-encoded as JPEG (quality ``quality``) with the longer side at most
    ``max_side`` (``cv2.INTER_AREA``; smaller images keep their size), concatenated;
    image ``i`` is ``jpeg[jpeg_offsets[i]:jpeg_offsets[i + 1]]``;
``png``, ``png_offsets``
    one 8-bit label map per image, same size: 0 background, ``1..254`` the image's objects
    (the ``label`` of each object in ``meta``), ``LABEL_IGNORE`` (255) ignored pixels (the
    dataset's ignore band or unlabelled pixels). Each object's mask is resized on its own
    (bilinear, >= 0.5, as the CPU augmentation warps masks) and written in list order.

Objects come from :mod:`clickmask.datasets` (the one reader), so which pixels are object and
which are ignored is the reader's decision. Every image of an object list given as
``exclude`` (the validation lists) is left out whole, so no held-out object is packed; the
evaluation-only sets are refused by the reader. Images are ordered by a seeded hash of their
key: first the images of ``sets`` (mixed across them), then those of the ``extra`` folders
(mixed). The shared sets hold 2.3 objects an image and DUTS-TR one, so the first shards carry
the most objects per byte: staging only the first shards still trains on every shared set.

``python -m clickmask.export.shards pack --out /work/shards`` packs, ``... info DIR`` lists.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import pathlib
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

from clickmask.datasets import (
    ObjectRef,
    list_objects,
    object_masks,
    read_image,
    read_mask,
)

log = logging.getLogger(__name__)

FORMAT = "clickmask-shards/1"
LABEL_IGNORE = 255
MAX_OBJECTS_PER_IMAGE = 254
DEFAULT_SETS = ("COCO_MVal", "COCO128seg", "WeizmannHorse", "CCP", "MSRC")
DEFAULT_EXTRA = ("/work/data/DUTS-TR",)  # converted folders outside ../shared/datasets, used when present
DEFAULT_MAX_SIDE = 384
DEFAULT_QUALITY = 90
DEFAULT_MAX_BYTES = 46 * 2**20  # a shard + the work tree (~12 MiB) + reserve under the device call's 64 MiB
SHARD_GLOB = "shard-*.npz"
_NPZ_OVERHEAD = 4096  # zip headers of the five members, with room to spare


class ShardError(RuntimeError):
    """A shard cannot be written or read as asked; the message says what to change."""


def default_exclude_lists() -> list[pathlib.Path]:
    """The committed validation lists: ``val-v1.txt`` and any later ``val-v*.txt`` beside it."""
    folder = pathlib.Path(__file__).parent / "validation"
    return sorted(folder.glob("val-v*.txt"))


@dataclasses.dataclass(frozen=True)
class PackedImage:
    """One image of a shard: the encoded bytes and its objects' ``(label, key)``."""

    dataset: str
    sample_id: str
    height: int
    width: int
    objects: tuple[tuple[int, str], ...]
    jpeg: bytes
    png: bytes

    def meta(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "sample_id": self.sample_id, "height": self.height, "width": self.width,
                "objects": [list(o) for o in self.objects]}


# ------------------------------------------------------------------------------ selection
def _rank(text: str, seed: int) -> str:
    return hashlib.sha256(f"shards:{seed}:{text}".encode()).hexdigest()


def group_objects(objects: Iterable[ObjectRef]) -> dict[tuple[str, str], list[ObjectRef]]:
    """Objects by image file (``(dataset, image path)``), in reader order."""
    images: dict[tuple[str, str], list[ObjectRef]] = {}
    for obj in objects:
        images.setdefault((obj.dataset, obj.image_path), []).append(obj)
    return images


def select_images(data_root: str | pathlib.Path | None, sets: Sequence[str], extra: Sequence[str | pathlib.Path] = (),
                  exclude: Sequence[str | pathlib.Path] = (), seed: int = 0,
                  min_object_fraction: float = 0.01) -> tuple[list[list[ObjectRef]], dict[str, Any]]:
    """The images to pack (each a list of its objects), in seeded-hash order, and a summary.

    ``sets`` are folders of ``data_root``; ``extra`` are dataset folders named by their path
    (skipped, and said so, when absent). An image holding any object of an ``exclude`` list,
    or sharing its group (objects of one photo), is left out.
    """
    objects: list[ObjectRef] = []
    found: dict[str, int] = {}
    missing: list[str] = []
    for name in sets:
        listed = list_objects(data_root, name, min_object_fraction=min_object_fraction, training=True)
        objects += listed
        found[name] = len(listed)
    for folder in extra:
        folder = pathlib.Path(folder)
        if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
            missing.append(str(folder))
            log.warning("%s is not a dataset folder (images/, masks/): skipped", folder)
            continue
        listed = list_objects(folder.parent, folder.name, min_object_fraction=min_object_fraction, training=True)
        objects += listed
        found[folder.name] = len(listed)
    held_out = {group for path in exclude if pathlib.Path(path).is_file() for group in list_groups(path)}
    kept = [o for o in objects if o.group not in held_out]
    images = list(group_objects(kept).values())
    later = set(found) - set(sets)  # the extra folders: one object an image, after the multi-object sets
    images.sort(key=lambda objs: (objs[0].dataset in later, _rank(f"{objs[0].dataset}/{objs[0].sample_id}", seed)))
    summary = {"objects_found": found, "objects_excluded": len(objects) - len(kept), "missing_extra": missing,
               "exclude_lists": [str(p) for p in exclude if pathlib.Path(p).is_file()],
               "images": len(images), "objects": len(kept)}
    return images, summary


def list_groups(path: str | pathlib.Path) -> set[str]:
    """The image groups of an object list's keys (``DATASET/<id>[#k]``), resolved by name, so a
    list excludes its images whether or not its sets are present here."""
    keys = [line.strip() for line in pathlib.Path(path).read_text().splitlines()]
    return {ObjectRef(k.partition("/")[0], k.partition("/")[2].partition("#")[0], "", "").group
            for k in keys if k and not k.startswith("#")}


# ------------------------------------------------------------------------------ encoding
def _resized_hw(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize_bool(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if mask.shape == hw:
        return mask
    resized = cv2.resize(mask.astype(np.uint8) * 255, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return resized >= 128


def encode_image_objects(objects: Sequence[ObjectRef], max_side: int, quality: int) -> PackedImage:
    """One image and its objects as a JPEG and a label map PNG (see the module docstring)."""
    if len(objects) > MAX_OBJECTS_PER_IMAGE:
        raise ShardError(f"{objects[0].image_path} has {len(objects)} objects; a label map holds "
                         f"{MAX_OBJECTS_PER_IMAGE}")
    image = read_image(objects[0].image_path)
    height, width = _resized_hw(image.shape[0], image.shape[1], max_side)
    if (height, width) != image.shape[:2]:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    labels = np.zeros((height, width), np.uint8)
    ignore = np.zeros((height, width), bool)
    masks_by_path: dict[str, np.ndarray] = {}
    entries = []
    for label, obj in enumerate(objects, start=1):
        if obj.mask_path not in masks_by_path:
            masks_by_path[obj.mask_path] = read_mask(obj.mask_path)
        gt, obj_ignore = object_masks(obj, masks_by_path[obj.mask_path])
        ignore |= _resize_bool(obj_ignore, (height, width))
        labels[_resize_bool(gt, (height, width))] = label
        entries.append((label, obj.key))
    labels[ignore] = LABEL_IGNORE
    ok_jpeg, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    ok_png, png = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not (ok_jpeg and ok_png):
        raise ShardError(f"OpenCV could not encode {objects[0].image_path}")
    return PackedImage(objects[0].dataset, objects[0].sample_id, height, width, tuple(entries),
                       jpeg.tobytes(), png.tobytes())


# ------------------------------------------------------------------------------ shard files
def write_shard(path: str | pathlib.Path, images: Sequence[PackedImage], options: dict[str, Any]) -> int:
    """Write one shard; returns its size in bytes."""
    meta = {"format": FORMAT, **options, "images": [im.meta() for im in images]}
    arrays = {
        "meta": np.frombuffer(json.dumps(meta, separators=(",", ":")).encode(), np.uint8),
        "jpeg": np.frombuffer(b"".join(im.jpeg for im in images), np.uint8),
        "jpeg_offsets": np.cumsum([0] + [len(im.jpeg) for im in images], dtype=np.int64),
        "png": np.frombuffer(b"".join(im.png for im in images), np.uint8),
        "png_offsets": np.cumsum([0] + [len(im.png) for im in images], dtype=np.int64),
    }
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)
    return path.stat().st_size


def _meta_bytes(image: PackedImage) -> int:
    return len(json.dumps(image.meta(), separators=(",", ":"))) + 1 + 16  # + its two offsets


@dataclasses.dataclass
class PackResult:
    out: str
    shards: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        total = sum(s["bytes"] for s in self.shards)
        objects = sum(s["objects"] for s in self.shards)
        sizes = ", ".join(f"{s['bytes'] / 2**20:.1f}" for s in self.shards)
        return (f"{len(self.shards)} shards in {self.out}: {objects} objects, "
                f"{sum(s['images'] for s in self.shards)} images, {total / 2**20:.1f} MiB ({sizes} MiB), "
                f"{self.seconds:.0f} s")


def pack_shards(out: str | pathlib.Path, data_root: str | pathlib.Path = "../shared/datasets",
                sets: Sequence[str] = DEFAULT_SETS, extra: Sequence[str | pathlib.Path] = DEFAULT_EXTRA,
                exclude: Sequence[str | pathlib.Path] | None = None, max_side: int = DEFAULT_MAX_SIDE,
                quality: int = DEFAULT_QUALITY, max_bytes: int = DEFAULT_MAX_BYTES, seed: int = 0,
                threads: int = 2, limit_images: int | None = None) -> PackResult:
    """Pack the training objects into ``out/shard-NNN.npz`` (see the module docstring).

    Shards fill in image order up to ``max_bytes`` each (file size, zip headers included); an
    existing ``shard-*.npz`` in ``out`` is refused rather than mixed with. ``limit_images``
    packs only the first images (tests). Writes ``out/index.json`` (the result).
    """
    started = time.perf_counter()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob(SHARD_GLOB)):
        raise ShardError(f"{out} already holds shards; pack into an empty folder")
    exclude = default_exclude_lists() if exclude is None else list(exclude)
    images, summary = select_images(data_root, sets, extra, exclude, seed)
    if limit_images is not None:
        images = images[:limit_images]
    options = {"max_side": max_side, "quality": quality, "seed": seed}
    shards: list[dict[str, Any]] = []
    pending: list[PackedImage] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        path = out / f"shard-{len(shards):03d}.npz"
        size = write_shard(path, pending, {**options, "shard": len(shards)})
        if size > max_bytes:
            raise ShardError(f"{path} came out at {size} bytes, over {max_bytes}")
        shards.append({"file": path.name, "bytes": size, "images": len(pending),
                       "objects": sum(len(im.objects) for im in pending)})
        log.info("%s: %d images, %d objects, %.1f MiB", path.name, len(pending), shards[-1]["objects"], size / 2**20)
        pending, pending_bytes = [], 0

    base = 1024 + _NPZ_OVERHEAD + len(json.dumps({"format": FORMAT, **options, "shard": 0}))
    with ThreadPoolExecutor(max(1, threads)) as pool:  # cv2 releases the GIL
        for packed in pool.map(lambda objs: encode_image_objects(objs, max_side, quality), images):
            size = len(packed.jpeg) + len(packed.png) + _meta_bytes(packed)
            if base + size > max_bytes:
                raise ShardError(f"{packed.dataset}/{packed.sample_id} alone is {size} bytes, over {max_bytes}")
            if pending and base + pending_bytes + size > max_bytes:
                flush()
            pending.append(packed)
            pending_bytes += size
    flush()
    result = PackResult(str(out), shards, {**summary, "images_packed": sum(s["images"] for s in shards),
                                           "objects_packed": sum(s["objects"] for s in shards), **options,
                                           "max_bytes": max_bytes}, round(time.perf_counter() - started, 1))
    (out / "index.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return result


# ------------------------------------------------------------------------------ reading
@dataclasses.dataclass(frozen=True)
class ShardImage:
    """One decoded image of a shard: RGB uint8 HxWx3, label map uint8 HxW, objects' (label, key)."""

    image: np.ndarray
    labels: np.ndarray
    objects: tuple[tuple[int, str], ...]
    dataset: str


def read_shard_meta(path: str | pathlib.Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
    if meta.get("format") != FORMAT:
        raise ShardError(f"{path} is {meta.get('format')!r}, not a {FORMAT} shard")
    return meta


def _decode_pair(jpeg: np.ndarray, png: np.ndarray, entry: dict[str, Any], where: str) -> ShardImage:
    bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    labels = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    shape = (entry["height"], entry["width"])
    if bgr is None or labels is None or bgr.shape[:2] != shape or labels.shape != shape:
        raise ShardError(f"{where}: image {entry['dataset']}/{entry['sample_id']} does not decode to {shape}")
    return ShardImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), labels,
                      tuple((int(lab), str(key)) for lab, key in entry["objects"]), entry["dataset"])


def read_shard(path: str | pathlib.Path, threads: int = 4) -> list[ShardImage]:
    """Every image of a shard, decoded (``threads`` OpenCV decoders at once)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if meta.get("format") != FORMAT:
            raise ShardError(f"{path} is {meta.get('format')!r}, not a {FORMAT} shard")
        jpeg, jo, png, po = data["jpeg"], data["jpeg_offsets"], data["png"], data["png_offsets"]
    entries = meta["images"]
    if len(jo) != len(entries) + 1 or len(po) != len(entries) + 1:
        raise ShardError(f"{path}: offsets do not match its {len(entries)} images; the file is damaged")

    def one(i: int) -> ShardImage:
        return _decode_pair(jpeg[jo[i]:jo[i + 1]], png[po[i]:po[i + 1]], entries[i], str(path))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(one, range(len(entries))))


def list_shards(folder: str | pathlib.Path) -> list[pathlib.Path]:
    return sorted(pathlib.Path(folder).glob(SHARD_GLOB))


def shard_keys(folder: str | pathlib.Path) -> list[str]:
    """Every object key in the shards of ``folder`` (the exclusion check reads these)."""
    return [key for path in list_shards(folder) for im in read_shard_meta(path)["images"] for _, key in im["objects"]]


# ------------------------------------------------------------------------------ CLI
def add_pack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="empty folder for shard-NNN.npz (outside the work tree)")
    p.add_argument("--data-root", default="../shared/datasets", help="dataset root (default: %(default)s)")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help="sets under --data-root")
    p.add_argument("--extra", nargs="*", default=list(DEFAULT_EXTRA),
                   help="more dataset folders by path, used when present (default: %(default)s)")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="object lists whose images are never packed (default: export/validation/val-v*.txt)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="longer side, px (default: %(default)s)")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality (default: %(default)s)")
    p.add_argument("--max-mib", type=float, default=DEFAULT_MAX_BYTES / 2**20,
                   help="shard size limit, MiB (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="image order seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="encoding threads (default: %(default)s)")


def run_pack(args: argparse.Namespace) -> PackResult:
    return pack_shards(args.out, args.data_root, args.sets, args.extra, args.exclude, args.max_side, args.quality,
                       int(args.max_mib * 2**20), args.seed, args.threads)


def describe_shards(folder: str | pathlib.Path) -> list[str]:
    """One line a shard of ``folder``: images, objects and MiB."""
    lines = []
    for path in list_shards(folder):
        meta = read_shard_meta(path)
        objects = sum(len(image["objects"]) for image in meta["images"])
        lines.append(f"{path.name}: {len(meta['images'])} images, {objects} objects, "
                     f"{path.stat().st_size / 2**20:.1f} MiB")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickmask.export.shards", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_pack_arguments(sub.add_parser("pack", help="pack the training objects into shards"))
    info = sub.add_parser("info", help="images, objects and bytes of each shard in a folder")
    info.add_argument("folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "pack":
            print(run_pack(args))
        else:
            print("\n".join(describe_shards(args.folder)))
    except (ShardError, FileNotFoundError, ValueError) as exc:
        print(f"shards: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

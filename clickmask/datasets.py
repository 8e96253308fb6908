"""The one reader of dataset folders (the conventions of ``../shared/datasets/README.md``).

A dataset folder is ``DIR/images/<id>.<ext>`` with ``DIR/masks/<id>.png`` (8-bit, one channel,
same height and width as the image). What a mask value means is the folder's *convention*:

``binary``
    one object: 0 background, 128 ignored, any other value object (GrabCut, Berkeley,
    COCO_MVal, WeizmannHorse; the evaluation rule of DESIGN.md for any other folder).
``instances``
    instance ids: 0 background, k = the k-th instance (COCO128seg, CCP); every instance
    covering more than ``min_object_fraction`` of the image is one object.
``instances-ignore255``
    instance ids with 255 = unlabelled, ignored for clicking, IoU and loss (MSRC).

Evaluation, training, training validation, the quality simulation, the latency sweep and the
Locust file all list and read objects through this module, so they cannot disagree about which
pixels are object, which are ignored, or how an image file is decoded. numpy + OpenCV only.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterable, Sequence

import cv2
import numpy as np

from clickmask.client.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IGNORE_VALUE = 128
IGNORE_VALUE_INSTANCES = 255
EVALUATION_ONLY_SETS = frozenset({"GrabCut", "Berkeley"})
CONVENTIONS = ("binary", "instances", "instances-ignore255")
KNOWN_CONVENTIONS = {
    "GrabCut": "binary",
    "Berkeley": "binary",
    "COCO_MVal": "binary",
    "WeizmannHorse": "binary",
    "COCO128seg": "instances",
    "CCP": "instances",
    "MSRC": "instances-ignore255",
}
BACKGROUND_SETS = frozenset({"BSDS500_backgrounds"})  # images only, for copy-paste augmentation
DATASETS_ENV = "CLICKMASK_DATASETS"
CONVERTED_ENV = "CLICKMASK_CONVERTED_DATA"  # sets converted from git repositories (clickmask data), e.g. DUTS-TR


def default_root() -> pathlib.Path:
    """Where the datasets are: ``$CLICKMASK_DATASETS``, else ``../shared/datasets`` from the
    working directory (the repository root of a checkout). Data, not package files."""
    import os  # noqa: PLC0415

    return pathlib.Path(os.environ.get(DATASETS_ENV, "../shared/datasets"))


def converted_root() -> pathlib.Path:
    """Where ``clickmask data`` writes sets converted from git repositories: ``$CLICKMASK_CONVERTED_DATA``,
    else ``../data`` (beside the checkout, outside its work tree)."""
    import os  # noqa: PLC0415

    return pathlib.Path(os.environ.get(CONVERTED_ENV, "../data"))


def dataset_dir(root: pathlib.Path | str, dataset: str) -> pathlib.Path:
    """``root/dataset``; a set that ``root`` lacks is looked up in :func:`converted_root`, so
    ``--data-root ../shared/datasets`` reaches ``../data/DUTS-TR`` by its name."""
    base = pathlib.Path(root) / dataset
    if not base.is_dir() and (converted_root() / dataset).is_dir():
        return converted_root() / dataset
    return base


class DatasetError(InvalidInputError):
    """A dataset folder, file or convention that cannot be read as documented; says the fix."""


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """One object: its image, its mask file, and which mask values are object and ignored."""

    dataset: str
    sample_id: str
    image_path: str
    mask_path: str
    instance_id: int | None = None  # None: binary mask (anything but 0/128 is object)
    ignore_value: int | None = IGNORE_VALUE

    @property
    def key(self) -> str:
        """``DATASET/<id>`` or ``DATASET/<id>#<k>``: the name in validation lists and reports."""
        suffix = "" if self.instance_id is None else f"#{self.instance_id}"
        return f"{self.dataset}/{self.sample_id}{suffix}"

    @property
    def group(self) -> str:
        """Objects of one image share a group; a train/validation split never separates one."""
        if self.dataset == "COCO_MVal":  # ids are "<category><k>_<coco image id>"
            return f"{self.dataset}/{self.sample_id.rsplit('_', 1)[-1]}"
        if self.dataset == "Berkeley":  # "<id>a"/"<id>b" share the image "<id>"
            return f"{self.dataset}/{self.sample_id.rstrip('ab')}"
        return f"{self.dataset}/{self.sample_id}"


def convention_for(dataset: str, convention: str | None = None) -> str:
    """The convention of a folder: the explicit one, the known one by name, else ``binary``."""
    if convention is None:
        return KNOWN_CONVENTIONS.get(dataset, "binary")
    if convention not in CONVENTIONS:
        raise DatasetError(f"unknown mask convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    return convention


def find_image(images_dir: pathlib.Path, sample_id: str) -> pathlib.Path | None:
    """``images/<id>.<ext>``; Berkeley's ``<id>a``/``<id>b`` instances share the image ``<id>``."""
    for stem in (sample_id, sample_id.rstrip("ab")):
        for suffix in IMAGE_SUFFIXES:
            path = images_dir / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def read_image(path: pathlib.Path | str) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grayscale files are expanded to three channels)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InvalidInputError(f"image file {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInputError(f"cannot decode {path} as an image; use JPEG, PNG, BMP or TIFF")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: pathlib.Path | str) -> np.ndarray:
    """Read an 8-bit single-channel mask PNG (HxW uint8)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DatasetError(f"mask file {path} does not exist")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetError(f"cannot read the mask {path}; masks are 8-bit single-channel PNG")
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise DatasetError(f"{path} is {mask.dtype}; masks are 8-bit single-channel PNG")
    return mask


def _check_binary(mask: np.ndarray, path: pathlib.Path, dataset: str) -> None:
    values = np.unique(mask)
    objects = [int(v) for v in values if v not in (0, IGNORE_VALUE)]
    if len(objects) > 1:
        raise DatasetError(
            f"{path} holds {len(objects)} object values {objects[:6]}: that is an instance-id mask, not the "
            f"binary convention of {dataset!r}; pass convention='instances' (CLI: --convention instances)")


def _converted_hint(dataset: str | None) -> str:
    if dataset is None or (converted_root() / dataset).is_dir():
        return ""
    return (f"; a set converted from a git repository is looked up in {converted_root()} "
            f"(${CONVERTED_ENV}): convert it there first, e.g. 'clickmask data duts GITDIR' for DUTS-TR")


def _dataset_dir(root: pathlib.Path | str, dataset: str | None) -> tuple[pathlib.Path, str]:
    base = pathlib.Path(root) if dataset is None else dataset_dir(root, dataset)
    name = base.resolve().name if dataset is None else dataset
    if not (base / "images").is_dir() or not (base / "masks").is_dir():
        raise DatasetError(f"{base} must hold images/<id>.<ext> and masks/<id>.png "
                           f"(see ../shared/datasets/README.md){_converted_hint(dataset)}")
    return base, name


def list_objects(root: pathlib.Path | str, dataset: str | None = None, *, convention: str | None = None,
                 min_object_fraction: float = 0.01, limit: int | None = None,
                 training: bool = False) -> list[ObjectRef]:
    """The objects of a dataset folder (``root`` itself, or ``root/dataset``), sorted by id.

    ``training=True`` refuses the evaluation-only sets. Every mask is opened once to check
    its size against the image (and, for instance sets, to list the instances).
    """
    name = dataset if dataset is not None else pathlib.Path(root).resolve().name
    if training and name in EVALUATION_ONLY_SETS:
        raise DatasetError(f"{name} is an evaluation-only set: never train, tune or select on it")
    base, name = _dataset_dir(root, dataset)
    if name in BACKGROUND_SETS:
        raise DatasetError(f"{name} has no masks; it is a folder of backgrounds (list_backgrounds)")
    conv = convention_for(name, convention)
    images_dir = base / "images"
    objects: list[ObjectRef] = []
    mask_paths = sorted((base / "masks").glob("*.png"))
    if not mask_paths:
        raise DatasetError(f"{base / 'masks'} holds no PNG masks")
    for mask_path in mask_paths:
        image_path = find_image(images_dir, mask_path.stem)
        if image_path is None:
            raise DatasetError(f"no image for the mask {mask_path} in {images_dir} "
                               f"(expected {mask_path.stem}.jpg, .png, ...)")
        mask = read_mask(mask_path)
        if conv == "binary":
            _check_binary(mask, mask_path, name)
            objects.append(ObjectRef(name, mask_path.stem, str(image_path), str(mask_path)))
        else:
            ignore_value = IGNORE_VALUE_INSTANCES if conv == "instances-ignore255" else None
            ids, counts = np.unique(mask, return_counts=True)
            for k, count in zip(ids.tolist(), counts.tolist()):
                if k == 0 or k == ignore_value or count <= min_object_fraction * mask.size:
                    continue
                objects.append(ObjectRef(name, mask_path.stem, str(image_path), str(mask_path), int(k),
                                         ignore_value))
        if limit and len(objects) >= limit:
            return objects[:limit]
    return objects


def list_backgrounds(root: pathlib.Path | str, dataset: str = "BSDS500_backgrounds") -> list[pathlib.Path]:
    """Image files of a folder of backgrounds (``DIR/images/*``), sorted."""
    images_dir = pathlib.Path(root) / dataset / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} does not exist")
    return sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def object_masks(obj: ObjectRef, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gt, ignore)`` boolean maps of ``obj`` in its mask array; gt never covers ignore."""
    if obj.instance_id is None:
        ignore = mask == IGNORE_VALUE
        gt = (mask != 0) & ~ignore
    else:
        ignore = (mask == obj.ignore_value) if obj.ignore_value is not None else np.zeros(mask.shape, bool)
        gt = mask == obj.instance_id
    return gt, ignore


def load_object(obj: ObjectRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image HxWx3 uint8 RGB, gt HxW bool, ignore HxW bool)`` of one object."""
    image = read_image(obj.image_path)
    mask = read_mask(obj.mask_path)
    if mask.shape != image.shape[:2]:
        raise DatasetError(f"{obj.mask_path}: mask {mask.shape[1]}x{mask.shape[0]} and image "
                           f"{image.shape[1]}x{image.shape[0]} differ in size; masks must match their image")
    gt, ignore = object_masks(obj, mask)
    return image, gt, ignore


def parse_key(key: str, root: pathlib.Path | str) -> ObjectRef:
    """The object named ``DATASET/<id>[#k]`` under ``root`` (validation lists store these keys)."""
    dataset, _, rest = key.partition("/")
    sample_id, _, k = rest.partition("#")
    if not dataset or not sample_id:
        raise DatasetError(f"bad object key {key!r}; expected DATASET/<id> or DATASET/<id>#<k>")
    base = dataset_dir(root, dataset)
    image_path = find_image(base / "images", sample_id)
    mask_path = base / "masks" / f"{sample_id}.png"
    if image_path is None or not mask_path.is_file():
        raise DatasetError(f"object {key!r}: no image/mask pair under {base}{_converted_hint(dataset)}")
    conv = convention_for(dataset)
    if k:
        ignore_value = IGNORE_VALUE_INSTANCES if conv == "instances-ignore255" else None
        return ObjectRef(dataset, sample_id, str(image_path), str(mask_path), int(k), ignore_value)
    if conv != "binary":
        raise DatasetError(f"object {key!r}: {dataset} holds instance ids; name the instance as {key}#<k>")
    return ObjectRef(dataset, sample_id, str(image_path), str(mask_path))


def read_object_list(path: pathlib.Path | str, root: pathlib.Path | str) -> list[ObjectRef]:
    """A committed object list: one key per line, ``#`` comments and blank lines skipped."""
    keys = [line.strip() for line in pathlib.Path(path).read_text().splitlines()]
    return [parse_key(k, root) for k in keys if k and not k.startswith("# ")]


def write_object_list(objects: Iterable[ObjectRef], path: pathlib.Path | str, header: Sequence[str] = ()) -> None:
    lines = [f"# {h}" for h in header] + [o.key for o in objects]
    pathlib.Path(path).write_text("\n".join(lines) + "\n")

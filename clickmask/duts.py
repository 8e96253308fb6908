"""``clickmask data duts``: DUTS-TR from its git repository into the project's dataset layout.

DUTS-TR (10,553 salient-object images, the training split of DUTS) lives in the public git
repository ``aviroshkovan/DUTS-TR`` as ``DUTS-TR-Image/<stem>.jpg`` and ``DUTS-TR-Mask/<stem>.png``.
This module reads a fetched copy of it (a bare git directory or a checkout's ``.git``) blob by
blob through ``git --git-dir DIR cat-file --batch``, never over the network, and writes the layout
of ``../shared/datasets/README.md``::

    OUT/images/<stem>.jpg   the JPEG bytes as committed (re-encoded as PNG only if not a JPEG)
    OUT/masks/<stem>.png    8-bit single-channel, 0 background / 255 object (grey >= 128)
    OUT/conversion.json     source commit, thresholds, counts, and every dropped stem by reason

DUTS masks are grey with soft anti-aliased edges, so they are thresholded at 128. A mask may
hold several salient objects as one region; it stays one object (the ``binary`` convention).
Pairs are dropped, and counted, when the image or mask cannot be decoded, when their sizes
differ, when the object covers less than ``min_fraction`` of the image (nothing to click on) or
more than ``max_fraction`` (no background to click on). The output must lie outside any git
work tree: datasets never enter the project's history.

Resumable: a pair whose image and mask files exist is not read again (files are written to a
temporary name and renamed, so an interrupted run leaves no half-written pair), and the stems
dropped by an earlier run of the same commit and thresholds are not decoded again.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import time
import sys
from typing import Iterable, Iterator

import cv2
import numpy as np

from clickmask.datasets import CONVERTED_ENV, DatasetError, converted_root

log = logging.getLogger(__name__)

IMAGE_FOLDER = "DUTS-TR-Image"
MASK_FOLDER = "DUTS-TR-Mask"
MASK_THRESHOLD = 128  # grey >= 128 is object
MIN_OBJECT_FRACTION = 0.01  # the training loader's default for instance objects
MAX_OBJECT_FRACTION = 0.95
DEFAULT_OUTPUT = pathlib.Path("../data/DUTS-TR")  # beside the checkout, outside its work tree
MANIFEST = "conversion.json"
DROP_REASONS = ("unreadable", "size_mismatch", "empty", "too_small", "nearly_whole")
_JPEG_MAGIC = b"\xff\xd8\xff"


class ConversionError(DatasetError):
    """The git directory, its tree or the output folder cannot be used; says the fix."""


@dataclasses.dataclass
class ConversionReport:
    """What one run did. ``dropped`` maps a reason of :data:`DROP_REASONS` to stems."""

    output: pathlib.Path
    commit: str
    pairs: int = 0  # image/mask pairs in the repository
    unpaired: int = 0  # an image without a mask or a mask without an image
    converted: int = 0  # written by this run
    already: int = 0  # found on disk from an earlier run
    dropped: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {r: [] for r in DROP_REASONS})
    multi_region: int = 0  # kept masks with more than one region over min_fraction of the image
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        return self.converted + self.already

    def summary(self) -> str:
        drops = ", ".join(f"{reason} {len(stems)}" for reason, stems in self.dropped.items())
        return (f"{self.pairs} pairs at {self.commit[:12]}: {self.kept} in {self.output} ({self.converted} converted "
                f"now, {self.already} already there); dropped: {drops}; unpaired files {self.unpaired}; "
                f"{self.multi_region} kept masks of this run hold several regions; {self.seconds:.0f} s")


# ----------------------------------------------------------------------------------- git
def _git(git_dir: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise ConversionError("the 'git' program is not installed; install git (apt-get install git)") from None


def resolve_commit(git_dir: pathlib.Path, rev: str = "HEAD") -> str:
    """The commit id of ``rev`` in ``git_dir``, or a :class:`ConversionError` saying what to fetch."""
    if not git_dir.is_dir():
        raise ConversionError(f"{git_dir} does not exist; fetch the repository first, e.g. "
                              "git clone --bare https://github.com/aviroshkovan/DUTS-TR DIR")
    result = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if result.returncode != 0:
        if _git(git_dir, "rev-parse", "--git-dir").returncode != 0:
            raise ConversionError(f"{git_dir} is not a git directory; pass the bare repository (the folder holding "
                                  "HEAD, objects/ and refs/) or a checkout's .git folder")
        raise ConversionError(f"{git_dir} has no commit {rev!r}; pass --rev with a branch, tag or commit it holds")
    return result.stdout.decode().strip()


def list_pairs(git_dir: pathlib.Path, commit: str) -> tuple[dict[str, tuple[str, str]], int]:
    """``{stem: (image blob id, mask blob id)}`` of the commit's tree, and the count of unpaired files."""
    result = _git(git_dir, "ls-tree", "-r", "-z", commit, "--", IMAGE_FOLDER, MASK_FOLDER)
    if result.returncode != 0:
        raise ConversionError(f"cannot list the tree of {commit[:12]} in {git_dir}: {result.stderr.decode().strip()}")
    images: dict[str, str] = {}
    masks: dict[str, str] = {}
    for entry in result.stdout.decode().split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        _, kind, blob = meta.split()
        folder, _, name = path.partition("/")
        if kind != "blob" or "/" in name:
            continue
        stem, suffix = os.path.splitext(name)
        if folder == IMAGE_FOLDER and suffix.lower() in (".jpg", ".jpeg"):
            images[stem] = blob
        elif folder == MASK_FOLDER and suffix.lower() == ".png":
            masks[stem] = blob
    for folder, found in ((IMAGE_FOLDER, images), (MASK_FOLDER, masks)):
        if not found:
            raise ConversionError(f"{git_dir} has no {folder}/ files at {commit[:12]}: is this the DUTS-TR repository "
                                  f"(aviroshkovan/DUTS-TR, {IMAGE_FOLDER}/<stem>.jpg and {MASK_FOLDER}/<stem>.png)?")
    stems = sorted(images.keys() & masks.keys())
    unpaired = len(images.keys() ^ masks.keys())
    return {s: (images[s], masks[s]) for s in stems}, unpaired


class BlobReader:
    """Blobs by id from one long-lived ``git cat-file --batch`` process."""

    def __init__(self, git_dir: pathlib.Path):
        self._proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def read(self, blob: str) -> bytes:
        self._proc.stdin.write(f"{blob}\n".encode())
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) != 3:
            raise ConversionError(f"git cat-file cannot read blob {blob}: {' '.join(header) or 'no answer'}; "
                                  "the repository is incomplete, fetch it again")
        data = self._proc.stdout.read(int(header[2]))
        self._proc.stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        self._proc.stdout.close()

    def __enter__(self) -> "BlobReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------- output
def refuse_inside_work_tree(output: pathlib.Path) -> None:
    """Raise when ``output`` would lie inside a git work tree (datasets never enter a history)."""
    probe = output.resolve()
    while not probe.exists():
        probe = probe.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    result = subprocess.run(["git", "-C", str(probe), "rev-parse", "--show-toplevel"], capture_output=True, env=env,
                            check=False)
    if result.returncode == 0 and result.stdout.strip():
        top = result.stdout.decode().strip()
        raise ConversionError(f"{output} is inside the git work tree {top}; datasets never go into a repository: "
                              f"write it beside the checkout, e.g. --out {DEFAULT_OUTPUT}")


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def binarize(mask: np.ndarray, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """0/255 uint8 of a grey mask: ``mask >= threshold`` is object."""
    return np.where(mask >= threshold, 255, 0).astype(np.uint8)


def _region_count(mask: np.ndarray, min_pixels: float) -> int:
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels))


@dataclasses.dataclass(frozen=True)
class ConvertedPair:
    image: bytes  # the file to write as images/<stem><suffix>
    suffix: str
    mask_png: bytes  # 0/255 single-channel PNG
    regions: int  # connected regions over min_fraction of the image


def convert_pair(image_bytes: bytes, mask_bytes: bytes, min_fraction: float = MIN_OBJECT_FRACTION,
                 max_fraction: float = MAX_OBJECT_FRACTION) -> ConvertedPair | str:
    """One pair converted, or the reason (one of :data:`DROP_REASONS`) it is dropped."""
    image = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
    grey = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or grey is None:
        return "unreadable"
    if image.shape[:2] != grey.shape:
        return "size_mismatch"
    mask = binarize(grey)
    fraction = np.count_nonzero(mask) / mask.size
    if fraction == 0:
        return "empty"
    if fraction < min_fraction:
        return "too_small"
    if fraction > max_fraction:
        return "nearly_whole"
    if image_bytes.startswith(_JPEG_MAGIC):
        out_image, suffix = image_bytes, ".jpg"  # the committed bytes: no second JPEG loss
    else:
        out_image, suffix = cv2.imencode(".png", image)[1].tobytes(), ".png"
    return ConvertedPair(out_image, suffix, cv2.imencode(".png", mask)[1].tobytes(),
                         _region_count(mask, min_fraction * mask.size))


def _done(output: pathlib.Path, stem: str) -> bool:
    return (output / "masks" / f"{stem}.png").is_file() and any(
        (output / "images" / f"{stem}{suffix}").is_file() for suffix in (".jpg", ".png"))


def _earlier_drops(output: pathlib.Path, settings: dict) -> dict[str, str]:
    """``{stem: reason}`` from an earlier run of the same commit and thresholds."""
    try:
        manifest = json.loads((output / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if manifest.get("settings") != settings:
        return {}
    return {stem: reason for reason, stems in manifest.get("dropped", {}).items() for stem in stems}


def _progress(items: Iterable, total: int) -> Iterator:
    try:
        from tqdm import tqdm  # noqa: PLC0415  (the export extra)
    except ImportError:
        yield from items
        return
    yield from tqdm(items, total=total, unit="pair", desc="DUTS-TR", smoothing=0.05)


def convert_duts(git_dir: str | pathlib.Path, output: str | pathlib.Path = DEFAULT_OUTPUT, rev: str = "HEAD",
                 min_fraction: float = MIN_OBJECT_FRACTION, max_fraction: float = MAX_OBJECT_FRACTION,
                 limit: int | None = None, progress: bool = True) -> ConversionReport:
    """Convert DUTS-TR from ``git_dir`` into ``output`` (see the module docstring); resumable.

    ``limit`` converts only the first ``limit`` pairs in stem order (a quick look).
    """
    git_dir, output = pathlib.Path(git_dir), pathlib.Path(output)
    if not 0 <= min_fraction < max_fraction <= 1:
        raise ConversionError(f"need 0 <= min_fraction < max_fraction <= 1, got {min_fraction} and {max_fraction}")
    commit = resolve_commit(git_dir, rev)
    refuse_inside_work_tree(output)
    pairs, unpaired = list_pairs(git_dir, commit)
    if limit is not None:
        pairs = dict(list(pairs.items())[:limit])
    report = ConversionReport(output=output, commit=commit, pairs=len(pairs), unpaired=unpaired)
    settings = {"commit": commit, "threshold": MASK_THRESHOLD, "min_fraction": min_fraction,
                "max_fraction": max_fraction}
    for sub in ("images", "masks"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    earlier = _earlier_drops(output, settings)
    start = time.perf_counter()
    try:
        with BlobReader(git_dir) as blobs:
            items = _progress(pairs.items(), len(pairs)) if progress else pairs.items()
            for stem, (image_blob, mask_blob) in items:
                if _done(output, stem):
                    report.already += 1
                    continue
                if stem in earlier:
                    report.dropped[earlier[stem]].append(stem)
                    continue
                pair = convert_pair(blobs.read(image_blob), blobs.read(mask_blob), min_fraction, max_fraction)
                if isinstance(pair, str):
                    report.dropped[pair].append(stem)
                    continue
                _write_atomic(output / "images" / f"{stem}{pair.suffix}", pair.image)
                _write_atomic(output / "masks" / f"{stem}.png", pair.mask_png)  # last: the pair is complete
                report.converted += 1
                report.multi_region += pair.regions > 1
    finally:
        report.seconds = time.perf_counter() - start
        _write_manifest(report, settings, git_dir)
    return report


def _write_manifest(report: ConversionReport, settings: dict, git_dir: pathlib.Path) -> None:
    manifest = {
        "dataset": "DUTS-TR", "source": "https://github.com/aviroshkovan/DUTS-TR", "git_dir": str(git_dir),
        "terms": "DUTS is distributed for research use; the repository states no license",
        "settings": settings, "pairs": report.pairs, "kept": report.kept, "converted_this_run": report.converted,
        "unpaired_files": report.unpaired, "multi_region_this_run": report.multi_region,
        "seconds_this_run": round(report.seconds, 1),
        "dropped_counts": {reason: len(stems) for reason, stems in report.dropped.items()},
        "dropped": report.dropped,
    }
    _write_atomic(report.output / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


# ----------------------------------------------------------------------------------- CLI
def add_data_parser(subparsers) -> None:
    """``clickmask data duts GITDIR [--out DIR]``."""
    p = subparsers.add_parser("data", help="convert a fetched dataset repository into the dataset layout",
                              description="Convert training data fetched as a git repository into "
                                          "DIR/images/<id>.<ext> + DIR/masks/<id>.png, outside the work tree.")
    sub = p.add_subparsers(dest="data_command", metavar="DATASET")
    sub.required = True
    duts = sub.add_parser("duts", help="DUTS-TR (aviroshkovan/DUTS-TR) -> ../data/DUTS-TR",
                          description=__doc__.split("\n\n")[0])
    duts.add_argument("git_dir", type=pathlib.Path, metavar="GITDIR",
                      help="the fetched repository: a bare git directory or a checkout's .git")
    duts.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUTPUT,
                      help="output folder, outside any git work tree (default: %(default)s)")
    duts.add_argument("--rev", default="HEAD", help="commit, branch or tag to read (default: %(default)s)")
    duts.add_argument("--min-fraction", type=float, default=MIN_OBJECT_FRACTION,
                      help="drop masks whose object covers less of the image (default: %(default)s)")
    duts.add_argument("--max-fraction", type=float, default=MAX_OBJECT_FRACTION,
                      help="drop masks whose object covers more of the image (default: %(default)s)")
    duts.add_argument("--limit", type=int, default=None, help="only the first N pairs (by stem)")
    duts.add_argument("--no-progress", action="store_true", help="no progress bar")
    duts.set_defaults(func=_cmd_duts)
    from clickmask.export.shards import add_pack_arguments  # noqa: PLC0415 - numpy/cv2 only, no torch

    pack = sub.add_parser("pack-shards", help="pack every training object into ~46 MiB shards for a GPU run",
                          description="Pack the training sets (and converted ones such as DUTS-TR) into "
                                      "shard-NNN.npz files that fit a device call beside the work tree; "
                                      "validation-list images are left out. See docs/gpu-train.md.")
    add_pack_arguments(pack)
    pack.set_defaults(func=_cmd_pack)
    info = sub.add_parser("shards-info", help="images, objects and bytes of each shard in a folder")
    info.add_argument("folder", type=pathlib.Path)
    info.set_defaults(func=_cmd_shards_info)


def _cmd_duts(args) -> int:
    report = convert_duts(args.git_dir, args.out, rev=args.rev, min_fraction=args.min_fraction,
                          max_fraction=args.max_fraction, limit=args.limit, progress=not args.no_progress)
    print(report.summary())
    if args.out.resolve().parent == converted_root().resolve():
        found = "by its name from any --data-root"
    else:
        found = f"with {CONVERTED_ENV}={args.out.resolve().parent}"
    print(f"training and validation lists find {args.out.name} {found}; manifest: {args.out / MANIFEST}")
    return 0


def _cmd_pack(args) -> int:
    from clickmask.export.shards import ShardError, run_pack  # noqa: PLC0415

    try:
        print(run_pack(args))
    except (ShardError, ValueError) as exc:
        print(f"clickmask data pack-shards: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_shards_info(args) -> int:
    from clickmask.export.shards import describe_shards  # noqa: PLC0415

    lines = describe_shards(args.folder) if args.folder.is_dir() else []
    if not lines:
        print(f"clickmask data shards-info: error: no shard-NNN.npz in {args.folder}; pack them with "
              "'clickmask data pack-shards --out DIR'", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0

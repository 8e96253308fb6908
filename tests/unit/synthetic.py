"""A tiny synthetic dataset folder (discs on noise) for training tests."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np


def write_disc_dataset(root: pathlib.Path, count: int, height: int, width: int, seed: int) -> pathlib.Path:
    """``root/Synthetic/{images,masks}`` with ``count`` discs; returns ``root``."""
    rng = np.random.default_rng(seed)
    base = root / "Synthetic"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir(parents=True)
    for i in range(count):
        yy, xx = np.mgrid[:height, :width]
        cx, cy = rng.uniform(0.31, 0.69) * width, rng.uniform(0.37, 0.63) * height
        r = rng.uniform(0.15, 0.3) * height
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8) * 255
        image = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
        image[mask > 0] += np.array([150, 60, 20], np.uint8)
        cv2.imwrite(str(base / "images" / f"s{i}.png"), image)
        cv2.imwrite(str(base / "masks" / f"s{i}.png"), mask)
    return root

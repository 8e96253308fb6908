"""Client-side cost of one click: encoding the request and decoding the answer.

Prints a table of median/p95 milliseconds per operation at S = 320 and 448 for 1, 5 and
20 clicks on a 640x480 image, with the ratio of each to the 5 ms budget of the issue.

    python -m clickmask.benchmarks.encoding_speed [--repeat 200]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from clickmask.client.clicks import Click
from clickmask.client.encoding import CropTransform, decode_prob, encode_clicks, encode_image, encode_prev_mask
from clickmask.machine import describe as describe_cpu

BUDGET_MS = 5.0


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm caches
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return float(np.median(samples)), float(np.percentile(samples, 95))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    height, width = 480, 640
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    prob = rng.random((height, width), dtype=np.float32)
    print(f"CPU: {describe_cpu()}")
    print(f"{'operation':<28}{'S':>5}{'clicks':>8}{'median ms':>11}{'p95 ms':>9}{'p95/budget':>12}")
    for size in (320, 448):
        t = CropTransform.full(height, width, size)
        mask_prob = rng.integers(0, 256, (1, size, size), dtype=np.uint8)
        rows = [("encode_image", 0, lambda: encode_image(image, t)),
                ("encode_prev_mask", 0, lambda: encode_prev_mask(prob, t)),
                ("decode_prob", 0, lambda: decode_prob(mask_prob, t, (height, width)))]
        for count in (1, 5, 20):
            clicks = [Click(x=float(x), y=float(y), positive=bool(i % 2))
                      for i, (x, y) in enumerate(zip(rng.uniform(0, width - 1, count), rng.uniform(0, height - 1, count)))]
            rows.append(("encode_clicks", count, lambda c=clicks: encode_clicks(c, t)))
        for name, count, fn in rows:
            median, p95 = _time(fn, args.repeat)
            print(f"{name:<28}{size:>5}{count or '-':>8}{median:>11.3f}{p95:>9.3f}{p95 / BUDGET_MS:>12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

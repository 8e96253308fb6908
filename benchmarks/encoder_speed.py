"""In-process ONNX Runtime latency of the EfficientNet-Lite encoders, side by side, on this CPU.

Builds each network with its ImageNet encoder and a seeded random decoder (latency does not
depend on the weights), exports it to ONNX at S with the usual parity check, then runs every
file on the same synthetic contract requests in rotating blocks (10 Lite0, 10 Lite2, 10 Lite0,
...), so a noisy shared machine slows them alike. Prints the parameters, the ONNX size, median
and p95 milliseconds per request, each median as a ratio to the first network, and the parity
of each export.

    python -m clickmask.benchmarks.encoder_speed [--size 320] [--repeat 60] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
import tempfile
import time

import numpy as np

from clickmask.machine import describe as describe_cpu

DEFAULT_NETWORKS = ("efficientnet-lite0", "efficientnet-lite2")


def _parameters(net) -> tuple[float, float]:
    total = sum(p.numel() for p in net.parameters())
    encoder = sum(p.numel() for p in net.backbone.parameters())
    return total / 1e6, encoder / 1e6


def measure(networks: tuple[str, ...], size: int, repeat: int, block: int, threads: int,
            folder: pathlib.Path) -> list[dict]:
    """One row per network: parameters, ONNX MB, parity and the request times in ms."""
    import torch  # noqa: PLC0415 - 'export' extra

    from clickmask.export.networks import build_network  # noqa: PLC0415
    from clickmask.export.onnx_export import export_onnx, synthetic_inputs  # noqa: PLC0415
    from clickmask.serving import OnnxPredictor  # noqa: PLC0415

    rows = []
    for name in networks:
        torch.manual_seed(0)
        net = build_network(name)
        path = folder / f"{name}.onnx"
        parity = export_onnx(net, path, size=size)
        total, encoder = _parameters(net)
        rows.append({"network": name, "params_m": total, "encoder_params_m": encoder,
                     "onnx_mb": path.stat().st_size / 1e6, "parity": parity,
                     "predictor": OnnxPredictor(path, threads=threads), "ms": []})
    requests = [{k: v[0] for k, v in synthetic_inputs(1, size, seed=i).items()} for i in range(8)]
    for row in rows:  # warm-up
        for inputs in requests[:3]:
            row["predictor"].infer(inputs)
    for first in range(0, repeat, block):
        for row in rows:
            for i in range(first, min(first + block, repeat)):
                start = time.perf_counter()
                row["predictor"].infer(requests[i % len(requests)])
                row["ms"].append((time.perf_counter() - start) * 1000)
    return rows


def format_table(rows: list[dict], size: int, repeat: int, block: int, threads: int) -> str:
    import onnxruntime  # noqa: PLC0415

    base = float(np.median(rows[0]["ms"]))
    lines = [(f"S={size}, {threads} ORT threads (onnxruntime {onnxruntime.__version__}), {repeat} requests each "
              f"in rotating blocks of {block}; CPU: {describe_cpu()}"),
             (f"{'network':<20}{'params M':>9}{'encoder M':>10}{'ONNX MB':>9}{'median ms':>11}{'p95 ms':>9}"
              f"{'vs first':>10}  parity (torch vs ONNX Runtime)")]
    for row in rows:
        median, p95 = float(np.median(row["ms"])), float(np.percentile(row["ms"], 95))
        parity = row["parity"]
        verdict = (f"{'PASS' if parity.passed else 'FAIL'}: max {parity.max_abs_diff_levels} uint8 levels, "
                   f"flips {parity.flip_fraction:.1e}")
        lines.append(f"{row['network']:<20}{row['params_m']:>9.2f}{row['encoder_params_m']:>10.2f}"
                     f"{row['onnx_mb']:>9.1f}{median:>11.1f}{p95:>9.1f}{median / base:>10.2f}  {verdict}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS),
                        help="registry names; ratios are to the first (default: %(default)s)")
    parser.add_argument("--size", type=int, default=320, help="S (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=60, help="requests per network (default: %(default)s)")
    parser.add_argument("--block", type=int, default=10, help="requests per network in a row (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="also write the table, headed by this command, to this file")
    args = parser.parse_args(argv)
    block = max(1, args.block)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(tuple(args.networks), args.size, args.repeat, block, args.threads, pathlib.Path(tmp))
        table = format_table(rows, args.size, args.repeat, block, args.threads)
    table += (f"\n1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
              "(other jobs share these cores: compare the ratios, not the milliseconds)")
    print(table)
    if args.out is not None:
        command = "python -m clickmask.benchmarks.encoder_speed " + shlex.join(argv if argv is not None else sys.argv[1:])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"$ {command.strip()}   # {time.strftime('%Y-%m-%d')}\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

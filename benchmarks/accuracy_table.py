"""Side-by-side NoC table (ours vs RITM's published numbers) and one mIoU plot from eval JSONs.

    python -m clickmask.benchmarks.accuracy_table benchmarks/results/accuracy/GrabCut.json \
        benchmarks/results/accuracy/Berkeley.json --out benchmarks/results/accuracy/summary

writes ``summary.md`` (the table) and ``summary.png`` (mean IoU after k clicks per dataset).
"""
from __future__ import annotations

import argparse
import json
import pathlib

from clickmask.benchmarks.accuracy import plot_curves

#: NoC@90 published in the RITM paper (Sofiiuk et al., 2021, Table 2/3) and SimpleClick (2022).
PUBLISHED_NOC90 = {
    "RITM HRNet18s (COCO+LVIS)": {"GrabCut": 1.68, "Berkeley": 2.60},
    "RITM HRNet18 (COCO+LVIS)": {"GrabCut": 1.54, "Berkeley": 2.26},
    "SimpleClick ViT-B": {"GrabCut": 1.48, "Berkeley": 1.97},
}


def table(summaries: list[dict], model_name: str) -> str:
    datasets = [s["dataset"] for s in summaries]
    lines = [f"| model | {' | '.join(f'{d} NoC@85 | {d} NoC@90 | {d} NoC@95 | {d} fail@90 | {d} mIoU@5' for d in datasets)} |",
             "|---|" + "---|" * (5 * len(datasets))]
    cells = []
    for s in summaries:
        curve = s["miou_curve"]
        cells += [f"{s['noc85']:.2f}", f"**{s['noc90']:.2f}**", f"{s['noc95']:.2f}",
                  f"{s['failures90']}/{s['num_samples']}", f"{curve[min(4, len(curve) - 1)]:.3f}"]
    lines.append(f"| {model_name} | {' | '.join(cells)} |")
    for name, published in PUBLISHED_NOC90.items():
        row = []
        for d in datasets:
            value = published.get(d)
            row += ["-", f"{value:.2f}" if value is not None else "-", "-", "-", "-"]
        lines.append(f"| {name} (published) | {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=pathlib.Path, help="clickmask eval --json outputs")
    parser.add_argument("--model-name", default="clickmask efficientnet-lite0 (shipped)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="writes OUT.md and OUT.png")
    args = parser.parse_args(argv)
    summaries = [json.loads(path.read_text()) for path in args.json]
    text = table(summaries, args.model_name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    plot_curves(summaries, args.out.with_suffix(".png"), title=f"{args.model_name}: mean IoU after k clicks")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
